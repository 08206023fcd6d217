//! Verification throughput on ResNet-50 (samples/s), measured side by side in
//! one run: the embedded evaluator (tract) against ONNX Runtime with graph
//! optimizations off and on (one intra-op thread each).
//!
//! Run: `PARE_PYTHON=.venv/bin/python cargo bench --bench verify` (after
//! scripts/fetch_models.py).

use std::path::Path;
use std::time::Instant;

use pare::eval::NamedTensor;
use pare::onnxruntime::GraphOptimization;
use pare::runtime::{Runtime, RuntimeChoice};

const SAMPLES: usize = 8;

fn main() {
    let dir = std::env::var_os("PARE_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"));
    let model = dir.join("zoo/resnet50/model.onnx");
    assert!(model.exists(), "{} missing: run scripts/fetch_models.py", model.display());
    let fixed = vec![("gpu_0/data_0".to_string(), vec![1, 3, 224, 224])];
    let loaded = pare::pipeline::load(&model, &fixed).expect("ResNet-50 loads");
    let specs = pare::samples::input_specs(&loaded.model).expect("static input");
    let samples: Vec<Vec<NamedTensor>> =
        pare::samples::random(&specs, SAMPLES, 0).expect("random inputs").map(|s| s.inputs).collect();

    println!("ResNet-50, {SAMPLES} samples of 1x3x224x224, one thread");
    let mut rates = Vec::new();
    for (label, choice) in [
        ("tract", RuntimeChoice::Tract),
        ("ort --ort-opt none", RuntimeChoice::Ort(GraphOptimization::None)),
        ("ort --ort-opt all", RuntimeChoice::Ort(GraphOptimization::All)),
    ] {
        let mut runtime = Runtime::load(&model, choice, &fixed).expect("runtime loads");
        runtime.run(&samples[0]).expect("warm-up run");
        let start = Instant::now();
        for sample in &samples {
            runtime.run(sample).expect("run");
        }
        let rate = SAMPLES as f64 / start.elapsed().as_secs_f64();
        rates.push(rate);
        println!("{label:<20} {rate:>7.2} samples/s  ({:.2}x tract)", rate / rates[0]);
    }
}
