//! The evaluator against ONNX Runtime's reference outputs (golden/, made
//! with ORT_DISABLE_ALL) and, when fetched, the real models in
//! `.cache/models`; activation capture, streaming and error cases.

use std::path::{Path, PathBuf};

use super::*;

/// Elementwise tolerance against ONNX Runtime's reference: numpy's allclose
/// rule |actual - expected| <= ABSOLUTE + RELATIVE * |expected|.
const RELATIVE: f64 = 1e-4;
const ABSOLUTE: f64 = 1e-5;

/// Golden models tract 0.23 cannot run, with the text its error contains.
/// `every_golden_model_matches_onnx_runtime` asserts exactly these fail (and
/// every other golden model matches ONNX Runtime).
const TRACT_CANNOT_RUN: &[(&str, &str)] = &[
    // Upsample (opset 7-9) has no tract implementation.
    ("legacy_attrs_op9", r#""n_Upsample_3" Unimplemented(Upsample)"#),
    // Model-local FunctionProtos are not inlined by tract.
    ("local_function_op17", r#""n_ConvAct_4" Unimplemented(ConvAct)"#),
    // Loop is not implemented (If alone would be).
    ("control_flow_op13", r#""n_Loop_17" Unimplemented(Loop)"#),
    // A Constant node holding a sparse_value (and sparse_initializer).
    (
        "sparse_initializer_op13",
        "Building node n_sparse_const (Constant): Could not extract value out of Constant node",
    ),
    // com.microsoft contrib operators.
    ("com_microsoft_op17", r#""n_FusedConv_4" Unimplemented(FusedConv)"#),
    // int4 weights of blocked DequantizeLinear-21.
    ("qdq_matmul_op21", "Unknown DatumType Int4"),
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden_model_names() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo_root().join("golden/manifest.json")).expect("golden/manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest is JSON");
    manifest["models"]
        .as_array()
        .expect("models list")
        .iter()
        .map(|model| model["name"].as_str().expect("model name").to_string())
        .collect()
}

/// Where each output breaks the tolerance, or `None` when all match.
fn mismatch(actual: &[NamedTensor], expected: &[NamedTensor]) -> Option<String> {
    if actual.len() < expected.len() {
        return Some(format!("{} results for {} expected outputs", actual.len(), expected.len()));
    }
    for (position, (got, want)) in actual.iter().zip(expected).enumerate() {
        if !want.name.is_empty() && got.name != want.name {
            return Some(format!("output {position} is '{}', expected '{}'", got.name, want.name));
        }
        if got.tensor.dtype() != want.tensor.dtype() || got.tensor.shape() != want.tensor.shape() {
            return Some(format!(
                "'{}': {:?} {:?} vs expected {:?} {:?}",
                got.name,
                got.tensor.dtype(),
                got.tensor.shape(),
                want.tensor.dtype(),
                want.tensor.shape()
            ));
        }
        let (Some(got_values), Some(want_values)) = (got.tensor.to_f64(), want.tensor.to_f64()) else {
            return Some(format!("'{}' is not numeric", got.name));
        };
        let worst = got_values
            .iter()
            .zip(&want_values)
            .map(|(g, w)| (g - w).abs() - (ABSOLUTE + RELATIVE * w.abs()))
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (index, excess)| if excess > best.1 { (index, excess) } else { best });
        if worst.1 > 0.0 || got_values.iter().any(|v| v.is_nan()) != want_values.iter().any(|v| v.is_nan()) {
            let index = worst.0;
            return Some(format!(
                "'{}' element {index}: {} vs expected {}",
                got.name, got_values[index], want_values[index]
            ));
        }
    }
    None
}

/// Loads, runs and compares one model on its test_data_set_0.
fn check_against_reference(model: &Path, fixed: &[(String, Vec<i64>)]) -> Result<(), String> {
    let data = read_test_data_set(&model.with_file_name("test_data_set_0")).map_err(|error| error.to_string())?;
    assert!(!data.outputs.is_empty(), "{}: no reference outputs", model.display());
    let evaluator = Evaluator::from_path(model, fixed).map_err(|error| error.to_string())?;
    let results = evaluator.run(&data.inputs).map_err(|error| error.to_string())?;
    match mismatch(&results, &data.outputs) {
        None => Ok(()),
        Some(reason) => Err(format!("outputs differ from ONNX Runtime: {reason}")),
    }
}

#[test]
fn every_golden_model_matches_onnx_runtime() {
    let mut unexpected = Vec::new();
    for name in golden_model_names() {
        let model = repo_root().join("golden").join(&name).join("model.onnx");
        let outcome = check_against_reference(&model, &[]);
        let known = TRACT_CANNOT_RUN.iter().find(|(known, _)| *known == name);
        match (outcome, known) {
            (Ok(()), None) => {}
            (Err(reason), Some((_, expected_text))) if reason.contains(expected_text) => {}
            (Ok(()), Some(_)) => unexpected.push(format!("{name}: listed as unsupported but now passes")),
            (Err(reason), _) => unexpected.push(format!("{name}: {reason}")),
        }
    }
    assert!(unexpected.is_empty(), "unexpected golden results:\n{}", unexpected.join("\n"));
}

fn resnet_block_sample(batch: usize, seed: u32) -> Vec<NamedTensor> {
    let count = batch * 3 * 32 * 32;
    let values: Vec<f32> = (0..count)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    vec![NamedTensor::new("images", Tensor::from_f32(&[batch, 3, 32, 32], &values).expect("valid input"))]
}

fn resnet_block_path() -> PathBuf {
    repo_root().join("golden/resnet_block_op13/model.onnx")
}

fn values(results: &[NamedTensor], name: &str) -> Vec<f64> {
    results.iter().find(|result| result.name == name).and_then(|result| result.tensor.to_f64()).expect(name)
}

fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-6 + 1e-5 * e.abs(), "{what}[{index}]: {a} vs {e}");
    }
}

