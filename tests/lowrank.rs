//! `pare optimize --lowrank` end to end: a forced share factorizes every
//! eligible layer at the rank that keeps it (rounded to the device's channel
//! multiple) and the model still verifies; `--lowrank auto` on a trained
//! model factorizes only where the measured output error fits the budget
//! and the result was timed against float; bad values are exit 2.

mod common;

use std::path::{Path, PathBuf};

fn residual_block() -> PathBuf {
    common::repo().join("golden/resnet_block_op13/model.onnx")
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn count(model: &Path, op: &str) -> usize {
    let model = pare::onnx::read_model(model).unwrap().model;
    model.graph.unwrap().node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count()
}

#[test]
fn a_forced_share_factorizes_every_eligible_layer_at_its_rank() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("lr.onnx"), dir.path().join("report.json"));
    let run = common::pare(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--lowrank",
        "0.5",
        "--input-shape",
        "images=1,3,32,32",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let report = report_of(&report);
    let section = &report["engine"]["lowrank"];
    assert_eq!(section["settings"]["fixed"], 0.5, "{section}");
    assert_eq!(section["settings"]["data_aware"], false, "no --calib: plain SVD");
    let layers = section["layers"].as_array().unwrap();
    assert!(!layers.is_empty(), "{section}");
    for layer in layers {
        let (rank, before, after) = (
            layer["rank"].as_u64().unwrap(),
            layer["macs_before"].as_u64().unwrap(),
            layer["macs_after"].as_u64().unwrap(),
        );
        assert_eq!(rank % 8, 0, "x86-avx2's channel_multiple: {layer}");
        // At most half the MACs, unless the smallest rank (one multiple) keeps more.
        assert!(after < before && (after <= before / 2 || rank == 8), "{layer}");
        assert!(after * 4 >= before, "not far below half: {layer}");
    }
    // Each factorized layer is two nodes.
    let original = count(&model, "Conv") + count(&model, "Gemm");
    let written = count(&out, "Conv") + count(&out, "Gemm") + count(&out, "MatMul");
    assert_eq!(written, original + layers.len(), "{layers:?}");
}

#[test]
fn budgeted_factorization_of_a_trained_model_keeps_what_fits_and_is_timed() {
    let Some(cls) = common::fetched("ppocr_cls") else { return };
    let data = cls.path.parent().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("lr.onnx"), dir.path().join("report.json"));
    let mut args = vec!["optimize", cls.path.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(["--lowrank", "auto", "--calib", &data, "--budget", "0.05", "--report", report.to_str().unwrap()]);
    args.extend(cls.input_shapes.iter().flat_map(|s| ["--input-shape", s.as_str()]));
    let run = common::pare(&args);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let report = report_of(&report);
    let engine = &report["engine"];
    assert_eq!(engine["lowrank"]["settings"]["data_aware"], true);
    // Every layer's factorized forms were measured on the output.
    let measured = engine["layer_sensitivity"].as_array().unwrap();
    assert!(!measured.is_empty(), "{engine}");
    for layer in engine["lowrank"]["layers"].as_array().unwrap() {
        assert_eq!(layer["measured"], true, "{layer}");
        assert!(layer["error"].as_f64().unwrap() <= 0.05, "{layer}");
    }
    // The kept candidate was timed side by side with float in ONNX Runtime.
    let timed = engine["end_to_end"].as_array().unwrap();
    assert!(timed.iter().any(|c| c["candidate"] == "float"), "{timed:?}");
    assert_eq!(timed.iter().filter(|c| c["chosen"] == true).count(), 1);
}

#[test]
fn a_share_outside_0_1_is_exit_2_with_nothing_written() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.onnx");
    for bad in ["0", "1", "8", "-0.5", "half"] {
        let flag = format!("--lowrank={bad}");
        let run = common::pare(&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), &flag]);
        let stderr = common::stderr(&run);
        assert_eq!(run.status.code(), Some(2), "--lowrank {bad}: {stderr}");
        assert!(stderr.contains("(0, 1)"), "{stderr}");
        assert!(!out.exists());
    }
}

