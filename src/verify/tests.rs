//! Unit tests of the verification metrics and policy, with exact expected numbers.

use super::format::{number, significant};
use super::*;

fn view<'a>(values: &'a [f64], shape: &'a [usize]) -> TensorView<'a> {
    TensorView::new(values, shape)
}

fn compare_one(reference: &[f64], candidate: &[f64], shape: &[usize], tolerance: &Tolerance) -> OutputReport {
    compare_output("out", "float32", [(view(reference, shape), view(candidate, shape))], tolerance)
        .expect("valid comparison")
}

/// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG).
fn pseudo_random(count: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn identical_tensors_have_zero_error_and_pass() {
    let values = [1.0, -2.0, 3.5, 0.0];
    let report = compare_one(&values, &values, &[4], &Tolerance::default());
    assert_eq!(report.max_abs, 0.0);
    assert_eq!(report.rel_l2, 0.0);
    assert_eq!(report.cosine, 1.0);
    assert_eq!(report.sqnr_db, f64::INFINITY);
    assert_eq!(report.allclose.as_ref().map(|a| a.violations), Some(0));
    assert!(report.passed, "{:?}", report.failures);
    assert_eq!(report.criteria, vec!["allclose rtol 1e-4 atol 1e-5".to_string()]);
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["sqnr_db"], "inf");
    assert_eq!(json["rel_l2"], 0.0);
}

#[test]
fn scaled_tensor_has_exact_rel_l2_cosine_and_sqnr() {
    let reference = [1.0, -2.0, 3.0, 4.0];
    let candidate: Vec<f64> = reference.iter().map(|v| 1.5 * v).collect();
    let report = compare_one(&reference, &candidate, &[2, 2], &Tolerance::default());
    assert_eq!(report.rel_l2, 0.5);
    assert_eq!(report.cosine, 1.0);
    assert!((report.sqnr_db - 20.0 * 2f64.log10()).abs() < 1e-12);
    assert!((report.sqnr_db - 6.0206).abs() < 1e-4);
    assert_eq!(report.max_abs, 2.0);
    assert_eq!(report.max_abs_at, Some(Location { sample: 0, index: vec![1, 1] }));
    assert_eq!(report.allclose.as_ref().map(|a| (a.violations, a.fraction)), Some((4, 1.0)));
    assert!(!report.passed);
}

#[test]
fn zero_reference_rules() {
    let zeros = [0.0; 3];
    let same = compare_one(&zeros, &zeros, &[3], &Tolerance::default());
    assert_eq!((same.rel_l2, same.cosine, same.sqnr_db), (0.0, 1.0, f64::INFINITY));
    let other = compare_one(&zeros, &[0.0, 1.0, 0.0], &[3], &Tolerance::default());
    assert_eq!((other.rel_l2, other.cosine, other.sqnr_db), (f64::INFINITY, 0.0, f64::NEG_INFINITY));
    assert_eq!(serde_json::to_value(&other).expect("serializes")["sqnr_db"], "-inf");
}

