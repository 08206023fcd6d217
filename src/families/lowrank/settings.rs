//! How the `lowrank` family factorizes: the shares of each layer's MACs its
//! alternatives keep, whether one share is forced, the channel multiple
//! ranks are rounded to, and whether factors are fitted to calibration data.

use serde::Serialize;

/// The MAC shares `--lowrank auto` offers per layer.
pub const AUTO_SHARES: &[f64] = &[0.25, 0.5, 0.75];

/// The `lowrank` family's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LowrankSettings {
    /// Each layer gets one alternative per share (distinct ranks only).
    pub shares: Vec<f64>,
    /// `--lowrank R`: every eligible layer takes the alternative at R.
    pub fixed: Option<f64>,
    /// Ranks are rounded down to a multiple of this (the device profile's
    /// `channel_multiple`).
    pub channel_multiple: usize,
    /// Fit the factors to the calibration data's second moments (else the
    /// weights' truncated SVD).
    pub data_aware: bool,
}

impl LowrankSettings {
    /// `auto` (budgeted) or a share R in (0, 1) (forced).
    pub fn parse(text: &str, channel_multiple: usize, data_aware: bool) -> Result<LowrankSettings, String> {
        let (shares, fixed) = match text.trim() {
            "auto" => (AUTO_SHARES.to_vec(), None),
            share => match share.parse::<f64>() {
                Ok(r) if r > 0.0 && r < 1.0 => (vec![r], Some(r)),
                _ => {
                    return Err(format!(
                        "--lowrank takes auto or the share of each layer's MACs to keep, in (0, 1), not '{text}'"
                    ))
                }
            },
        };
        Ok(LowrankSettings { shares, fixed, channel_multiple, data_aware })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_or_a_share_strictly_between_0_and_1() {
        let auto = LowrankSettings::parse("auto", 8, true).unwrap();
        assert_eq!((auto.shares.as_slice(), auto.fixed), (AUTO_SHARES, None));
        let half = LowrankSettings::parse("0.5", 8, true).unwrap();
        assert_eq!((half.shares, half.fixed), (vec![0.5], Some(0.5)));
        for bad in ["0", "1", "2", "-0.5", "nan", "inf", "half", ""] {
            let error = LowrankSettings::parse(bad, 8, true).unwrap_err();
            assert!(error.contains("(0, 1)"), "{bad}: {error}");
        }
    }
}
