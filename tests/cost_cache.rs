//! Reproducible output when costs are measured: `--cost-cache FILE` keeps
//! every timing that decides something, so a rerun with the cache measures
//! nothing and writes the same bytes, with one thread or two;
//! `--cost-cache-frozen` makes a timing the cache lacks an error.

mod common;

use std::path::Path;

fn ort_available() -> bool {
    std::env::var_os("PARE_PYTHON").is_some() || std::env::var_os("ORT_DYLIB_PATH").is_some()
}

/// `pare optimize --quantize auto` of the residual block with the cache;
/// returns the exit code, the output's bytes and the report.
fn auto_with_cache(cache: &Path, extra: &[&str]) -> (Option<i32>, Vec<u8>, serde_json::Value, String) {
    let model = common::repo().join("golden/resnet_block_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("auto.onnx"), dir.path().join("report.json"));
    let mut args = vec![
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quantize",
        "auto",
        "--calib-samples",
        "8",
        "--input-shape",
        "images=1,3,32,32",
        "--cost-cache",
        cache.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = common::pare(&args);
    let bytes = std::fs::read(&out).unwrap_or_default();
    let report = std::fs::read_to_string(&report).ok().and_then(|t| serde_json::from_str(&t).ok());
    (run.status.code(), bytes, report.unwrap_or_default(), common::stderr(&run))
}

#[test]
fn a_rerun_with_the_cost_cache_measures_nothing_and_writes_the_same_bytes_with_any_thread_count() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("costs.json");
    let (code, first, report, stderr) = auto_with_cache(&cache, &["--threads", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let summary = &report["cost_cache"];
    let misses = summary["misses"].as_array().unwrap();
    assert!(!misses.is_empty() && summary["hits"] == 0, "a new cache measures: {summary}");
    assert!(cache.is_file());
    let machine = summary["machine"].as_str().unwrap();
    assert!(machine.starts_with("onnxruntime 1."), "{machine}");
    // The timings that decided: every operator configuration and the candidates' rounds.
    let engine = &report["engine"];
    assert!(!engine["operator_timings"].as_array().unwrap().is_empty(), "{engine}");
    assert!(engine["end_to_end"].as_array().unwrap().iter().all(|c| c["rounds"].as_u64().unwrap() >= 15));

    for threads in ["1", "2"] {
        let (code, again, report, stderr) = auto_with_cache(&cache, &["--threads", threads]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(again == first, "--threads {threads}: the rerun with the cache wrote other bytes");
        let summary = &report["cost_cache"];
        assert_eq!(summary["misses"].as_array().unwrap().len(), 0, "{summary}");
        assert_eq!(report["engine"]["measured_configurations"], 0);
        assert!(summary["hits"].as_u64().unwrap() > 0, "{summary}");
    }
    // Frozen, the complete cache is enough.
    let (code, frozen, _, stderr) = auto_with_cache(&cache, &["--cost-cache-frozen"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(frozen == first);
}

#[test]
fn a_frozen_cost_cache_that_lacks_a_timing_is_exit_2_naming_it_with_nothing_written() {
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("empty.json");
    let (code, bytes, _, stderr) = auto_with_cache(&cache, &["--cost-cache-frozen"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("empty.json") && stderr.contains("frozen"), "{stderr}");
    assert!(bytes.is_empty(), "nothing written");
    assert!(!cache.exists(), "a frozen cache is never written");
    // A cache file that is not one is refused too.
    std::fs::write(&cache, b"{ not json").unwrap();
    let (code, _, _, stderr) = auto_with_cache(&cache, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("empty.json") && stderr.contains("not a pare cost cache"), "{stderr}");
}

/// Runs `pare optimize` (exact families) on PP-OCR's direction classifier
/// with the cost cache; returns the written model's HardSwish count and the report.
fn fused_classifier(cache: &Path, extra: &[&str]) -> (usize, serde_json::Value) {
    let cls = common::fetched("ppocr_cls").expect("ppocr_cls fetched");
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("fused.onnx"), dir.path().join("report.json"));
    let mut args = vec!["optimize", cls.path.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(["--input-shape", "x=1,3,48,192", "--cost-cache", cache.to_str().unwrap()]);
    args.extend(["--report", report.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let run = common::pare(&args);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let model = pare::pipeline::load(&out, &[]).unwrap().model;
    let swishes = model.graph.nodes.node_weights().filter(|n| n.op_type == "HardSwish").count();
    (swishes, serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap())
}

/// Whether an activation is fused is the runtime's business: with ONNX
/// Runtime's timings the classifier's 18 spelled-out HardSwish become single
/// nodes; with a cache that says HardSwish is slow, they stay spelled out.
#[test]
fn measured_latencies_decide_whether_an_activation_is_fused() {
    if !ort_available() {
        return;
    }
    if common::fetched("ppocr_cls").is_none() {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "ppocr_cls was not fetched");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("costs.json");
    let (swishes, report) = fused_classifier(&cache, &[]);
    assert_eq!(swishes, 18);
    let timings = report["engine"]["operator_timings"].as_array().unwrap();
    let timed = |op: &str| timings.iter().filter(|t| t["operator"].as_str().unwrap().starts_with(op)).count();
    assert!(timed("HardSwish ") >= 5 && timed("Clip ") >= 5 && timed("Div ") >= 5, "{timings:?}");

    // A runtime without a fast HardSwish kernel: every HardSwish timing 1000 times slower.
    let mut costs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    for machine in costs["machines"].as_object_mut().unwrap().values_mut() {
        for entry in machine["operators"].as_object_mut().unwrap().values_mut() {
            if entry["what"].as_str().unwrap().starts_with("HardSwish ") {
                for bound in ["median", "low", "high"] {
                    entry["seconds"][bound] = (entry["seconds"][bound].as_f64().unwrap() * 1000.0).into();
                }
            }
        }
    }
    std::fs::write(&cache, serde_json::to_string(&costs).unwrap()).unwrap();
    let (swishes, report) = fused_classifier(&cache, &["--cost-cache-frozen"]);
    assert_eq!(swishes, 0, "{}", report["engine"]["fired"]);
    assert_eq!(report["cost_cache"]["misses"].as_array().unwrap().len(), 0);
}