#[test]
fn top1_and_top5_agreement() {
    #[rustfmt::skip]
    let reference = [
        0.9, 0.1, 0.0, 0.0, 0.0, 0.0, // top-1 class 0
        0.0, 0.1, 0.9, 0.2, 0.3, 0.4, // top-1 class 2
        0.9, 0.0, 0.0, 0.0, 0.0, 0.0, // top-1 class 0
    ];
    #[rustfmt::skip]
    let candidate = [
        0.8, 0.2, 0.0, 0.0, 0.0, 0.0, // top-1 class 0: agrees
        0.0, 0.9, 0.5, 0.8, 0.1, 0.7, // top-1 class 1; class 2 ranks 4th (after 1, 3, 5): top-5 hit
        0.1, 0.9, 0.8, 0.7, 0.6, 0.5, // class 0 ranks 6th: top-5 miss
    ];
    let report = compare_one(&reference, &candidate, &[3, 6], &Tolerance::default());
    let top_k = report.top_k.expect("class scores");
    assert_eq!((top_k.rows, top_k.top1_matches), (3, 1));
    assert_eq!(top_k.top1, 1.0 / 3.0);
    assert_eq!(top_k.top5, Some(2.0 / 3.0));

    // Ties go to the lower index: [1, 1, 0, 0, 0] has top-1 class 0, and class 4 tied with
    // classes 2 and 3 ranks 5th, inside the top five.
    let tied =
        compare_one(&[0.0, 0.0, 0.0, 0.0, 1.0], &[1.0, 1.0, 0.0, 0.0, 0.0], &[1, 5, 1, 1], &Tolerance::default());
    let top_k = tied.top_k.expect("[N, C, 1, 1] is class scores");
    assert_eq!((top_k.top1, top_k.top5), (0.0, Some(1.0)));

    let few_classes = compare_one(&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0], &[1, 3], &Tolerance::default());
    assert_eq!(few_classes.top_k.map(|t| (t.top1, t.top5)), Some((1.0, None)));
    assert!(compare_one(&[1.0, 0.0], &[1.0, 0.0], &[2], &Tolerance::default()).top_k.is_none());
    assert!(compare_one(&[1.0, 0.0], &[1.0, 0.0], &[2, 1], &Tolerance::default()).top_k.is_none());
}

#[test]
fn allclose_nan_and_infinity_rules() {
    let thresholds = AllcloseThresholds { rtol: DEFAULT_RTOL, atol: DEFAULT_ATOL };
    assert!(thresholds.is_close(f64::NAN, f64::NAN));
    assert!(!thresholds.is_close(f64::NAN, 1.0));
    assert!(!thresholds.is_close(1.0, f64::NAN));
    assert!(thresholds.is_close(f64::INFINITY, f64::INFINITY));
    assert!(thresholds.is_close(f64::NEG_INFINITY, f64::NEG_INFINITY));
    assert!(!thresholds.is_close(f64::INFINITY, f64::NEG_INFINITY));
    assert!(!thresholds.is_close(f64::INFINITY, f64::MAX));
    assert!(!thresholds.is_close(f64::MAX, f64::INFINITY));

    let reference = [f64::NAN, f64::INFINITY, 1.0, 2.0];
    let agreeing = compare_one(&reference, &reference, &[4], &Tolerance::default());
    assert!(agreeing.passed);
    assert_eq!((agreeing.max_abs, agreeing.nonfinite_mismatches, agreeing.sqnr_db), (0.0, 0, f64::INFINITY));

    let disagreeing = compare_one(&reference, &[1.0, f64::INFINITY, f64::NAN, 2.0], &[4], &Tolerance::default());
    assert_eq!(disagreeing.nonfinite_mismatches, 2);
    assert_eq!(disagreeing.allclose.as_ref().map(|a| a.violations), Some(2));
    assert_eq!((disagreeing.max_abs, disagreeing.rel_l2), (f64::INFINITY, f64::INFINITY));
    assert_eq!(disagreeing.max_abs_at, Some(Location { sample: 0, index: vec![0] }));
    assert_eq!(disagreeing.cosine, 1.0, "cosine over the finite pairs [2] vs [2]");
    let json = serde_json::to_value(&disagreeing).expect("serializes");
    assert_eq!((json["max_abs"].clone(), json["sqnr_db"].clone()), ("inf".into(), "-inf".into()));
}

