//! `ir::opset::upgrade` on whole models: every golden model, every fetched
//! model and one small model per rewrite (built at its old opset) is upgraded
//! to opsets 13 and 21, exported, and run beside the original on the same
//! inputs: in the embedded evaluator (tract) where it can run the original,
//! and, when PARE_PYTHON is set, in ONNX Runtime (reference semantics, which
//! also runs what tract cannot), where the upgraded model must also pass
//! `onnx.checker` with full_check. Outputs must agree within 1e-5 relative.
//! Each comparison's error is printed (`cargo test --test opset -- --nocapture`).

mod common;

use std::path::Path;
use std::process::Command;

use pare::eval::{read_test_data_set, NamedTensor};
use pare::ir::attribute::{float, floats, int, ints, string};
use pare::ir::opset::{upgrade, OpsetError};
use pare::ir::{export, import, infer, DataType};
use pare::onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use pare::onnx::read_model;
use pare::onnxruntime::GraphOptimization;
use pare::runtime::{Runtime, RuntimeChoice};

const TARGETS: [i64; 2] = [13, 21];
const TOLERANCE: f64 = 1e-5;
/// Models onnx.checker's full check fails whatever their opset: its shape
/// inference cannot type values read from sparse initializers.
const CHECKER_CANNOT_TYPE: &[&str] = &["sparse_initializer_op13"];

/// A model to upgrade and the inputs to run it on.
struct Case {
    name: String,
    model: ModelProto,
    fixed: Vec<(String, Vec<i64>)>,
    inputs: Vec<NamedTensor>,
    /// Whether tract runs the original (the upgraded model must then run too).
    tract: bool,
}

/// How far a candidate's outputs are from the reference's, over all outputs.
#[derive(Clone, Copy, Debug, Default)]
struct Difference {
    /// ‖candidate − reference‖₂ / ‖reference‖₂.
    rel_l2: f64,
    /// max |candidate − reference| / max |reference|.
    max_rel: f64,
}

fn difference(reference: &[NamedTensor], candidate: &[NamedTensor]) -> Result<Difference, String> {
    if reference.len() != candidate.len() {
        return Err(format!("{} outputs, expected {}", candidate.len(), reference.len()));
    }
    let mut worst = Difference::default();
    for (want, got) in reference.iter().zip(candidate) {
        if want.tensor.shape() != got.tensor.shape() {
            return Err(format!(
                "output {} has shape {:?}, expected {:?}",
                got.name,
                got.tensor.shape(),
                want.tensor.shape()
            ));
        }
        let (want, got) = (want.tensor.to_f64().ok_or("no numbers")?, got.tensor.to_f64().ok_or("no numbers")?);
        let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
        let error = want.iter().zip(&got).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
        let peak = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let max_abs = want.iter().zip(&got).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        let relative = |error: f64, scale: f64| if error == 0.0 { 0.0 } else { error / scale.max(f64::MIN_POSITIVE) };
        worst.rel_l2 = worst.rel_l2.max(relative(error, norm));
        worst.max_rel = worst.max_rel.max(relative(max_abs, peak));
    }
    Ok(worst)
}

fn run(model: &ModelProto, label: &str, choice: RuntimeChoice, case: &Case) -> Result<Vec<NamedTensor>, String> {
    let mut runtime = Runtime::from_model(model, label, choice, &case.fixed).map_err(|e| e.to_string())?;
    runtime.run(&case.inputs).map_err(|e| e.to_string())
}