#[test]
fn captures_of_one_run_agree_with_recomputation() {
    let captures = ["relu_67", "globalaveragepool_69", "logits"];
    let evaluator = Evaluator::with_captures(&resnet_block_path(), &[], &captures).expect("loads");
    assert_eq!(evaluator.result_names(), &["features", "logits", "relu_67", "globalaveragepool_69", "logits"]);
    let results = evaluator.run(&resnet_block_sample(2, 7)).expect("runs");
    let relu = &results[2].tensor;
    assert_eq!(relu.shape(), &[2, 16, 16, 16]);
    let relu = relu.to_f64().expect("numeric");
    assert!(relu.iter().all(|&v| v >= 0.0) && relu.iter().any(|&v| v > 0.0), "relu_67 is a ReLU output");

    // GlobalAveragePool of the captured ReLU output is the captured pool.
    let pooled: Vec<f64> = relu.chunks(256).map(|plane| plane.iter().sum::<f64>() / 256.0).collect();
    assert_eq!(results[3].tensor.shape(), &[2, 16, 1, 1]);
    assert_close(&values(&results[3..], "globalaveragepool_69"), &pooled, "pool");
    // Flatten: the graph output `features` holds the same numbers.
    assert_close(&values(&results, "features"), &pooled, "features");

    // Gemm(transB=1): logits = features · fc_wᵀ + fc_b, from the initializers.
    let model = crate::onnx::read_model(&resnet_block_path()).expect("reads").model;
    let initializer = |name: &str| {
        let graph = model.graph.as_ref().expect("graph");
        let tensor = graph.initializer.iter().find(|t| t.name.as_deref() == Some(name)).expect(name);
        crate::ir::tensor::to_f64(tensor).expect("float weights")
    };
    let (weight, bias) = (initializer("fc_w_73"), initializer("fc_b_74"));
    let logits: Vec<f64> = pooled
        .chunks(16)
        .flat_map(|row| {
            (0..10).map(|out| {
                bias[out] + row.iter().zip(&weight[out * 16..out * 16 + 16]).map(|(x, w)| x * w).sum::<f64>()
            })
        })
        .collect();
    assert_close(&values(&results, "logits"), &logits, "logits");
    assert_eq!(results[1].tensor, results[4].tensor, "a capture of a graph output is that output");

    // Capturing does not change the graph outputs.
    let plain =
        Evaluator::from_path(&resnet_block_path(), &[]).expect("loads").run(&resnet_block_sample(2, 7)).expect("runs");
    assert_close(&values(&plain, "logits"), &values(&results, "logits"), "logits without captures");
}