#[test]
fn atol_only_takes_numpy_rtol() {
    let tolerance = Tolerance { atol: Some(0.1), ..Tolerance::default() };
    // Bound at r = 100: 0.1 + 1e-5 · 100 = 0.101.
    let inside = compare_one(&[100.0], &[100.1005], &[1], &tolerance);
    assert!(inside.passed, "{:?}", inside.failures);
    assert_eq!(inside.allclose.as_ref().map(|a| (a.rtol, a.atol)), Some((NUMPY_RTOL, 0.1)));
    assert!(!compare_one(&[100.0], &[100.102], &[1], &tolerance).passed);
    let rtol_only = Tolerance { rtol: Some(1e-3), ..Tolerance::default() };
    let report = compare_one(&[1.0], &[1.0], &[1], &rtol_only);
    assert_eq!(report.allclose.map(|a| (a.rtol, a.atol)), Some((1e-3, NUMPY_ATOL)));
}

#[test]
fn several_samples_aggregate_like_their_concatenation() {
    let classes = 7;
    let reference = pseudo_random(5 * classes, 1);
    let noise = pseudo_random(5 * classes, 2);
    let candidate: Vec<f64> = reference.iter().zip(&noise).map(|(r, n)| r + 0.3 * n).collect();
    let split = 2 * classes;
    let tolerance = Tolerance { rtol: Some(0.05), atol: Some(0.05), ..Tolerance::default() };
    let samples = [
        (view(&reference[..split], &[2, 7]), view(&candidate[..split], &[2, 7])),
        (view(&reference[split..], &[3, 7]), view(&candidate[split..], &[3, 7])),
    ];
    let aggregated = compare_output("logits", "float32", samples, &tolerance).expect("valid");
    let whole = compare_one(&reference, &candidate, &[5, 7], &tolerance);
    assert_eq!(aggregated.samples, 2);
    assert_eq!(aggregated.shape, vec![None, Some(7)]);
    assert_eq!(aggregated.elements, whole.elements);
    assert_eq!(aggregated.max_abs, whole.max_abs);
    assert_eq!(aggregated.rel_l2, whole.rel_l2);
    assert_eq!(aggregated.cosine, whole.cosine);
    assert_eq!(aggregated.sqnr_db, whole.sqnr_db);
    assert_eq!(aggregated.allclose, whole.allclose);
    assert_eq!(aggregated.top_k, whole.top_k);
    assert!(whole.allclose.as_ref().is_some_and(|a| a.violations > 0));
    // The same element, located per sample and in the concatenation.
    let (sample_at, whole_at) = (aggregated.max_abs_at.expect("located"), whole.max_abs_at.expect("located"));
    let sample_offset = if sample_at.sample == 0 { 0 } else { 2 };
    assert_eq!(vec![sample_at.index[0] + sample_offset, sample_at.index[1]], whole_at.index);
}

#[test]
fn bad_data_is_an_error_naming_the_output() {
    let tolerance = Tolerance::default();
    let mut stats = OutputStats::new("logits", "float32", &tolerance).expect("valid tolerance");
    let error = stats.add(view(&[1.0, 2.0], &[1, 2]), view(&[1.0, 2.0], &[2, 1])).expect_err("shape mismatch");
    assert_eq!(
        error,
        VerifyError::ShapeMismatch { output: "logits".into(), sample: 0, reference: vec![1, 2], candidate: vec![2, 1] }
    );
    assert!(error.to_string().contains("\"logits\""), "{error}");
    let error = stats.add(view(&[1.0, 2.0], &[3]), view(&[1.0, 2.0], &[3])).expect_err("short data");
    assert!(matches!(error, VerifyError::ValueCount { side: Side::Reference, expected: 3, actual: 2, .. }));
    let error = stats.add(view(&[], &[usize::MAX, 2]), view(&[], &[usize::MAX, 2])).expect_err("overflow");
    assert!(matches!(error, VerifyError::ShapeOverflow { .. }));
    stats.add(view(&[1.0, 2.0], &[2]), view(&[1.0, 2.0], &[2])).expect("valid sample");
    let error = stats.add(view(&[1.0, 2.0], &[1, 2]), view(&[1.0, 2.0], &[1, 2])).expect_err("rank change");
    assert!(matches!(error, VerifyError::RankChanged { sample: 1, previous: 1, current: 2, .. }));
    assert_eq!(stats.report().samples, 1, "failed samples add nothing");
}