/// Runs `onnx.checker.check_model(full_check=True)` on a model with the Python of PARE_PYTHON.
fn onnx_checker(python: &Path, model: &ModelProto, label: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("upgraded.onnx");
    let options = pare::onnx::WriteOptions::default();
    pare::onnx::write_model(model.clone(), &path, &options).map_err(|e| format!("{label}: cannot write: {e}"))?;
    let script = "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let output = Command::new(python).args(["-c", script]).arg(&path).output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{label}: onnx.checker: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Upgrades a case to each target and checks the upgraded model against the
/// original; returns the failures (empty when all passed).
fn check_case(case: &Case, python: Option<&Path>) -> Vec<String> {
    let mut failures = Vec::new();
    let source = case.model.opset_import.iter().find(|o| o.domain.as_deref().unwrap_or("").is_empty());
    let source = source.and_then(|o| o.version).unwrap_or(0);
    let tract_reference = case.tract.then(|| run(&case.model, &case.name, RuntimeChoice::Tract, case));
    let ort = RuntimeChoice::Ort(GraphOptimization::None);
    let ort_reference = python.map(|_| run(&case.model, &case.name, ort, case));
    let checker = python.filter(|_| !CHECKER_CANNOT_TYPE.contains(&case.name.as_str()));
    for target in TARGETS {
        let label = format!("{} ({source} → {target})", case.name);
        let mut ir = import(case.model.clone()).expect("the model imports");
        let report = match upgrade(&mut ir, target) {
            Err(OpsetError::Downgrade { .. }) if source > target => continue,
            Err(error) => {
                failures.push(format!("{label}: {error}"));
                continue;
            }
            Ok(report) => report,
        };
        let upgraded = export(ir).expect("the upgraded model exports");
        let mut line = format!("{label}: rewrote {:?}", report.rewritten);
        let mut compare = |runtime: &str, reference: &Result<Vec<NamedTensor>, String>, choice| {
            let outcome = reference
                .as_ref()
                .map_err(|e| format!("the original does not run: {e}"))
                .and_then(|reference| difference(reference, &run(&upgraded, &label, choice, case)?));
            match outcome {
                Ok(found) => {
                    line += &format!("; {runtime} rel_l2 {:.1e} max_rel {:.1e}", found.rel_l2, found.max_rel);
                    if found.rel_l2.max(found.max_rel) > TOLERANCE {
                        failures.push(format!("{label}: {runtime}: {found:?}"));
                    }
                }
                Err(error) => failures.push(format!("{label}: {runtime}: {error}")),
            }
        };
        if let Some(reference) = &tract_reference {
            compare("tract", reference, RuntimeChoice::Tract);
        }
        if let Some(reference) = &ort_reference {
            compare("ort", reference, ort);
        }
        if let Some(python) = checker {
            match onnx_checker(python, &upgraded, &label) {
                Ok(()) => line += "; onnx.checker ok",
                Err(error) => failures.push(error),
            }
        }
        eprintln!("{line}");
    }
    failures
}

fn python() -> Option<std::path::PathBuf> {
    std::env::var_os("PARE_PYTHON").map(Into::into)
}

fn fixed_shapes(specs: &[String]) -> Vec<(String, Vec<i64>)> {
    specs.iter().map(|spec| infer::parse_input_shape(spec).expect("a valid input shape")).collect()
}

/// Seeded random inputs for a model whose input shapes `fixed` pins down.
fn random_inputs(model: &ModelProto, fixed: &[(String, Vec<i64>)]) -> Vec<NamedTensor> {
    let mut ir = import(model.clone()).expect("the model imports");
    infer::infer(&mut ir, fixed).expect("the input shapes fit");
    let specs = pare::samples::input_specs(&ir).expect("input shapes are known");
    let mut samples = pare::samples::random(&specs, 1, 7).expect("random inputs");
    samples.next().expect("one sample").inputs
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_golden_model_upgrades_to_13_and_21_and_computes_the_same() {
    let python = python();
    let mut failures = Vec::new();
    for path in common::golden_models() {
        let name = common::golden_name(&path);
        let inputs = read_test_data_set(&path.parent().unwrap().join("test_data_set_0")).unwrap().inputs;
        let case = Case {
            tract: !common::TRACT_CANNOT_RUN.contains(&name.as_str()),
            model: read_model(&path).unwrap().model,
            fixed: fixed_shapes(&common::golden_input_shapes(&path)),
            inputs,
            name,
        };
        failures.extend(check_case(&case, python.as_deref()));
    }
    assert_no_failures(failures);
}

#[test]
fn every_fetched_model_upgrades_to_13_and_21_and_computes_the_same() {
    let python = python();
    let mut failures = Vec::new();
    for fetched in common::fetched_models() {
        let model = read_model(&fetched.path).unwrap().model;
        let fixed = fixed_shapes(&fetched.input_shapes);
        let inputs = random_inputs(&model, &fixed);
        let case = Case { name: fetched.name, model, fixed, inputs, tract: true };
        failures.extend(check_case(&case, python.as_deref()));
    }
    assert_no_failures(failures);
}

// ---------------------------------------------------------------------------
// One small model per rewrite, at the opset before the change

fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{}_node", outputs[0])),
        op_type: Some(op.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

fn tensor_type(name: &str, dtype: DataType, dims: Option<&[i64]>) -> ValueInfoProto {
    pare::ir::tensor_declaration(name, dtype, dims.map(pare::ir::Shape::known).as_ref())
}

fn floats_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    pare::ir::tensor::from_f32(name, dims, values)
}

fn int64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    pare::ir::tensor::from_i64(name, dims, values)
}

/// A model at `opset` reading float `x` of `dims`; outputs are (name, type).
fn synthetic(
    name: &str,
    opset: i64,
    dims: &[i64],
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    outputs: &[(&str, DataType)],
) -> Case {
    let ir_version = pare::ir::opset::min_ir_version(opset);
    // IR 3 lists every initializer as a graph input too.
    let listed = initializers.iter().filter(|_| ir_version < 4).map(|t| {
        let dtype = DataType::from_code(t.data_type.unwrap_or(0)).expect("a known type");
        tensor_type(t.name.as_deref().unwrap_or(""), dtype, Some(&t.dims))
    });
    let inputs = std::iter::once(tensor_type("x", DataType::Float, Some(dims))).chain(listed).collect();
    let model = ModelProto {
        ir_version: Some(ir_version),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(GraphProto {
            name: Some(name.into()),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: outputs.iter().map(|(name, dtype)| tensor_type(name, *dtype, None)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let fixed = vec![("x".to_string(), dims.to_vec())];
    let inputs = random_inputs(&model, &fixed);
    let model = with_output_shapes(model, &fixed, &inputs);
    Case { name: name.into(), model, fixed, inputs, tract: false }
}

/// The model with its graph outputs declared with the shapes ONNX Runtime
/// gives them (the checker wants them declared).
fn with_output_shapes(mut model: ModelProto, fixed: &[(String, Vec<i64>)], inputs: &[NamedTensor]) -> ModelProto {
    let ort = RuntimeChoice::Ort(GraphOptimization::None);
    let mut runtime = Runtime::from_model(&model, "synthetic", ort, fixed).expect("ONNX Runtime loads the original");
    let outputs = runtime.run(inputs).expect("ONNX Runtime runs the original");
    for (declared, output) in model.graph.as_mut().expect("a graph").output.iter_mut().zip(outputs) {
        let dims: Vec<i64> = output.tensor.shape().iter().map(|&d| d as i64).collect();
        if let Some(type_proto::Value::TensorType(tensor)) = declared.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            tensor.shape = Some(pare::ir::Shape::known(&dims).to_proto());
        }
    }
    model
}

fn rewrite_cases() -> Vec<Case> {
    use DataType::{Float, Int64};
    vec![
        synthetic(
            "softmax_axes_op9",
            9,
            &[2, 3, 4, 5],
            vec![
                node("Softmax", &["x"], &["a"], vec![]),
                node("LogSoftmax", &["x"], &["b"], vec![int("axis", 2)]),
                node("Hardmax", &["x"], &["c"], vec![int("axis", 3)]),
            ],
            vec![],
            &[("a", Float), ("b", Float), ("c", Float)],
        ),
        synthetic(
            "slice_topk_op9",
            9,
            &[4, 6],
            vec![
                node(
                    "Slice",
                    &["x"],
                    &["s"],
                    vec![ints("starts", &[1, 0]), ints("ends", &[3, -1]), ints("axes", &[0, 1])],
                ),
                node("TopK", &["s"], &["v", "i"], vec![int("k", 2)]),
            ],
            vec![],
            &[("v", Float), ("i", Int64)],
        ),
        synthetic(
            "clip_pad_op9",
            9,
            &[1, 2, 3, 3],
            vec![
                node("Clip", &["x"], &["c"], vec![float("min", 0.2), float("max", 0.7)]),
                node("Pad", &["c"], &["p"], vec![ints("pads", &[0, 0, 1, 2, 0, 0, 2, 1]), float("value", 0.25)]),
                node("Pad", &["x"], &["r"], vec![ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), string("mode", "reflect")]),
            ],
            vec![],
            &[("p", Float), ("r", Float)],
        ),
        synthetic(
            "axes_split_op11",
            11,
            &[3, 4],
            vec![
                node("Unsqueeze", &["x"], &["u"], vec![ints("axes", &[0])]),
                node("ReduceSum", &["u"], &["r"], vec![ints("axes", &[2])]),
                node("Squeeze", &["r"], &["q"], vec![ints("axes", &[0, 2])]),
                node("ReduceMean", &["u"], &["m"], vec![ints("axes", &[1])]),
                node("ReduceMax", &["u"], &["mx"], vec![ints("axes", &[-1]), int("keepdims", 0)]),
                node("ReduceLogSumExp", &["x"], &["l"], vec![]),
                node("Split", &["x"], &["a", "b"], vec![int("axis", 1), ints("split", &[1, 3])]),
                node("Split", &["x"], &["c", "d"], vec![int("axis", 1)]),
            ],
            vec![],
            &[
                ("q", Float),
                ("m", Float),
                ("mx", Float),
                ("l", Float),
                ("a", Float),
                ("b", Float),
                ("c", Float),
                ("d", Float),
            ],
        ),
        synthetic(
            "dropout_batchnorm_op7",
            7,
            &[1, 2, 3, 3],
            vec![
                node("Dropout", &["x"], &["d", "mask"], vec![float("ratio", 0.3)]),
                node(
                    "BatchNormalization",
                    &["d", "s", "b", "m", "v"],
                    &["y"],
                    vec![int("spatial", 1), float("epsilon", 1e-3)],
                ),
            ],
            vec![
                floats_tensor("s", &[2], &[0.5, 2.0]),
                floats_tensor("b", &[2], &[0.1, -0.2]),
                floats_tensor("m", &[2], &[0.3, 0.6]),
                floats_tensor("v", &[2], &[1.5, 0.25]),
            ],
            &[("y", Float)],
        ),
        synthetic(
            "upsample_op7",
            7,
            &[1, 2, 3, 3],
            vec![node("Upsample", &["x"], &["y"], vec![floats("scales", &[1.0, 1.0, 2.0, 3.0])])],
            vec![],
            &[("y", Float)],
        ),
        synthetic(
            "upsample_linear_op9",
            9,
            &[1, 2, 3, 3],
            vec![node("Upsample", &["x", "scales"], &["y"], vec![string("mode", "linear")])],
            vec![floats_tensor("scales", &[4], &[1.0, 1.0, 2.0, 2.0])],
            &[("y", Float)],
        ),
        synthetic(
            "resize_op10",
            10,
            &[1, 1, 5, 5],
            vec![
                node("Resize", &["x", "down"], &["a"], vec![]),
                node("Resize", &["x", "up"], &["b"], vec![string("mode", "linear")]),
                node("Resize", &["x", "odd"], &["c"], vec![]),
            ],
            vec![
                floats_tensor("down", &[4], &[1.0, 1.0, 0.6, 0.6]),
                floats_tensor("up", &[4], &[1.0, 1.0, 2.0, 2.0]),
                floats_tensor("odd", &[4], &[1.0, 1.0, 1.5, 2.5]),
            ],
            &[("a", Float), ("b", Float), ("c", Float)],
        ),
        synthetic(
            "scatter_op9",
            9,
            &[3, 3],
            vec![node("Scatter", &["x", "i", "u"], &["y"], vec![int("axis", 1)])],
            vec![int64_tensor("i", &[1, 3], &[2, 0, 1]), floats_tensor("u", &[1, 3], &[1.0, 2.0, 3.0])],
            &[("y", Float)],
        ),
        synthetic(
            "experimental_op8",
            8,
            &[1, 3, 2, 2],
            vec![
                node("ImageScaler", &["x"], &["a"], vec![float("scale", 0.5), floats("bias", &[1.0, 2.0, 3.0])]),
                node("Scale", &["a"], &["b"], vec![float("scale", 2.0)]),
                node("Affine", &["b"], &["c"], vec![float("alpha", 0.5), float("beta", -1.0)]),
                node("ScaledTanh", &["c"], &["d"], vec![float("alpha", 1.5), float("beta", 0.7)]),
                node("ParametricSoftplus", &["d"], &["e"], vec![float("alpha", 1.5), float("beta", 0.5)]),
                node("DynamicSlice", &["e", "starts", "ends", "axes"], &["y"], vec![]),
            ],
            vec![
                int64_tensor("starts", &[1], &[1]),
                int64_tensor("ends", &[1], &[3]),
                int64_tensor("axes", &[1], &[1]),
            ],
            &[("y", Float)],
        ),
        synthetic(
            "experimental_crop_mvn_op8",
            8,
            &[1, 2, 5, 6],
            vec![
                node("Crop", &["x"], &["a"], vec![ints("border", &[1, 2, 0, 1])]),
                node("Crop", &["x"], &["b"], vec![ints("border", &[2, 1, 1, 1]), ints("scale", &[3, 2])]),
                node("MeanVarianceNormalization", &["x"], &["c"], vec![]),
                node("MeanVarianceNormalization", &["x"], &["d"], vec![int("across_channels", 1)]),
            ],
            vec![],
            &[("a", Float), ("b", Float), ("c", Float), ("d", Float)],
        ),
        synthetic(
            "roi_align_op10",
            10,
            &[1, 1, 6, 6],
            vec![node(
                "RoiAlign",
                &["x", "rois", "index"],
                &["y"],
                vec![int("output_height", 2), int("output_width", 3)],
            )],
            vec![
                floats_tensor("rois", &[2, 4], &[0.0, 0.0, 3.0, 3.0, 1.0, 0.5, 5.0, 4.5]),
                int64_tensor("index", &[2], &[0, 0]),
            ],
            &[("y", Float)],
        ),
        synthetic(
            "grid_sample_op16",
            16,
            &[1, 1, 4, 4],
            vec![node("GridSample", &["x", "grid"], &["y"], vec![string("mode", "bicubic")])],
            vec![floats_tensor("grid", &[1, 2, 2, 2], &[0.0, 0.0, 0.5, 0.5, -0.5, 0.2, 0.1, 0.9])],
            &[("y", Float)],
        ),
        synthetic("dft_op17", 17, &[1, 8, 1], vec![node("DFT", &["x"], &["y"], vec![])], vec![], &[("y", Float)]),
        synthetic(
            "group_normalization_op18",
            18,
            &[1, 4, 2, 2],
            vec![node("GroupNormalization", &["x", "s", "b"], &["y"], vec![int("num_groups", 2)])],
            vec![floats_tensor("s", &[2], &[0.5, 2.0]), floats_tensor("b", &[2], &[0.1, -0.3])],
            &[("y", Float)],
        ),
    ]
}

#[test]
fn each_rewrite_computes_the_same_in_onnx_runtime() {
    let Some(python) = python() else {
        eprintln!("note: PARE_PYTHON unset, the per-rewrite ONNX Runtime checks are skipped");
        return;
    };
    let failures = rewrite_cases().iter().flat_map(|case| check_case(case, Some(&python))).collect();
    assert_no_failures(failures);
}
