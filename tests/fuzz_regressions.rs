//! Replays every committed fuzz input — the crash reproducers under
//! fuzz/regressions/<target>/ and the minimized corpora under
//! fuzz/corpus/<target>/ — through the entry point its fuzz target calls
//! (pare::fuzz_targets::TARGETS), under the same bounded allocator. Each must
//! come back as Ok or Err: a panic fails the test naming the file, an
//! allocation sized from a lying length field aborts it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use pare::fuzz_targets::{BoundedAllocator, TARGETS};

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

/// The files of a folder, sorted; none when it does not exist.
fn files_in(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_returns_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut panics = Vec::new();
    for (target, entry) in TARGETS {
        let corpus = files_in(&fuzz.join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty or missing");
        for path in corpus.iter().chain(&files_in(&fuzz.join("regressions").join(target))) {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| entry(&bytes))).is_err() {
                panics.push(format!("{target}: {}", path.display()));
            }
        }
    }
    assert!(panics.is_empty(), "these inputs panicked:\n{}", panics.join("\n"));
}