#[test]
fn failure_message_names_output_and_index() {
    let reference = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let candidate = [1.0, 2.0, 3.0, 4.31, 5.0, 6.1];
    let report = compare_output(
        "logits",
        "float32",
        [(view(&reference, &[2, 3]), view(&candidate, &[2, 3]))],
        &Tolerance::default(),
    )
    .expect("valid");
    assert_eq!(
        report.failures,
        vec!["logits: 2 of 6 elements outside rtol 1e-4 atol 1e-5 (max abs 0.31 at index [1, 0])"]
    );
    let two_samples = [
        (view(&reference, &[2, 3]), view(&reference, &[2, 3])),
        (view(&reference, &[2, 3]), view(&candidate, &[2, 3])),
    ];
    let tolerance = Tolerance { max_rel_l2: Some(0.01), ..Tolerance::default() };
    let report = compare_output("logits", "float32", two_samples, &tolerance).expect("valid");
    assert_eq!(report.allclose, None, "rel L2 alone does not count allclose");
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].starts_with("logits: rel L2 0.0"), "{}", report.failures[0]);
    assert!(
        report.failures[0].ends_with("above 0.01 (max abs 0.31 at sample 1 index [1, 0])"),
        "{}",
        report.failures[0]
    );
}

#[test]
fn min_top1_applies_to_class_scores_and_others_fall_back_to_default_allclose() {
    let tolerance = Tolerance { min_top1: Some(0.9), ..Tolerance::default() };
    let scores = compare_one(&[0.9, 0.1, 0.2, 0.8], &[0.5, 0.6, 0.1, 0.9], &[2, 2], &tolerance);
    assert_eq!(scores.criteria, vec!["top-1 >= 0.9".to_string()]);
    assert_eq!(scores.failures, vec!["out: top-1 agreement 0.5 below 0.9 (1 of 2 rows)".to_string()]);
    let features = compare_one(&[1.0, 2.0], &[1.0, 2.5], &[2], &tolerance);
    assert_eq!(features.criteria, vec!["allclose rtol 1e-4 atol 1e-5".to_string()]);
    assert!(!features.passed);
    let both = Tolerance { rtol: Some(1.0), ..tolerance };
    let report = compare_one(&[0.9, 0.1], &[0.8, 0.2], &[1, 2], &both);
    assert_eq!(report.criteria.len(), 2);
    assert!(report.passed);
}

#[test]
fn invalid_tolerances_are_refused() {
    for tolerance in [
        Tolerance { rtol: Some(-1.0), ..Tolerance::default() },
        Tolerance { atol: Some(f64::NAN), ..Tolerance::default() },
        Tolerance { max_rel_l2: Some(f64::INFINITY), ..Tolerance::default() },
        Tolerance { min_top1: Some(1.5), ..Tolerance::default() },
    ] {
        assert!(matches!(OutputStats::new("x", "float32", &tolerance), Err(VerifyError::InvalidTolerance { .. })));
    }
}