#[test]
fn stream_runs_samples_in_order_with_dynamic_batch() {
    let evaluator = Evaluator::with_captures(&resnet_block_path(), &[], &["relu_67"]).expect("loads");
    let samples: Vec<Vec<NamedTensor>> = (1..=3).map(|batch| resnet_block_sample(batch, batch as u32)).collect();
    let expected: Vec<Vec<NamedTensor>> = samples.iter().map(|sample| evaluator.run(sample).expect("runs")).collect();
    let mut seen = Vec::new();
    let count = evaluator
        .run_stream(samples, |index, results| {
            assert_eq!(results, expected[index]);
            assert_eq!(results[2].tensor.shape(), &[index + 1, 16, 16, 16]);
            seen.push(index);
            Ok(())
        })
        .expect("streams");
    assert_eq!((count, seen), (3, vec![0, 1, 2]));

    let stopped = evaluator.run_stream((1..=3).map(|batch| resnet_block_sample(batch, 0)), |index, _| {
        if index == 1 {
            Err(EvalError::Tensor { name: "sink".into(), reason: "full".into() })
        } else {
            Ok(())
        }
    });
    assert!(matches!(stopped, Err(EvalError::Tensor { .. })));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let path = resnet_block_path();
    let fixed = [("images".to_string(), vec![2, 3, 32, 32])];
    let evaluator = Evaluator::from_path(&path, &fixed).expect("loads");
    assert!(matches!(evaluator.run(&[]), Err(EvalError::MissingInput { name, .. }) if name == "images"));
    assert!(matches!(evaluator.run(&resnet_block_sample(1, 0)), Err(EvalError::InputShape { .. })));
    let ints = Tensor::from_i64(&[2, 3, 32, 32], &vec![0; 2 * 3 * 32 * 32]).expect("valid");
    assert!(matches!(evaluator.run(&[NamedTensor::new("images", ints)]), Err(EvalError::InputType { .. })));
    let mut extra = resnet_block_sample(2, 0);
    extra.push(NamedTensor::new("labels", Tensor::from_f32(&[1], &[0.0]).expect("valid")));
    assert!(matches!(evaluator.run(&extra), Err(EvalError::UnknownInput { name, .. }) if name == "labels"));
    // An unnamed input takes the name of its position.
    let mut unnamed = resnet_block_sample(2, 0);
    unnamed[0].name.clear();
    assert!(evaluator.run(&unnamed).is_ok());

    let unknown = Evaluator::from_path(&path, &[("image".to_string(), vec![1, 3, 32, 32])]);
    assert!(matches!(unknown, Err(EvalError::UnknownFixedInput { .. })));
    let wrong_rank = Evaluator::from_path(&path, &[("images".to_string(), vec![1, 3, 32])]);
    assert!(matches!(wrong_rank, Err(EvalError::InputShape { .. })));
    let missing_value = Evaluator::with_captures(&path, &[], &["no_such_value"]);
    assert!(matches!(missing_value, Err(EvalError::UnknownCapture { .. })));
    assert!(Evaluator::from_bytes(b"definitely not onnx", "garbage", &[]).is_err());
    let bytes = std::fs::read(&path).expect("model bytes");
    assert!(Evaluator::from_bytes(&bytes[..bytes.len() / 2], "truncated", &[]).is_err());
    assert!(Evaluator::from_bytes(&bytes, "in memory", &[]).is_ok());
}

/// The fetched real-model cache, when present.
fn fetched_models() -> Option<(PathBuf, serde_json::Value)> {
    let dir =
        std::env::var_os("PARE_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".cache/models"));
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    Some((dir, serde_json::from_str(&manifest).expect("models manifest is JSON")))
}

/// `name=d0,d1,...` as the evaluator's fixed shape pair.
fn parse_input_shape_arg(arg: &str) -> (String, Vec<i64>) {
    let (name, dims) = arg.rsplit_once('=').expect("NAME=DIMS");
    (name.to_string(), dims.split(',').map(|dim| dim.parse().expect("dim")).collect())
}

fn check_fetched(name: &str) {
    let Some((dir, manifest)) = fetched_models() else {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "fetched models are required but missing");
        return;
    };
    let entry = manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|model| model["name"] == name)
        .expect("listed model");
    let model = dir.join(entry["path"].as_str().expect("path"));
    let fixed: Vec<(String, Vec<i64>)> =
        entry["input_shape_arg"].as_str().map(parse_input_shape_arg).into_iter().collect();
    if let Err(reason) = check_against_reference(&model, &fixed) {
        panic!("{name}: {reason}");
    }
}

#[test]
fn resnet50_matches_onnx_runtime() {
    check_fetched("resnet50");
}

#[test]
fn ppocr_recognizer_matches_onnx_runtime() {
    check_fetched("ppocr_rec");
}
