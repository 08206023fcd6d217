//! `pare optimize --lowrank` end to end: a forced share factorizes every
//! eligible layer at the rank that keeps it (rounded to the device's channel
//! multiple) and the model still verifies; `--lowrank auto` on a trained
//! model factorizes only where the measured output error fits the budget
//! and the result was timed against float; spatial SVD and Tucker-2 as
//! written compute their reconstructed kernels with the layer's strides,
//! pads and dilations; `--lowrank-form best` offers the form of lowest
//! estimated error; with `--quantize`, forced forms land together and the
//! budgeted families share one budget; bad values are exit 2.

mod common;

use std::path::{Path, PathBuf};

fn residual_block() -> PathBuf {
    common::repo().join("golden/resnet_block_op13/model.onnx")
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `pare optimize MODEL -o OUT FLAGS --report`, which must succeed: the report.
fn optimized(model: &Path, out: &Path, flags: &[&str]) -> serde_json::Value {
    let report = out.with_extension("json");
    let paths =
        ["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--report", report.to_str().unwrap()];
    let run = common::pare(&[&paths[..], flags].concat());
    assert_eq!(run.status.code(), Some(0), "{flags:?}: {}", common::stderr(&run));
    report_of(&report)
}

fn count(model: &Path, op: &str) -> usize {
    let model = pare::onnx::read_model(model).unwrap().model;
    model.graph.unwrap().node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count()
}

#[test]
fn a_forced_share_factorizes_every_eligible_layer_at_its_rank() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.onnx");
    let report = optimized(&model, &out, &["--lowrank", "0.5", "--input-shape", "images=1,3,32,32"]);
    let section = &report["engine"]["lowrank"];
    assert_eq!(section["settings"]["fixed"], 0.5, "{section}");
    assert_eq!(section["settings"]["data_aware"], false, "no --calib: plain SVD");
    let layers = section["layers"].as_array().unwrap();
    assert!(!layers.is_empty(), "{section}");
    assert_eq!(section["settings"]["forms"], "best");
    let mut added = 0;
    for layer in layers {
        let (before, after) = (layer["macs_before"].as_u64().unwrap(), layer["macs_after"].as_u64().unwrap());
        let ranks: Vec<u64> = layer["ranks"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        assert!(ranks.iter().all(|r| r % 8 == 0), "x86-avx2's channel_multiple: {layer}");
        // At most half the MACs, unless the smallest rank (one multiple) keeps more.
        assert!(after < before && (after <= before / 2 || ranks.contains(&8)), "{layer}");
        assert!(after * 4 >= before, "not far below half: {layer}");
        // Two nodes for SVD and spatial SVD, three for Tucker-2.
        added += match layer["form"].as_str().unwrap() {
            "svd" | "spatial" => 1,
            "tucker2" => 2,
            other => panic!("form {other}"),
        };
    }
    let original = count(&model, "Conv") + count(&model, "Gemm");
    let written = count(&out, "Conv") + count(&out, "Gemm") + count(&out, "MatMul");
    assert_eq!(written, original + added, "{layers:?}");
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
    // Every layer's factorized forms were measured on the output, and
    // priced beside the layer (the report says what ruled each out).
    let measured = engine["layer_sensitivity"].as_array().unwrap();
    assert!(!measured.is_empty(), "{engine}");
    // (A layer of a few hundred MACs can time at 0: operator latencies are
    // net of an empty run's overhead, which load can make as large.)
    let mut priced = 0;
    for alternative in measured {
        let cost = &alternative["cost"];
        let (layer, factorized) = (cost["layer"].as_f64().unwrap(), cost["alternative"].as_f64().unwrap());
        assert!((0.0..1.0).contains(&layer) && (0.0..1.0).contains(&factorized), "{alternative}");
        priced += usize::from(layer > 0.0 && factorized > 0.0);
    }
    assert!(priced > 0, "some alternative is priced above 0: {measured:?}");
    // The written model reproduces the output error measured for it on the probe.
    let probe = &report["verification"]["probe"];
    let (written, chosen) = (probe["written"].as_f64().unwrap(), engine["probe_error"].as_f64().unwrap());
    assert!((written - chosen).abs() <= 1e-4 + 0.01 * chosen, "{probe} vs {chosen}");
    for layer in engine["lowrank"]["layers"].as_array().unwrap() {
        assert_eq!(layer["measured"], true, "{layer}");
    }
    // The kept candidate was timed side by side with float in ONNX Runtime,
    // and its measured output error fits the budget (a candidate searched at
    // a wider summed budget may keep a layer that alone measured more).
    let timed = engine["end_to_end"].as_array().unwrap();
    assert!(timed.iter().any(|c| c["candidate"] == "float"), "{timed:?}");
    let chosen: Vec<&serde_json::Value> = timed.iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{timed:?}");
    assert!(chosen[0]["output_error"].as_f64().unwrap() <= 0.05, "{timed:?}");
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

/// A seeded generator of values in [-1, 1).
fn uniform(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// One Conv of [`conv_chain`]: name, weight dims, bias, attributes.
struct ChainConv {
    name: &'static str,
    dims: [i64; 4],
    bias: bool,
    attributes: Vec<pare::onnx::proto::AttributeProto>,
}

/// The three Convs of [`conv_chain`]: vertical stride 2 with a horizontal
/// dilation and asymmetric pads; a 3×5 kernel with horizontal stride 2; and
/// `auto_pad` SAME_LOWER at stride 2.
fn chain_convs() -> Vec<ChainConv> {
    use pare::ir::attribute::{ints, string};
    vec![
        ChainConv {
            name: "a",
            dims: [32, 16, 3, 3],
            bias: true,
            attributes: vec![ints("strides", &[2, 1]), ints("dilations", &[1, 2]), ints("pads", &[1, 2, 0, 1])],
        },
        ChainConv {
            name: "b",
            dims: [32, 32, 3, 5],
            bias: false,
            attributes: vec![ints("strides", &[1, 2]), ints("pads", &[2, 0, 1, 2])],
        },
        ChainConv {
            name: "c",
            dims: [16, 32, 3, 3],
            bias: true,
            attributes: vec![string("auto_pad", "SAME_LOWER"), ints("strides", &[2, 2])],
        },
    ]
}

/// Each layer's kernel and bias, by the layer's name.
type Kernels = std::collections::BTreeMap<String, (Vec<f32>, Option<Vec<f32>>)>;

/// x [1, 16, 19, 22] → a → b → c → y, seeded weights; `kernels` replaces
/// the weights and biases (the reconstructed kernels of a factorized model).
fn conv_chain(kernels: Option<&Kernels>) -> Vec<u8> {
    use pare::ir::{tensor::from_f32, tensor_declaration, DataType, Dim, Shape};
    use pare::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    use prost::Message;

    let mut seed = 5;
    let (mut nodes, mut initializers) = (Vec::new(), Vec::new());
    let mut input = "x".to_string();
    let convs = chain_convs();
    for (i, conv) in convs.iter().enumerate() {
        let count = conv.dims.iter().product::<i64>() as usize;
        let scale = 1.0 / (count as f32 / conv.dims[0] as f32).sqrt();
        let mut weight: Vec<f32> = (0..count).map(|_| uniform(&mut seed) * scale).collect();
        let mut bias: Option<Vec<f32>> =
            conv.bias.then(|| (0..conv.dims[0]).map(|_| uniform(&mut seed) * 0.1).collect());
        if let Some((w, b)) = kernels.and_then(|k| k.get(conv.name)) {
            (weight, bias) = (w.clone(), b.clone());
        }
        let mut inputs = vec![input.clone(), format!("{}.w", conv.name)];
        initializers.push(from_f32(&inputs[1], &conv.dims, &weight));
        if let Some(bias) = bias {
            inputs.push(format!("{}.b", conv.name));
            initializers.push(from_f32(&inputs[2], &[conv.dims[0]], &bias));
        }
        let output = if i + 1 == convs.len() { "y".to_string() } else { format!("{}.out", conv.name) };
        nodes.push(NodeProto {
            name: Some(conv.name.into()),
            op_type: Some("Conv".into()),
            input: inputs,
            output: vec![output.clone()],
            attribute: conv.attributes.clone(),
            ..Default::default()
        });
        input = output;
    }
    let shape = Shape([1, 16, 19, 22].into_iter().map(Dim::Known).collect());
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            name: Some("conv_chain".into()),
            node: nodes,
            initializer: initializers,
            input: vec![tensor_declaration("x", DataType::Float, Some(&shape))],
            output: vec![tensor_declaration("y", DataType::Float, None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// `pare optimize` of the conv chain with `--lowrank SHARE --lowrank-form FORM`:
/// the written model and the report.
fn factorize_chain(dir: &Path, share: &str, form: &str) -> (PathBuf, serde_json::Value) {
    let model = dir.join("chain.onnx");
    std::fs::write(&model, conv_chain(None)).unwrap();
    let out = dir.join(format!("{form}.onnx"));
    let report = optimized(&model, &out, &["--lowrank", share, "--lowrank-form", form]);
    (out, report)
}

/// The tensor named `name` among the model's initializers, as f32.
fn initializer(model: &pare::onnx::proto::ModelProto, name: &str) -> (Vec<i64>, Vec<f32>) {
    let graph = model.graph.as_ref().unwrap();
    let tensor = graph.initializer.iter().find(|t| t.name.as_deref() == Some(name)).unwrap();
    let values = pare::ir::tensor::to_f64(tensor).unwrap().iter().map(|&v| v as f32).collect();
    (tensor.dims.clone(), values)
}

/// Each factorized layer of a written chain: its stages (the node named
/// after the layer last, then back along its input while the producer is a
/// Conv not named after a layer), input first.
fn stages_of<'m>(model: &'m pare::onnx::proto::ModelProto, layer: &str) -> Vec<&'m pare::onnx::proto::NodeProto> {
    let nodes = &model.graph.as_ref().unwrap().node;
    let layers: Vec<&str> = chain_convs().iter().map(|c| c.name).collect();
    let mut stage = nodes.iter().find(|n| n.name.as_deref() == Some(layer)).unwrap();
    let mut stages = vec![stage];
    while let Some(producer) = nodes.iter().find(|n| n.output.first() == stage.input.first()) {
        if producer.op_type.as_deref() != Some("Conv") || layers.contains(&producer.name.as_deref().unwrap_or("")) {
            break;
        }
        stages.push(producer);
        stage = producer;
    }
    stages.reverse();
    stages
}

/// The kernel `[Cout, Cin, kh, kw]` a chain of stages computes, when each
/// stage is 1 wide across every axis another stage spans (spatial SVD:
/// kh×1 then 1×kw; Tucker-2 and SVD: 1x1 around one kh×kw).
fn composed_kernel(model: &pare::onnx::proto::ModelProto, stages: &[&pare::onnx::proto::NodeProto]) -> Vec<f32> {
    let weights: Vec<(Vec<i64>, Vec<f32>)> = stages.iter().map(|s| initializer(model, &s.input[1])).collect();
    let (cin, cout) = (weights[0].0[1] as usize, weights.last().unwrap().0[0] as usize);
    let kh = weights.iter().map(|(d, _)| d[2] as usize).max().unwrap();
    let kw = weights.iter().map(|(d, _)| d[3] as usize).max().unwrap();
    // K[c, ci, y, x], starting from the identity on input channels.
    let mut kernel: Vec<f32> = vec![0.0; cin * cin * kh * kw];
    let mut channels = cin;
    for c in 0..cin {
        kernel[c * cin * kh * kw + c * kh * kw] = 1.0;
    }
    for (dims, w) in &weights {
        let (out, (h, wd)) = (dims[0] as usize, (dims[2] as usize, dims[3] as usize));
        assert_eq!(dims[1] as usize, channels);
        let mut next = vec![0.0f32; out * cin * kh * kw];
        for o in 0..out {
            for c in 0..channels {
                for (y, x) in (0..h).flat_map(|y| (0..wd).map(move |x| (y, x))) {
                    let tap = w[((o * channels + c) * h + y) * wd + x];
                    for ci in 0..cin {
                        for (ky, kx) in (0..kh).flat_map(|a| (0..kw).map(move |b| (a, b))) {
                            let from = kernel[((c * cin + ci) * kh + ky) * kw + kx];
                            if from != 0.0 {
                                // A stage spans an axis only where the earlier ones are 1 wide.
                                let (ty, tx) = (ky + y, kx + x);
                                if ty < kh && tx < kw {
                                    next[((o * cin + ci) * kh + ty) * kw + tx] += tap * from;
                                }
                            }
                        }
                    }
                }
            }
        }
        kernel = next;
        channels = out;
    }
    assert_eq!(channels, cout);
    kernel
}

fn run_tract(model: &[u8], input: &pare::eval::NamedTensor) -> Vec<f32> {
    let proto: pare::onnx::proto::ModelProto = prost::Message::decode(model).unwrap();
    let evaluator = pare::eval::EvaluatorBuilder::new().build_from_model(&proto, "chain").unwrap();
    let outputs = evaluator.run(std::slice::from_ref(input)).unwrap();
    outputs[0].tensor.as_f32().unwrap().to_vec()
}

fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    (d / b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>()).sqrt()
}

/// Spatial SVD and Tucker-2 as written: each layer's stages compute its
/// reconstructed kernel with the layer's strides, pads (explicit and
/// asymmetric, or auto_pad), and dilations, so the written model matches the
/// chain rebuilt with those kernels to 1e-5; and the report's MACs are those
/// of the stages' shapes.
#[test]
fn spatial_and_tucker2_stages_compute_the_reconstructed_kernels() {
    use pare::ir::conv_geometry::ConvGeometry;
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 9;
    let x: Vec<f32> = (0..16 * 19 * 22).map(|_| uniform(&mut seed)).collect();
    let x = pare::eval::NamedTensor::new("x", pare::eval::Tensor::from_f32(&[1, 16, 19, 22], &x).unwrap());
    let original = run_tract(&conv_chain(None), &x);
    for (form, share, stage_count) in [("spatial", "0.6", 2), ("tucker2", "0.6", 3)] {
        let (out, report) = factorize_chain(dir.path(), share, form);
        let layers = report["engine"]["lowrank"]["layers"].as_array().unwrap().clone();
        assert_eq!(layers.len(), 3, "{form}: {layers:?}");
        let written: pare::onnx::proto::ModelProto =
            prost::Message::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
        let mut kernels = std::collections::BTreeMap::new();
        let mut size = [19usize, 22];
        for conv in chain_convs() {
            let layer = layers.iter().find(|l| l["layer"] == conv.name).unwrap();
            assert_eq!(layer["form"], form, "{layer}");
            let ranks: Vec<u64> = layer["ranks"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
            assert_eq!(ranks.len(), if form == "tucker2" { 2 } else { 1 }, "{layer}");
            assert!(ranks.iter().all(|r| r % 8 == 0) && layer["rank"] == ranks[0], "{layer}");
            let stages = stages_of(&written, conv.name);
            assert_eq!(stages.len(), stage_count, "{form} {}", conv.name);
            // MACs from the stages' geometry: each stage's outputs × its taps.
            let (mut stage_size, mut macs) = (size, 0u64);
            for stage in &stages {
                let (dims, _) = initializer(&written, &stage.input[1]);
                let kernel = [dims[2] as usize, dims[3] as usize];
                let geometry = ConvGeometry::new(&stage.attribute[..], &stage_size, &kernel).unwrap();
                stage_size = [geometry.output[0], geometry.output[1]];
                macs += (stage_size[0] * stage_size[1]) as u64 * dims.iter().product::<i64>() as u64;
            }
            let layer_geometry =
                ConvGeometry::new(&conv.attributes[..], &size, &[conv.dims[2] as usize, conv.dims[3] as usize])
                    .unwrap();
            size = [layer_geometry.output[0], layer_geometry.output[1]];
            assert_eq!(stage_size, size, "{form} {}: the stages keep the layer's output size", conv.name);
            let before = (size[0] * size[1]) as u64 * conv.dims.iter().product::<i64>() as u64;
            assert_eq!(layer["macs_before"], before, "{layer}");
            assert_eq!(layer["macs_after"], macs, "{layer}");
            assert!(macs < before, "{layer}");
            let bias =
                stages.last().unwrap().input.get(2).filter(|b| !b.is_empty()).map(|b| initializer(&written, b).1);
            kernels.insert(conv.name.to_string(), (composed_kernel(&written, &stages), bias));
        }
        let factorized = run_tract(&std::fs::read(&out).unwrap(), &x);
        let rebuilt = run_tract(&conv_chain(Some(&kernels)), &x);
        let exact = relative_l2(&factorized, &rebuilt);
        assert!(exact < 1e-5, "{form}: written vs rebuilt kernels {exact}");
        let approximate = relative_l2(&factorized, &original);
        eprintln!("{form} at {share}: output error {approximate:.3} vs the original");
        assert!(approximate > 1e-3 && approximate < 1.0, "{form}: {approximate}");
    }
}

/// `--lowrank-form best` offers, per layer and share, the form whose
/// estimated error is lowest of the three, at the ranks that form alone gets.
#[test]
fn best_offers_the_form_of_lowest_estimated_error() {
    let dir = tempfile::tempdir().unwrap();
    let layers_of = |form: &str| {
        let (_, report) = factorize_chain(dir.path(), "0.5", form);
        let layers = report["engine"]["lowrank"]["layers"].as_array().unwrap().clone();
        assert_eq!(report["engine"]["lowrank"]["settings"]["forms"], form);
        assert!(layers.iter().all(|l| l["measured"] == false && l["fitted"] == "none"), "{layers:?}");
        layers
    };
    let best = layers_of("best");
    let named: Vec<(&str, Vec<serde_json::Value>)> =
        ["svd", "spatial", "tucker2"].into_iter().map(|form| (form, layers_of(form))).collect();
    assert_eq!(best.len(), 3);
    for layer in &best {
        let name = &layer["layer"];
        let errors: Vec<(&str, &serde_json::Value)> =
            named.iter().map(|(form, layers)| (*form, layers.iter().find(|l| &l["layer"] == name).unwrap())).collect();
        let (form, lowest) = errors
            .iter()
            .min_by(|a, b| a.1["error"].as_f64().unwrap().total_cmp(&b.1["error"].as_f64().unwrap()))
            .unwrap();
        let summary: Vec<String> = errors.iter().map(|(f, l)| format!("{f} {:.4}", l["error"])).collect();
        eprintln!("{name}: {} -> best {}", summary.join(", "), layer["form"]);
        assert_eq!(layer["form"], *form, "{name}: {summary:?}");
        assert_eq!(layer["ranks"], lowest["ranks"], "{name}");
        assert!((layer["error"].as_f64().unwrap() - lowest["error"].as_f64().unwrap()).abs() < 1e-9, "{name}");
    }
}

#[test]
fn a_bad_lowrank_form_is_exit_2_with_nothing_written() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.onnx");
    let optimize = |flags: &[&str]| {
        common::pare(&[&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap()], flags].concat())
    };
    for bad in ["tucker", "SVD", "", "all"] {
        let run = optimize(&["--lowrank", "0.5", &format!("--lowrank-form={bad}")]);
        let stderr = common::stderr(&run);
        assert_eq!(run.status.code(), Some(2), "--lowrank-form {bad}: {stderr}");
        assert!(stderr.contains("best, svd, spatial or tucker2"), "{stderr}");
        assert!(!out.exists());
    }
    // Without --lowrank it has nothing to choose among.
    let run = optimize(&["--lowrank-form", "svd"]);
    assert_eq!(run.status.code(), Some(2), "{}", common::stderr(&run));
    assert!(!out.exists());
}

/// Low-rank with quantization: forced, both forms land in the written model;
/// budgeted, the two families share one `--budget`, measured end to end.
#[test]
fn lowrank_and_quantization_together_share_one_budget() {
    let Some(cls) = common::fetched("ppocr_cls") else { return };
    let data = cls.path.parent().unwrap().to_str().unwrap().to_string();
    let shapes: Vec<&str> = cls.input_shapes.iter().flat_map(|s| ["--input-shape", s.as_str()]).collect();
    let dir = tempfile::tempdir().unwrap();
    let forced = dir.path().join("forced.onnx");
    let flags = [&["--lowrank", "0.5", "--quantize", "all", "--calib", &data][..], &shapes].concat();
    let report = optimized(&cls.path, &forced, &flags);
    assert!(!report["engine"]["lowrank"]["layers"].as_array().unwrap().is_empty(), "{report}");
    assert!(count(&forced, "QuantizeLinear") > 0 && count(&forced, "Conv") > count(&cls.path, "Conv"));
    let budgeted = dir.path().join("budgeted.onnx");
    let flags =
        [&["--lowrank", "auto", "--quantize", "auto", "--calib", &data, "--budget", "0.05"][..], &shapes].concat();
    let report = optimized(&cls.path, &budgeted, &flags);
    let engine = &report["engine"];
    assert!(engine["lowrank"].is_object() && engine["quantization"].is_object(), "{engine}");
    // Every alternative of both families was measured alone on the output,
    let families: std::collections::BTreeSet<&str> = engine["layer_sensitivity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| if l["alternative"]["rank"].is_null() { "quant" } else { "lowrank" })
        .collect();
    assert_eq!(families.len(), 2, "{families:?}");
    // and the kept candidate's deployed error fits the one budget.
    let timed = engine["end_to_end"].as_array().unwrap();
    let chosen: Vec<&serde_json::Value> = timed.iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{timed:?}");
    assert!(chosen[0]["output_error"].as_f64().unwrap() <= 0.05, "{timed:?}");
    assert_eq!(report["budget"], 0.05);
}
