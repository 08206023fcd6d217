//! Choosing the fastest of whole models timed side by side without following
//! noise. Candidates are taken in order of preference (fewest approximated
//! layers first); a later one replaces the one kept so far only when it is
//! faster beyond the measured noise: the 95% interval of the median of its
//! per-round time ratios to the kept one lies wholly below 1. A comparison
//! whose interval straddles 1 is undecided, which asks the caller for more
//! rounds; once rounds run out, it is a tie, and a tie keeps the earlier
//! (less approximated) candidate. So the same timings always give the same
//! choice, and a choice changes only when the measurement clearly says so.

use serde::Serialize;

use super::cache::Interval;

/// One candidate weighed against the one kept before it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub candidate: usize,
    pub against: usize,
    /// The candidate's time over the kept one's, per round: median and 95% interval.
    pub ratio: Interval,
    pub outcome: Outcome,
}

/// What a comparison found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Faster beyond the noise: it is kept instead.
    Faster,
    /// Slower beyond the noise.
    Slower,
    /// Within the noise: the earlier candidate stays.
    Tie,
}

/// The choice and how it was reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub chosen: usize,
    pub comparisons: Vec<Comparison>,
}

impl Verdict {
    /// Whether some comparison was within the noise (more rounds may decide it).
    pub fn undecided(&self) -> bool {
        self.comparisons.iter().any(|c| c.outcome == Outcome::Tie)
    }
}

/// The clearly fastest of the candidates `preference` lists (indices into
/// `rounds`, most preferred first; at least one), each timed in every round
/// (`rounds[i][r]`; `None` for a candidate that could not run, never chosen).
pub fn clearly_fastest(rounds: &[Option<&[f64]>], preference: &[usize]) -> Verdict {
    let runnable: Vec<usize> =
        preference.iter().copied().filter(|&i| rounds.get(i).is_some_and(Option::is_some)).collect();
    let Some((&first, rest)) = runnable.split_first() else {
        return Verdict { chosen: preference.first().copied().unwrap_or(0), comparisons: Vec::new() };
    };
    let mut kept = first;
    let mut comparisons = Vec::new();
    for &candidate in rest {
        let (Some(times), Some(kept_times)) = (rounds[candidate], rounds[kept]) else { continue };
        let ratios: Vec<f64> = times.iter().zip(kept_times).map(|(t, k)| t / k).collect();
        let Some(ratio) = Interval::of_runs(&ratios) else { continue };
        let outcome = if ratio.high < 1.0 {
            Outcome::Faster
        } else if ratio.low > 1.0 {
            Outcome::Slower
        } else {
            Outcome::Tie
        };
        comparisons.push(Comparison { candidate, against: kept, ratio, outcome });
        if outcome == Outcome::Faster {
            kept = candidate;
        }
    }
    Verdict { chosen: kept, comparisons }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds whose times wobble by ±`noise` around `mean` (a fixed pattern, so the test is exact).
    fn timed(mean: f64, noise: f64, rounds: usize) -> Vec<f64> {
        (0..rounds).map(|r| mean * (1.0 + noise * ((r * 7 % 11) as f64 / 5.0 - 1.0))).collect()
    }

    #[test]
    fn a_candidate_wins_only_when_faster_beyond_the_noise() {
        let float = timed(10.0, 0.01, 30);
        let clearly = timed(8.0, 0.01, 30);
        let barely = timed(9.95, 0.05, 30);
        let rounds = [Some(float.as_slice()), Some(clearly.as_slice()), Some(barely.as_slice())];
        let verdict = clearly_fastest(&rounds, &[0, 1, 2]);
        assert_eq!(verdict.chosen, 1);
        assert_eq!(verdict.comparisons[0].outcome, Outcome::Faster);
        assert_eq!(verdict.comparisons[1].outcome, Outcome::Slower);
        // Within the noise the less approximated candidate stays, and more rounds are asked for.
        let verdict = clearly_fastest(&[Some(float.as_slice()), Some(barely.as_slice())], &[0, 1]);
        assert_eq!(verdict.chosen, 0);
        assert!(verdict.undecided());
    }

    #[test]
    fn a_candidate_that_could_not_run_is_never_chosen() {
        let float = timed(10.0, 0.01, 20);
        let verdict = clearly_fastest(&[Some(float.as_slice()), None], &[1, 0]);
        assert_eq!(verdict.chosen, 0);
        assert!(verdict.comparisons.is_empty());
    }
}
