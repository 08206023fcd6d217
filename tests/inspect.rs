//! `pare inspect`: exact parameter and MAC counts on a hand-built model, the
//! published totals of real models (ResNet-50 25.6 M / 4.1 G, VGG-19 143.7 M /
//! 19.6 G), the JSON shape pipelines rely on, and a report on every model.

mod common;

use pare::inspect::{inspect, Report};
use pare::pipeline;

fn report_of(path: &std::path::Path, shapes: &[String]) -> Report {
    let mut args = vec!["inspect".to_string(), path.display().to_string(), "--json".into()];
    for shape in shapes {
        args.push("--input-shape".into());
        args.push(shape.clone());
    }
    let run = common::pare(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}: {}", path.display(), common::stderr(&run));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("inspect --json prints JSON");
    for key in ["nodes", "params", "macs", "weight_bytes", "opset", "layers"] {
        assert!(json.get(key).is_some(), "JSON has '{key}'");
    }
    for layer in json["layers"].as_array().unwrap() {
        for key in ["name", "op", "output_shape", "params", "macs", "weight_bytes"] {
            assert!(layer.get(key).is_some(), "layer JSON has '{key}'");
        }
    }
    let fixed: Vec<_> = shapes.iter().map(|s| pare::ir::infer::parse_input_shape(s).unwrap()).collect();
    let report = inspect(&pipeline::load(path, &fixed).unwrap().model);
    assert_eq!(json["params"].as_u64(), Some(report.params));
    assert_eq!(json["macs"].as_u64(), Some(report.macs));
    report
}

/// Rounds to one decimal in units of `unit`, as the published figures are.
fn rounded(value: u64, unit: f64) -> f64 {
    (value as f64 / unit * 10.0).round() / 10.0
}

#[test]
fn resnet_block_counts_are_exact() {
    // golden/resnet_block_op13: see golden/make_golden.py for its layers.
    let path = common::repo().join("golden/resnet_block_op13/model.onnx");
    let shapes = common::golden_input_shapes(&path);
    assert_eq!(shapes, ["images=2,3,32,32"]);
    let report = report_of(&path, &shapes);
    let fixed: Vec<_> = shapes.iter().map(|s| pare::ir::infer::parse_input_shape(s).unwrap()).collect();
    let loaded = pipeline::load(&path, &fixed).unwrap();
    // Recount from first principles: weight elements and Conv/Gemm MACs.
    let graph = &loaded.model.graph;
    let mut params = 0u64;
    for &id in &graph.initializers {
        params += pare::ir::tensor::element_count(graph.value(id).initializer.as_ref().unwrap()).unwrap();
    }
    assert_eq!(report.params, params);
    let known = |id| graph.value(id).shape.as_ref().unwrap().as_known().unwrap();
    let mut macs = 0i64;
    let mut linear_layers = 0;
    for index in graph.nodes.node_indices() {
        let node = graph.node(index);
        let y = || known(node.output(0).unwrap());
        match node.op_type.as_str() {
            // N·Cout·H·W · Cin/groups·Kh·Kw
            "Conv" => macs += y().iter().product::<i64>() * known(node.input(1).unwrap())[1..].iter().product::<i64>(),
            // M·N · K
            "Gemm" | "MatMul" => macs += y().iter().product::<i64>() * known(node.input(0).unwrap())[1],
            _ => continue,
        }
        linear_layers += 1;
    }
    assert!(linear_layers >= 3, "a conv block and a head");
    assert_eq!(report.layers_with_unknown_macs, 0);
    assert_eq!(report.macs, macs as u64);
}

#[test]
fn resnet50_and_vgg19_match_published_figures() {
    let Some(resnet) = common::fetched("resnet50") else { return };
    let report = report_of(&resnet.path, &resnet.input_shapes);
    assert_eq!(rounded(report.params, 1e6), 25.6, "ResNet-50 params {}", report.params);
    assert_eq!(rounded(report.macs, 1e9), 4.1, "ResNet-50 MACs {}", report.macs);
    let vgg = common::fetched("vgg19").expect("vgg19 fetched with resnet50");
    let report = report_of(&vgg.path, &vgg.input_shapes);
    assert_eq!(rounded(report.params, 1e6), 143.7, "VGG-19 params {}", report.params);
    assert_eq!(rounded(report.macs, 1e9), 19.6, "VGG-19 MACs {}", report.macs);
    assert_eq!(report.opset, Some(9));
}

#[test]
fn every_model_is_inspected_with_all_shapes_known() {
    let mut models: Vec<(std::path::PathBuf, Vec<String>, Option<u64>)> =
        common::golden_models().into_iter().map(|p| (p.clone(), common::golden_input_shapes(&p), None)).collect();
    models.extend(common::fetched_models().into_iter().map(|m| (m.path, m.input_shapes, m.params)));
    for (path, shapes, expected_params) in models {
        let report = report_of(&path, &shapes);
        assert!(report.nodes > 0);
        if let Some(expected) = expected_params {
            assert_eq!(report.params, expected, "{}: params vs the fetch script's count", path.display());
        }
        for layer in &report.layers {
            if ["Conv", "Gemm", "MatMul", "ConvTranspose"].contains(&layer.op.as_str()) {
                assert!(layer.macs.is_some_and(|m| m > 0), "{}: {} has MACs", path.display(), layer.name);
            }
        }
    }
}

#[test]
fn table_lists_every_layer_and_totals() {
    let path = common::repo().join("golden/se_hardsigmoid_op17/model.onnx");
    let run = common::pare(&["inspect", path.to_str().unwrap()]);
    assert!(run.status.success());
    let text = String::from_utf8(run.stdout).unwrap();
    let report = inspect(&pipeline::load(&path, &[]).unwrap().model);
    assert!(text.contains("HardSigmoid"));
    assert!(text.contains(&format!("params       {}", report.params)));
    assert!(text.contains("opset        ai.onnx=17"));
    assert_eq!(text.lines().count(), report.layers.len() + 1 + 7);
}

#[test]
fn a_reader_closing_the_pipe_early_is_no_error() {
    use std::process::{Command, Stdio};
    let path = common::repo().join("golden/inception_concat_op13/model.onnx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["inspect", path.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `| head -0`: gone before pare writes
    let output = child.wait_with_output().unwrap();
    assert!(!common::stderr(&output).contains("panicked"), "{}", common::stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}
