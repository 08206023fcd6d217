//! Agreement of class scores: top-1 and top-5 over the rows of [N, C] (or [N, C, 1, 1])
//! outputs, counted row by row so no sample is kept.

use std::cmp::Ordering;

use serde::Serialize;

/// Agreement of class-score rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopKReport {
    /// Rows compared (N summed over samples).
    pub rows: u64,
    /// Rows whose candidate arg-max equals the reference's.
    pub top1_matches: u64,
    /// top1_matches / rows.
    pub top1: f64,
    /// Fraction of rows whose reference arg-max is among the candidate's five highest
    /// scores; null when there are fewer than five classes.
    pub top5: Option<f64>,
}

/// Running counts of class-score agreement.
#[derive(Debug, Clone, Copy)]
pub(super) struct TopKTally {
    rows: u64,
    top1_matches: u64,
    /// None once a sample had fewer than five classes.
    top5_matches: Option<u64>,
}

/// Orders scores with NaN below every number.
fn compare_scores(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The arg-max of a row; ties go to the lower index. None for an empty row.
fn top_class(row: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (class, &score) in row.iter().enumerate() {
        if best.is_none_or(|b| compare_scores(score, row[b]) == Ordering::Greater) {
            best = Some(class);
        }
    }
    best
}

/// How many classes rank above `class` in `row` (higher score, or equal score and lower index).
fn rank_of(row: &[f64], class: usize) -> usize {
    let Some(&score) = row.get(class) else { return row.len() };
    row.iter()
        .enumerate()
        .filter(|&(other, &other_score)| match compare_scores(other_score, score) {
            Ordering::Greater => true,
            Ordering::Equal => other < class,
            Ordering::Less => false,
        })
        .count()
}

/// The number of classes when `shape` looks like class scores: [N, C] with C ≥ 2, or [N, C, 1, 1].
pub(super) fn class_count(shape: &[usize]) -> Option<usize> {
    match *shape {
        [_, classes] if classes >= 2 => Some(classes),
        [_, classes, 1, 1] if classes >= 2 => Some(classes),
        _ => None,
    }
}

impl TopKTally {
    pub(super) fn new() -> TopKTally {
        TopKTally { rows: 0, top1_matches: 0, top5_matches: Some(0) }
    }

    /// Counts the rows of one sample with `classes` scores per row.
    pub(super) fn add(&mut self, reference: &[f64], candidate: &[f64], classes: usize) {
        if classes < 5 {
            self.top5_matches = None;
        }
        if classes == 0 {
            return;
        }
        for (reference_row, candidate_row) in reference.chunks_exact(classes).zip(candidate.chunks_exact(classes)) {
            let (Some(reference_top), Some(candidate_top)) = (top_class(reference_row), top_class(candidate_row))
            else {
                continue;
            };
            self.rows += 1;
            if reference_top == candidate_top {
                self.top1_matches += 1;
            }
            if let Some(matches) = self.top5_matches.as_mut() {
                if rank_of(candidate_row, reference_top) < 5 {
                    *matches += 1;
                }
            }
        }
    }

    /// The fractions; None when no row was counted.
    pub(super) fn report(&self) -> Option<TopKReport> {
        if self.rows == 0 {
            return None;
        }
        let rows = self.rows as f64;
        Some(TopKReport {
            rows: self.rows,
            top1_matches: self.top1_matches,
            top1: self.top1_matches as f64 / rows,
            top5: self.top5_matches.map(|matches| matches as f64 / rows),
        })
    }
}
