//! How the `lowrank` family factorizes: the shares of each layer's MACs its
//! alternatives keep, whether one share is forced, which Conv forms are
//! offered, the channel multiple ranks are rounded to, and whether factors
//! are fitted to calibration data.

use serde::Serialize;

/// The MAC shares `--lowrank auto` offers per layer.
pub const AUTO_SHARES: &[f64] = &[0.25, 0.5, 0.75];

/// A factorized form of a layer. MatMul and Gemm have only [`Form::Svd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Two factors: a kh×kw Conv Cin→r then a 1x1 Conv r→Cout (MatMul and
    /// Gemm: two matmuls).
    Svd,
    /// A kh×1 Conv Cin→r then a 1×kw Conv r→Cout (kh > 1 and kw > 1 only).
    Spatial,
    /// A 1x1 Conv Cin→r1, a kh×kw Conv r1→r2, a 1x1 Conv r2→Cout (kernels
    /// larger than 1x1 only).
    Tucker2,
}

impl Form {
    /// Its name in the report and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Form::Svd => "svd",
            Form::Spatial => "spatial",
            Form::Tucker2 => "tucker2",
        }
    }
}

/// Which forms a layer is offered (`--lowrank-form`); serialized as the
/// flag's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forms {
    /// Per share, of the forms that apply, the one with the lowest estimated
    /// error (one alternative per share, whichever form it is).
    Best,
    /// Only this form; a layer it does not apply to gets nothing.
    Only(Form),
}

impl Serialize for Forms {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Forms::Best => "best",
            Forms::Only(form) => form.name(),
        })
    }
}

impl Forms {
    /// `best`, `svd`, `spatial` or `tucker2`.
    pub fn parse(text: &str) -> Result<Forms, String> {
        match text.trim() {
            "best" => Ok(Forms::Best),
            "svd" => Ok(Forms::Only(Form::Svd)),
            "spatial" => Ok(Forms::Only(Form::Spatial)),
            "tucker2" => Ok(Forms::Only(Form::Tucker2)),
            _ => Err(format!("--lowrank-form takes best, svd, spatial or tucker2, not '{text}'")),
        }
    }

    /// Whether `form` may be offered.
    pub fn allows(self, form: Form) -> bool {
        self == Forms::Best || self == Forms::Only(form)
    }
}

/// The `lowrank` family's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LowrankSettings {
    /// Each layer gets one alternative per share (distinct ranks only).
    pub shares: Vec<f64>,
    /// `--lowrank R`: every eligible layer takes the alternative at R.
    pub fixed: Option<f64>,
    /// The Conv forms offered.
    pub forms: Forms,
    /// Ranks are rounded down to a multiple of this (the device profile's
    /// `channel_multiple`).
    pub channel_multiple: usize,
    /// Fit the factors to the calibration data's second moments (else the
    /// weights' truncated SVD).
    pub data_aware: bool,
}

impl LowrankSettings {
    /// `auto` (budgeted) or a share R in (0, 1) (forced), and the forms
    /// `form` names (see [`Forms::parse`]).
    pub fn parse(text: &str, form: &str, channel_multiple: usize, data_aware: bool) -> Result<LowrankSettings, String> {
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
        let forms = Forms::parse(form)?;
        Ok(LowrankSettings { shares, fixed, forms, channel_multiple, data_aware })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_or_a_share_strictly_between_0_and_1() {
        let auto = LowrankSettings::parse("auto", "best", 8, true).unwrap();
        assert_eq!((auto.shares.as_slice(), auto.fixed), (AUTO_SHARES, None));
        let half = LowrankSettings::parse("0.5", "best", 8, true).unwrap();
        assert_eq!((half.shares, half.fixed), (vec![0.5], Some(0.5)));
        for bad in ["0", "1", "2", "-0.5", "nan", "inf", "half", ""] {
            let error = LowrankSettings::parse(bad, "best", 8, true).unwrap_err();
            assert!(error.contains("(0, 1)"), "{bad}: {error}");
        }
    }

    #[test]
    fn forms_are_best_or_one_named_form() {
        let parsed = |text| LowrankSettings::parse("auto", text, 8, false).map(|s| s.forms);
        assert_eq!(parsed("best"), Ok(Forms::Best));
        assert_eq!(parsed("svd"), Ok(Forms::Only(Form::Svd)));
        assert_eq!(parsed("spatial"), Ok(Forms::Only(Form::Spatial)));
        assert_eq!(parsed("tucker2"), Ok(Forms::Only(Form::Tucker2)));
        for bad in ["", "tucker", "SVD", "all", "spatial,svd"] {
            let error = parsed(bad).unwrap_err();
            assert!(error.contains("best, svd, spatial or tucker2"), "{bad}: {error}");
        }
        assert!(Forms::Best.allows(Form::Spatial) && Forms::Only(Form::Svd).allows(Form::Svd));
        assert!(!Forms::Only(Form::Tucker2).allows(Form::Svd));
        // The report shows the choice as the flag's text.
        let json = |forms| serde_json::to_value(forms).unwrap();
        assert_eq!(json(Forms::Best), "best");
        assert_eq!(json(Forms::Only(Form::Tucker2)), "tucker2");
    }
}