/// On the trained convolutions of PP-OCR's recognizer (its own test input), data-aware
/// factors fitted on half of a layer's receptive fields beat the weights'
/// plain SVD at the same rank on the other half, held out.
#[test]
fn data_aware_factors_of_trained_layers_beat_plain_svd_on_held_out_activations() {
    use pare::eval::statistics::{patches, PatchWindow, SecondMomentAccumulator};
    use pare::families::lowrank::factor::{rank_for_share, Decomposition};
    use pare::ir::AttributeList;

    let Some(rec) = common::fetched("ppocr_rec") else { return };
    let data = pare::eval::read_test_data_set(&rec.path.parent().unwrap().join("test_data_set_0")).unwrap();
    let model = pare::pipeline::load(&rec.path, &[]).unwrap().model;
    let graph = &model.graph;
    // The group-1 convolutions whose receptive field fits a second moment.
    let layers: Vec<&pare::ir::Node> = graph
        .nodes
        .node_weights()
        .filter(|n| n.op_type == "Conv" && n.attr_int("group").unwrap_or(1) == 1)
        .filter(|n| {
            let w = graph.constant(n.inputs[1].unwrap()).unwrap();
            w.dims.len() == 4 && w.dims[1] * w.dims[2] * w.dims[3] <= 2304 && w.dims[0] >= 32
        })
        .collect();
    assert!(layers.len() >= 3, "{} convolutions", layers.len());
    let inputs: Vec<String> = layers.iter().map(|n| graph.value(n.inputs[0].unwrap()).name.clone()).collect();
    let proto = pare::ir::export(model.clone()).unwrap();
    let evaluator = pare::eval::EvaluatorBuilder::new().captures(&inputs).build_from_model(&proto, "rec").unwrap();
    let captured = evaluator.run(&data.inputs).unwrap();
    let mut wins = 0;
    for (layer, input) in layers.iter().zip(&inputs) {
        let weight = graph.constant(layer.inputs[1].unwrap()).unwrap();
        let dims: Vec<usize> = weight.dims.iter().map(|&d| d as usize).collect();
        let (kernel, width) = ([dims[2], dims[3]], dims[1] * dims[2] * dims[3]);
        let w = ndarray::Array2::from_shape_vec(
            (dims[0], width),
            pare::ir::tensor::to_f64(weight).unwrap().iter().map(|&v| v as f32).collect(),
        )
        .unwrap();
        let value = captured.iter().find(|t| &t.name == input).unwrap();
        let shape = value.tensor.shape();
        let geometry = pare::ir::conv_geometry::ConvGeometry::new(*layer, &shape[2..], &kernel).unwrap();
        let window = PatchWindow {
            strides: [geometry.strides[0], geometry.strides[1]],
            dilations: [geometry.dilations[0], geometry.dilations[1]],
            pads_begin: [geometry.pads_begin[0], geometry.pads_begin[1]],
            output: [geometry.output[0], geometry.output[1]],
        };
        let image = value.tensor.as_f32().unwrap();
        let all = patches(&image[..shape[1] * shape[2] * shape[3]], [shape[1], shape[2], shape[3]], kernel, &window, 1);
        // Even positions to fit, odd ones held out.
        let (mut fit, mut held_out) = (Vec::new(), Vec::new());
        for (i, patch) in all.chunks(width).enumerate() {
            if i % 2 == 0 {
                fit.extend_from_slice(patch)
            } else {
                held_out.extend_from_slice(patch)
            }
        }
        let mut moment = SecondMomentAccumulator::default();
        moment.add(&fit, width);
        let moment = moment.finish().unwrap();
        let Some(rank) = rank_for_share(0.5, width, dims[0], 8) else { continue };
        let x = ndarray::Array2::from_shape_vec((held_out.len() / width, width), held_out).unwrap();
        let exact = x.dot(&w.t());
        if x.nrows() < 16 || exact.iter().all(|v| *v == 0.0) {
            continue; // too few held-out fields (a pooled map) to compare on
        }
        let error = |aware: bool| {
            let d = Decomposition::new(w.clone(), aware.then_some(&moment)).unwrap();
            let f = d.factors(rank).unwrap();
            let mut approx = x.dot(&f.second.dot(&f.first).t());
            if let Some(shift) = &f.bias_shift {
                approx
                    .rows_mut()
                    .into_iter()
                    .for_each(|mut row| row.iter_mut().zip(shift).for_each(|(v, s)| *v += *s as f32));
            }
            let diff: f64 = (&exact - &approx).iter().map(|v| f64::from(*v).powi(2)).sum();
            let norm: f64 = exact.iter().map(|v| f64::from(*v).powi(2)).sum();
            (diff / norm).sqrt()
        };
        let (plain, aware) = (error(false), error(true));
        eprintln!(
            "{} rank {rank} of {}: plain {plain:.4} data-aware {aware:.4} (held out)",
            layer.name,
            dims[0].min(width)
        );
        assert!(aware < plain, "{}: data-aware {aware} vs plain {plain}", layer.name);
        wins += 1;
    }
    assert!(wins >= 3, "{wins} layers compared");
}