#[test]
fn report_verdict_json_and_table() {
    let tolerance = Tolerance::default();
    let good = compare_one(&[1.0, 2.0], &[1.0, 2.0], &[1, 2], &tolerance);
    let mut bad = compare_one(&[1.0, 2.0], &[1.0, 3.0], &[2], &tolerance);
    bad.name = "boxes".into();
    bad.failures = bad.failures.iter().map(|f| f.replacen("out", "boxes", 1)).collect();
    let report = Report::new(tolerance, vec![good, bad]);
    assert!(!report.passed);
    assert_eq!(report.samples, 1);
    assert_eq!(report.failed_outputs().collect::<Vec<_>>(), vec!["boxes"]);
    let json = serde_json::to_value(&report).expect("serializes");
    let text = serde_json::to_string(&report).expect("serializes");
    assert!(text.starts_with(r#"{"passed":false,"samples":1,"tolerance":{"rtol":null,"atol":null,"#), "{text}");
    assert_eq!(json["failures"][0], report.failures[0]);
    assert_eq!(json["tolerance"]["rtol"], serde_json::Value::Null);
    assert_eq!(json["outputs"][0]["top_k"]["top1"], 1.0);
    assert_eq!(json["outputs"][1]["max_abs_at"]["index"], serde_json::json!([1]));
    let text = table(&report);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "output  shape   max abs  rel L2    cosine  SQNR dB  top-1  top-5  verdict");
    assert_eq!(lines[1], "out     [1, 2]        0       0         1      inf   100%      -     pass");
    assert_eq!(lines[2], "boxes   [2]           1  0.4472  0.989949     6.99      -      -     FAIL");
    assert_eq!(lines[3], "  boxes: 1 of 2 elements outside rtol 1e-4 atol 1e-5 (max abs 1 at index [1])");
    assert_eq!(lines[4], "FAIL: 1 of 2 outputs failed over 1 samples (allclose rtol 1e-4 atol 1e-5)");

    let empty = Report::new(tolerance, Vec::new());
    assert!(!empty.passed);
    assert_eq!(empty.failures, vec!["no outputs were compared".to_string()]);
    let unfed = OutputStats::new("y", "float32", &tolerance).expect("valid").report();
    assert_eq!(unfed.failures, vec!["y: no samples were compared".to_string()]);
}

#[test]
fn numbers_are_short() {
    assert_eq!(number(1e-4), "1e-4");
    assert_eq!(number(1e-5), "1e-5");
    assert_eq!(number(0.31), "0.31");
    assert_eq!(number(6.020599913279624), "6.021");
    assert_eq!(number(12345.6), "12346");
    assert_eq!(number(123456.0), "1.235e5");
    assert_eq!(number(-0.5), "-0.5");
    assert_eq!(number(0.0), "0");
    assert_eq!(significant(0.9999999, 6), "1");
    assert_eq!(number(f64::NAN), "nan");
}

/// A trained detector's sigmoid on random inputs reads ~1e-7: rel L2 of such
/// values is noise, so the output is reported as too small, not judged.
#[test]
fn an_output_too_small_to_compare_is_reported_not_judged() {
    let tiny_reference = [1e-7, 3e-8, 2e-7, 5e-8];
    let tiny_candidate = [2e-7, 1e-8, 1e-7, 9e-8];
    let tolerance = Tolerance { max_rel_l2: Some(0.1), ..Tolerance::default() };
    let tiny =
        compare_output("maps", "float32", [(view(&tiny_reference, &[4]), view(&tiny_candidate, &[4]))], &tolerance)
            .unwrap();
    assert!(tiny.too_small && tiny.passed && tiny.failures.is_empty(), "{tiny:?}");
    assert!(tiny.criteria[0].starts_with("none: every reference value is below 1e-5"), "{:?}", tiny.criteria);
    let normal =
        compare_output("logits", "float32", [(view(&[1.0, 2.0], &[2]), view(&[1.0, 2.5], &[2]))], &tolerance).unwrap();
    assert!(!normal.too_small && !normal.passed);
    // One judged output passing: the report passes and warns of the other.
    let passing =
        compare_output("logits", "float32", [(view(&[1.0, 2.0], &[2]), view(&[1.0, 2.0], &[2]))], &tolerance).unwrap();
    let report = Report::new(tolerance, vec![tiny.clone(), passing]);
    assert!(report.passed);
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("'maps' is too small to compare"), "{:?}", report.warnings);
    // Only outputs too small: nothing was checked, which is no pass.
    let report = Report::new(tolerance, vec![tiny]);
    assert!(!report.passed);
    assert!(report.failures[0].contains("every output was too small"), "{:?}", report.failures);
}
