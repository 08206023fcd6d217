//! `pare optimize`'s engine on DenseNet-121 (910 nodes): build the e-graph,
//! saturate the exact families, extract, export — time per stage, best of 5,
//! against the 1 s target. Needs the fetched models (scripts/fetch_models.py).

use std::path::Path;

use pare::cost::{DeviceProfile, Objective};
use pare::egraph::{optimize, Limits, Options, Timings};
use pare::pipeline;

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/zoo/densenet121/model.onnx");
    if !path.exists() {
        eprintln!("{} is missing: run scripts/fetch_models.py", path.display());
        std::process::exit(2);
    }
    let model = pipeline::load(&path, &[]).expect("DenseNet-121 loads").model;
    let options = Options {
        families: pipeline::PASS_FAMILIES.iter().map(|f| f.to_string()).collect(),
        user_rules: Vec::new(),
        limits: Limits::default(),
        objective: Objective::Latency,
        profile: DeviceProfile::shipped("x86-avx2").expect("shipped profile"),
        budget: 0.0,
        compression: None,
        target_opset: Some(22),
        measured: None,
    };
    let mut best: Option<Timings> = None;
    let total = |t: &Timings| t.build + t.saturate + t.extract + t.export;
    for _ in 0..5 {
        let (optimized, report) = optimize(&model, &options).expect("optimizes");
        assert!(optimized.graph.nodes.node_count() < model.graph.nodes.node_count());
        if best.as_ref().is_none_or(|b| total(&report.timings) < total(b)) {
            best = Some(report.timings);
        }
    }
    let t = best.expect("ran");
    println!(
        "DenseNet-121: build {:.3} s, saturate {:.3} s, extract {:.3} s, export {:.3} s; total {:.3} s (target < 1 s)",
        t.build,
        t.saturate,
        t.extract,
        t.export,
        total(&t)
    );
}
