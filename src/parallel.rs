//! Independent pieces of work run side by side, one thread per core. ONNX
//! Runtime sessions run on one intra-op thread each (repeatable timings), so
//! pare gets its parallelism by running several sessions at once: the
//! single-layer variants of sensitivity measurement, the float, fused-kernel
//! and reference-semantics runs of the integer-kernel check (and its layers
//! run alone) and of `--quantize auto`'s candidate check. Calibration runs its samples through
//! the embedded evaluator the same way, a round of one per core at a time.

/// The threads `--threads` allows (0: one per core).
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Limits the work run side by side to `threads` at once (0: one per core).
/// Results never depend on it: only how long a run takes does.
pub fn set_threads(threads: usize) {
    THREADS.store(threads, std::sync::atomic::Ordering::Relaxed);
}

/// How many pieces of work run side by side: `--threads`, else one per core.
pub fn threads() -> usize {
    match THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads => threads,
    }
}

/// `work` applied to every item, the items shared out among [`threads`]
/// threads but at most `at_most` (work that holds a whole model in memory
/// bounds it); results in item order. A panic in `work` is re-raised.
pub fn side_by_side<T: Sync, R: Send>(items: &[T], at_most: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = threads().min(at_most).min(items.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(index) else { return done };
                        done.push((index, work(item)));
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_worked_once_and_results_keep_item_order() {
        let items: Vec<u64> = (0..97).collect();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let squares = side_by_side(&items, usize::MAX, |&x| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            x * x
        });
        assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), items.len());
        assert_eq!(side_by_side(&items, 1, |&x| x + 1), items.iter().map(|x| x + 1).collect::<Vec<_>>());
        assert!(side_by_side(&[] as &[u64], usize::MAX, |&x| x).is_empty());
    }
}
