//! Unit tests: small graphs built as ModelProtos, imported, inferred, and
//! checked for exact shapes and dtypes.

use super::{infer, parse_input_shape};
use crate::ir::attribute::{self, float, int, ints, string};
use crate::ir::dtype::DataType;
use crate::ir::graph::Model;
use crate::ir::tensor::{from_f32, from_i64};
use crate::ir::{import, IrError};
use crate::onnx::proto::{
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A shape spec such as `N,3,32,32`: numbers are known, `?` unknown, other text a symbol.
fn shape_proto(spec: &str) -> TensorShapeProto {
    let dim = spec
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| tensor_shape_proto::Dimension {
            value: match part.parse::<i64>() {
                Ok(size) => Some(tensor_shape_proto::dimension::Value::DimValue(size)),
                Err(_) if part == "?" => None,
                Err(_) => Some(tensor_shape_proto::dimension::Value::DimParam(part.to_string())),
            },
            denotation: None,
        })
        .collect();
    TensorShapeProto { dim }
}

fn value_info(name: &str, dtype: DataType, spec: Option<&str>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype.code()),
                shape: spec.map(shape_proto),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds a one-graph model node by node.
struct TestModel {
    opset: i64,
    ir_version: i64,
    graph: GraphProto,
}

impl TestModel {
    fn new(opset: i64) -> TestModel {
        TestModel { opset, ir_version: 8, graph: GraphProto::default() }
    }

    fn ir_version(mut self, version: i64) -> TestModel {
        self.ir_version = version;
        self
    }

    /// A float graph input.
    fn input(self, name: &str, spec: &str) -> TestModel {
        self.typed_input(name, DataType::Float, spec)
    }

    fn typed_input(mut self, name: &str, dtype: DataType, spec: &str) -> TestModel {
        self.graph.input.push(value_info(name, dtype, Some(spec)));
        self
    }

    /// A float initializer of zeros.
    fn weight(mut self, name: &str, dims: &[i64]) -> TestModel {
        let count = dims.iter().product::<i64>() as usize;
        self.graph.initializer.push(from_f32(name, dims, &vec![0.0; count]));
        self
    }

    fn floats(mut self, name: &str, values: &[f32]) -> TestModel {
        self.graph.initializer.push(from_f32(name, &[values.len() as i64], values));
        self
    }

    fn int64s(mut self, name: &str, values: &[i64]) -> TestModel {
        self.graph.initializer.push(from_i64(name, &[values.len() as i64], values));
        self
    }

    fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> TestModel {
        self.graph.node.push(NodeProto {
            op_type: Some(op.to_string()),
            name: Some(format!("{op}_{}", self.graph.node.len())),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    fn declare(mut self, name: &str, dtype: DataType, spec: &str) -> TestModel {
        self.graph.value_info.push(value_info(name, dtype, Some(spec)));
        self
    }

    fn output(mut self, name: &str) -> TestModel {
        self.graph.output.push(ValueInfoProto { name: Some(name.to_string()), ..Default::default() });
        self
    }

    fn proto(self) -> ModelProto {
        ModelProto {
            ir_version: Some(self.ir_version),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }],
            graph: Some(self.graph),
            ..Default::default()
        }
    }

    fn try_infer(self, fixed: &[(&str, &[i64])]) -> Result<Model, IrError> {
        let mut model = import(self.proto()).expect("test model imports");
        let fixed: Vec<(String, Vec<i64>)> = fixed.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect();
        infer(&mut model, &fixed)?;
        Ok(model)
    }

    fn infer(self) -> Model {
        self.try_infer(&[]).expect("inference succeeds")
    }

    fn infer_fixed(self, fixed: &[(&str, &[i64])]) -> Model {
        self.try_infer(fixed).expect("inference succeeds")
    }
}

/// The inferred shape of a value as text (`[N,3,4]`), or `none`.
fn shape(model: &Model, name: &str) -> String {
    let id = model.graph.value_id(name).unwrap_or_else(|| panic!("no value {name}"));
    model.graph.value(id).shape.as_ref().map_or("none".to_string(), |s| s.to_string())
}

fn dtype(model: &Model, name: &str) -> Option<DataType> {
    model.graph.value(model.graph.value_id(name).unwrap()).dtype
}

#[test]
fn conv_with_pads_strides_dilations_and_groups() {
    let model = TestModel::new(13)
        .input("x", "N,8,32,32")
        .weight("w", &[16, 4, 3, 3])
        .weight("b", &[16])
        .node(
            "Conv",
            &["x", "w", "b"],
            &["dilated"],
            vec![int("group", 2), ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2]), ints("dilations", &[2, 2])],
        )
        .node("Conv", &["x", "w"], &["asymmetric"], vec![int("group", 2), ints("pads", &[0, 1, 2, 3])])
        .node(
            "Conv",
            &["x", "w"],
            &["same"],
            vec![int("group", 2), string("auto_pad", "SAME_UPPER"), ints("strides", &[3, 3])],
        )
        .node(
            "Conv",
            &["x", "w"],
            &["valid"],
            vec![int("group", 2), string("auto_pad", "VALID"), ints("strides", &[2, 2])],
        )
        .infer();
    assert_eq!(shape(&model, "dilated"), "[N,16,15,15]");
    assert_eq!(shape(&model, "asymmetric"), "[N,16,32,34]");
    assert_eq!(shape(&model, "same"), "[N,16,11,11]");
    assert_eq!(shape(&model, "valid"), "[N,16,15,15]");
    assert_eq!(dtype(&model, "dilated"), Some(DataType::Float));
}

#[test]
fn conv_keeps_symbolic_spatial_dims_only_where_provably_equal() {
    let model = TestModel::new(13)
        .input("x", "N,3,H,W")
        .weight("w3", &[8, 3, 3, 3])
        .weight("w1", &[8, 8, 1, 1])
        .node("Conv", &["x", "w3"], &["same_size"], vec![ints("pads", &[1, 1, 1, 1])])
        .node("Conv", &["same_size", "w1"], &["pointwise"], vec![])
        .node("Conv", &["x", "w3"], &["strided"], vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])])
        .infer();
    assert_eq!(shape(&model, "same_size"), "[N,8,H,W]");
    assert_eq!(shape(&model, "pointwise"), "[N,8,H,W]");
    assert_eq!(shape(&model, "strided"), "[N,8,?,?]");
}

#[test]
fn conv_transpose_output_padding_output_shape_and_auto_pad() {
    let model = TestModel::new(11)
        .input("x", "1,8,10,10")
        .weight("w", &[8, 4, 4, 4])
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["up"],
            vec![int("group", 2), ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 1])],
        )
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["padded"],
            vec![
                int("group", 2),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                ints("output_padding", &[1, 0]),
            ],
        )
        .node(
            "ConvTranspose",
            &["x", "w"],
            &["explicit"],
            vec![ints("strides", &[2, 2]), ints("output_shape", &[21, 22])],
        )
        .node("ConvTranspose", &["x", "w"], &["same"], vec![ints("strides", &[3, 3]), string("auto_pad", "SAME_UPPER")])
        .node("ConvTranspose", &["x", "w"], &["dilated"], vec![ints("dilations", &[2, 2])])
        .infer();
    assert_eq!(shape(&model, "up"), "[1,8,20,20]");
    assert_eq!(shape(&model, "padded"), "[1,8,21,20]");
    assert_eq!(shape(&model, "explicit"), "[1,4,21,22]");
    assert_eq!(shape(&model, "same"), "[1,4,30,30]");
    // (10 - 1) + (4 - 1) * 2 + 1
    assert_eq!(shape(&model, "dilated"), "[1,4,16,16]");
}

#[test]
fn pools_with_ceil_mode_and_auto_pad() {
    let model = TestModel::new(12)
        .input("x", "N,4,32,32")
        .input("odd", "1,4,5,7")
        .node("MaxPool", &["x"], &["floor", "indices"], vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2])])
        .node(
            "MaxPool",
            &["x"],
            &["ceil"],
            vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), int("ceil_mode", 1)],
        )
        // 5 + 2 pad, kernel 2, stride 2: ceil gives 4 windows but the last would start in the right padding.
        .node(
            "MaxPool",
            &["odd"],
            &["last_window_dropped"],
            vec![
                ints("kernel_shape", &[2, 2]),
                ints("strides", &[2, 2]),
                ints("pads", &[1, 1, 1, 1]),
                int("ceil_mode", 1),
            ],
        )
        .node(
            "AveragePool",
            &["odd"],
            &["same_upper"],
            vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), string("auto_pad", "SAME_UPPER")],
        )
        .node(
            "AveragePool",
            &["odd"],
            &["same_lower"],
            vec![ints("kernel_shape", &[2, 2]), string("auto_pad", "SAME_LOWER")],
        )
        .node(
            "MaxPool",
            &["odd"],
            &["valid"],
            vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), string("auto_pad", "VALID")],
        )
        .node("MaxPool", &["x"], &["dilated"], vec![ints("kernel_shape", &[3, 3]), ints("dilations", &[2, 2])])
        .node("GlobalAveragePool", &["x"], &["global"], vec![])
        .infer();
    assert_eq!(shape(&model, "floor"), "[N,4,15,15]");
    assert_eq!(shape(&model, "indices"), "[N,4,15,15]");
    assert_eq!(dtype(&model, "indices"), Some(DataType::Int64));
    assert_eq!(shape(&model, "ceil"), "[N,4,16,16]");
    assert_eq!(shape(&model, "last_window_dropped"), "[1,4,3,4]");
    assert_eq!(shape(&model, "same_upper"), "[1,4,3,4]");
    assert_eq!(shape(&model, "same_lower"), "[1,4,5,7]");
    assert_eq!(shape(&model, "valid"), "[1,4,2,3]");
    assert_eq!(shape(&model, "dilated"), "[N,4,28,28]");
    assert_eq!(shape(&model, "global"), "[N,4,1,1]");
}

#[test]
fn gemm_transposes_and_matmul_broadcasting() {
    let model = TestModel::new(13)
        .input("features", "N,512")
        .weight("fc", &[1000, 512])
        .weight("a_t", &[512, 7])
        .input("batched", "2,1,3,4")
        .input("stack", "5,4,6")
        .input("vector", "4")
        .input("matrix", "3,4")
        .node("Gemm", &["features", "fc"], &["logits"], vec![int("transB", 1)])
        .node("Gemm", &["a_t", "a_t"], &["gram"], vec![int("transA", 1)])
        .node("MatMul", &["batched", "stack"], &["broadcast"], vec![])
        .node("MatMul", &["vector", "stack"], &["vector_left"], vec![])
        .node("MatMul", &["matrix", "vector"], &["vector_right"], vec![])
        .node("MatMul", &["vector", "vector"], &["dot"], vec![])
        .infer();
    assert_eq!(shape(&model, "logits"), "[N,1000]");
    assert_eq!(shape(&model, "gram"), "[7,7]");
    assert_eq!(shape(&model, "broadcast"), "[2,5,3,6]");
    assert_eq!(shape(&model, "vector_left"), "[5,6]");
    assert_eq!(shape(&model, "vector_right"), "[3]");
    assert_eq!(shape(&model, "dot"), "[]");
}

#[test]
fn reshape_with_zero_and_minus_one() {
    let model = TestModel::new(14)
        .input("x", "N,3,4,5")
        .input("fixed", "2,3,4,5")
        .int64s("keep_batch", &[0, -1])
        .int64s("rows_of_20", &[-1, 20])
        .int64s("zero_sized", &[0, 0, -1])
        .node("Reshape", &["x", "keep_batch"], &["flat"], vec![])
        .node("Reshape", &["fixed", "rows_of_20"], &["rows"], vec![])
        .node("Reshape", &["x", "rows_of_20"], &["symbolic_rows"], vec![])
        .node("Reshape", &["fixed", "zero_sized"], &["copied"], vec![])
        .infer();
    assert_eq!(shape(&model, "flat"), "[N,60]");
    assert_eq!(shape(&model, "rows"), "[6,20]");
    assert_eq!(shape(&model, "symbolic_rows"), "[?,20]");
    assert_eq!(shape(&model, "copied"), "[2,3,20]");
}

#[test]
fn reshape_allowzero_keeps_literal_zero() {
    let model = TestModel::new(14)
        .input("x", "0,4")
        .int64s("target", &[0, 4])
        .node("Reshape", &["x", "target"], &["literal"], vec![int("allowzero", 1)])
        .infer();
    assert_eq!(shape(&model, "literal"), "[0,4]");
}

#[test]
fn squeeze_and_unsqueeze_at_opset_11_and_13() {
    let old = TestModel::new(11)
        .input("x", "N,1,8,1")
        .node("Squeeze", &["x"], &["squeezed"], vec![ints("axes", &[1, -1])])
        .node("Unsqueeze", &["squeezed"], &["unsqueezed"], vec![ints("axes", &[0, -1])])
        .infer();
    assert_eq!(shape(&old, "squeezed"), "[N,8]");
    assert_eq!(shape(&old, "unsqueezed"), "[1,N,8,1]");

    let new = TestModel::new(13)
        .input("x", "N,1,8,1")
        .int64s("squeeze_axes", &[1, -1])
        .int64s("unsqueeze_axes", &[0, -1])
        .node("Squeeze", &["x", "squeeze_axes"], &["squeezed"], vec![])
        .node("Unsqueeze", &["squeezed", "unsqueeze_axes"], &["unsqueezed"], vec![])
        .node("Squeeze", &["x"], &["all_ones_ambiguous"], vec![])
        .infer();
    assert_eq!(shape(&new, "squeezed"), "[N,8]");
    assert_eq!(shape(&new, "unsqueezed"), "[1,N,8,1]");
    // N might be 1: which dims go is unknown.
    assert_eq!(shape(&new, "all_ones_ambiguous"), "none");
}

#[test]
fn slice_at_opset_9_and_13() {
    let old = TestModel::new(9)
        .input("x", "N,10,20,30")
        .node(
            "Slice",
            &["x"],
            &["sliced"],
            vec![ints("starts", &[1, -5, 0]), ints("ends", &[1000, -1, 10]), ints("axes", &[1, 2, -1])],
        )
        .infer();
    assert_eq!(shape(&old, "sliced"), "[N,9,4,10]");

    let new = TestModel::new(13)
        .input("x", "N,10,20,30")
        .int64s("starts", &[1, -1, 0])
        .int64s("ends", &[i64::MAX, -1000, 30])
        .int64s("axes", &[1, 2, 3])
        .int64s("steps", &[2, -3, 4])
        .node("Slice", &["x", "starts", "ends", "axes", "steps"], &["stepped"], vec![])
        .int64s("whole_start", &[0])
        .int64s("whole_end", &[i64::MAX])
        .int64s("batch_axis", &[0])
        .node("Slice", &["x", "whole_start", "whole_end", "batch_axis"], &["whole_batch"], vec![])
        .infer();
    // axis 1: 1..10 step 2 -> 5; axis 2: 19 down to 0 step -3 -> 7; axis 3: 0..30 step 4 -> 8.
    assert_eq!(shape(&new, "stepped"), "[N,5,7,8]");
    assert_eq!(shape(&new, "whole_batch"), "[N,10,20,30]");
}

#[test]
fn resize_with_scales_and_with_sizes() {
    let model = TestModel::new(13)
        .input("x", "1,3,15,20")
        .floats("scales", &[1.0, 1.0, 2.0, 1.5])
        .int64s("sizes", &[1, 3, 64, 48])
        .node("Resize", &["x", "", "scales"], &["by_scales"], vec![string("mode", "nearest")])
        .node("Resize", &["x", "", "", "sizes"], &["by_sizes"], vec![])
        .infer();
    assert_eq!(shape(&model, "by_scales"), "[1,3,30,30]");
    assert_eq!(shape(&model, "by_sizes"), "[1,3,64,48]");

    let opset11 = TestModel::new(11)
        .input("x", "1,3,15,20")
        .floats("roi", &[])
        .floats("no_scales", &[])
        .int64s("sizes", &[1, 3, 64, 48])
        .floats("scales", &[1.0, 1.0, 0.5, 0.5])
        .node("Resize", &["x", "roi", "no_scales", "sizes"], &["by_sizes"], vec![])
        .node("Resize", &["x", "roi", "scales"], &["by_scales"], vec![])
        .infer();
    assert_eq!(shape(&opset11, "by_sizes"), "[1,3,64,48]");
    assert_eq!(shape(&opset11, "by_scales"), "[1,3,7,10]");

    let opset10 = TestModel::new(10)
        .input("x", "1,3,15,20")
        .floats("scales", &[1.0, 1.0, 2.0, 2.0])
        .node("Resize", &["x", "scales"], &["doubled"], vec![])
        .node("Upsample", &["x", "scales"], &["upsampled"], vec![])
        .infer();
    assert_eq!(shape(&opset10, "doubled"), "[1,3,30,40]");

    let opset19 = TestModel::new(19)
        .input("x", "1,3,15,20")
        .floats("scales", &[2.0, 0.5])
        .int64s("sizes", &[30, 30])
        .node("Resize", &["x", "", "scales"], &["axes_scales"], vec![ints("axes", &[2, 3])])
        .node(
            "Resize",
            &["x", "", "", "sizes"],
            &["not_larger"],
            vec![ints("axes", &[-2, -1]), string("keep_aspect_ratio_policy", "not_larger")],
        )
        .infer();
    assert_eq!(shape(&opset19, "axes_scales"), "[1,3,30,10]");
    // scale = min(30/15, 30/20) = 1.5
    assert_eq!(shape(&opset19, "not_larger"), "[1,3,23,30]");
}

#[test]
fn split_at_opset_11_13_and_18() {
    let old = TestModel::new(11)
        .input("x", "N,10,4")
        .node("Split", &["x"], &["a", "b"], vec![int("axis", 1), ints("split", &[3, 7])])
        .node("Split", &["x"], &["even_a", "even_b"], vec![int("axis", -1)])
        .infer();
    assert_eq!(shape(&old, "a"), "[N,3,4]");
    assert_eq!(shape(&old, "b"), "[N,7,4]");
    assert_eq!(shape(&old, "even_b"), "[N,10,2]");

    let new = TestModel::new(13)
        .input("x", "N,10,4")
        .int64s("split", &[2, 8])
        .node("Split", &["x", "split"], &["a", "b"], vec![int("axis", 1)])
        .infer();
    assert_eq!(shape(&new, "a"), "[N,2,4]");
    assert_eq!(shape(&new, "b"), "[N,8,4]");

    let newest = TestModel::new(18)
        .input("x", "N,10,4")
        .node("Split", &["x"], &["a", "b", "c"], vec![int("axis", 1), int("num_outputs", 3)])
        .infer();
    assert_eq!(shape(&newest, "a"), "[N,4,4]");
    assert_eq!(shape(&newest, "c"), "[N,2,4]");
}

/// The PP-OCR / PyTorch pattern: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
fn shape_chain(opset: i64) -> TestModel {
    let unsqueeze = |model: TestModel, input: &str, output: &str| {
        if opset >= 13 {
            model.node("Unsqueeze", &[input, "axes0"], &[output], vec![])
        } else {
            model.node("Unsqueeze", &[input], &[output], vec![ints("axes", &[0])])
        }
    };
    let model = TestModel::new(opset)
        .input("x", "N,3,H,W")
        .int64s("axes0", &[0])
        .node("Shape", &["x"], &["shape"], vec![])
        .node("Constant", &[], &["zero"], vec![attribute::tensor("value", from_i64("zero", &[], &[0]))])
        .node("Gather", &["shape", "zero"], &["batch"], vec![int("axis", 0)]);
    let model = unsqueeze(model, "batch", "batch_1d");
    model
        .node("Constant", &[], &["minus_one"], vec![ints("value_ints", &[-1])])
        .node("Concat", &["batch_1d", "minus_one"], &["target"], vec![int("axis", 0)])
        .node("Reshape", &["x", "target"], &["flat"], vec![])
        .output("flat")
}

#[test]
fn shape_chain_with_symbolic_batch() {
    for opset in [11, 13] {
        let model = shape_chain(opset).infer();
        assert_eq!(shape(&model, "shape"), "[4]");
        assert_eq!(shape(&model, "batch"), "[]");
        assert_eq!(shape(&model, "target"), "[2]");
        assert_eq!(shape(&model, "flat"), "[N,?]", "opset {opset}");

        let fixed = shape_chain(opset).infer_fixed(&[("x", &[2, 3, 8, 16])]);
        assert_eq!(shape(&fixed, "flat"), "[2,384]", "opset {opset}");
    }
    // With only H and W known, the flattened size follows from cancelling N.
    let partly = TestModel::new(13)
        .input("x", "N,3,8,16")
        .node("Shape", &["x"], &["shape"], vec![])
        .int64s("first", &[0])
        .int64s("one", &[1])
        .node("Slice", &["shape", "first", "one"], &["batch_1d"], vec![])
        .int64s("minus_one", &[-1])
        .node("Concat", &["batch_1d", "minus_one"], &["target"], vec![int("axis", 0)])
        .node("Reshape", &["x", "target"], &["flat"], vec![])
        .infer();
    assert_eq!(shape(&partly, "flat"), "[N,384]");
}

#[test]
fn shape_arithmetic_folds_through_cast_div_and_constant_of_shape() {
    let model = TestModel::new(15)
        .input("x", "1,3,48,W")
        .node("Shape", &["x"], &["shape"], vec![])
        .int64s("hw", &[2, 3])
        .node("Gather", &["shape", "hw"], &["spatial"], vec![int("axis", 0)])
        .node("Cast", &["spatial"], &["spatial_f"], vec![int("to", DataType::Float.code() as i64)])
        .floats("half", &[0.5])
        .node("Mul", &["spatial_f", "half"], &["halved_f"], vec![])
        .node("Cast", &["halved_f"], &["halved"], vec![int("to", DataType::Int64.code() as i64)])
        .node("Shape", &["x"], &["tail"], vec![int("start", -2)])
        .node("ConstantOfShape", &["tail"], &["zeros"], vec![])
        .infer_fixed(&[("x", &[1, 3, 48, 320])]);
    assert_eq!(shape(&model, "halved"), "[2]");
    assert_eq!(shape(&model, "tail"), "[2]");
    assert_eq!(shape(&model, "zeros"), "[48,320]");
    assert_eq!(dtype(&model, "zeros"), Some(DataType::Float));
}

#[test]
fn resize_sizes_from_a_shape_computation() {
    let model = TestModel::new(13)
        .input("x", "1,8,H,W")
        .input("skip", "1,8,H2,W2")
        .node("Shape", &["skip"], &["skip_shape"], vec![])
        .int64s("two", &[2])
        .int64s("four", &[4])
        .int64s("zero", &[0])
        .node("Slice", &["skip_shape", "two", "four", "zero"], &["skip_hw"], vec![])
        .node("Shape", &["x"], &["x_shape"], vec![])
        .node("Slice", &["x_shape", "zero", "two", "zero"], &["x_nc"], vec![])
        .node("Concat", &["x_nc", "skip_hw"], &["sizes"], vec![int("axis", 0)])
        .node("Resize", &["x", "", "", "sizes"], &["up"], vec![])
        .infer_fixed(&[("x", &[1, 8, 10, 10]), ("skip", &[1, 8, 20, 20])]);
    assert_eq!(shape(&model, "up"), "[1,8,20,20]");
    let symbolic = TestModel::new(13)
        .input("x", "1,8,H,W")
        .input("skip", "1,8,H2,W2")
        .node("Shape", &["skip"], &["skip_shape"], vec![])
        .node("Resize", &["x", "", "", "skip_shape"], &["up"], vec![])
        .infer();
    assert_eq!(shape(&symbolic, "up"), "[1,8,H2,W2]");
}

#[test]
fn clip_as_attributes_and_as_inputs() {
    let old = TestModel::new(9)
        .input("x", "N,4")
        .node("Clip", &["x"], &["relu6"], vec![float("min", 0.0), float("max", 6.0)])
        .infer();
    assert_eq!(shape(&old, "relu6"), "[N,4]");
    let new = TestModel::new(11)
        .input("x", "N,4")
        .floats("low", &[0.0])
        .floats("high", &[6.0])
        .node("Clip", &["x", "low", "high"], &["relu6"], vec![])
        .node("Clip", &["x", "", "high"], &["capped"], vec![])
        .infer();
    assert_eq!(shape(&new, "relu6"), "[N,4]");
    assert_eq!(shape(&new, "capped"), "[N,4]");
    assert_eq!(dtype(&new, "capped"), Some(DataType::Float));
}

#[test]
fn quantize_linear_output_dtypes() {
    let int8_zero = TensorProto {
        dims: vec![],
        data_type: Some(DataType::Int8.code()),
        int32_data: vec![0],
        name: Some("zp".into()),
        ..Default::default()
    };
    let mut model = TestModel::new(13)
        .input("x", "N,3,8,8")
        .floats("scale", &[0.1])
        .node("QuantizeLinear", &["x", "scale"], &["q_default"], vec![])
        .node("QuantizeLinear", &["x", "scale", "zp"], &["q_signed"], vec![])
        .node("DequantizeLinear", &["q_signed", "scale", "zp"], &["dq"], vec![]);
    model.graph.initializer.push(int8_zero);
    let model = model.infer();
    assert_eq!(dtype(&model, "q_default"), Some(DataType::Uint8));
    assert_eq!(dtype(&model, "q_signed"), Some(DataType::Int8));
    assert_eq!(dtype(&model, "dq"), Some(DataType::Float));
    assert_eq!(shape(&model, "dq"), "[N,3,8,8]");

    let opset21 = TestModel::new(21)
        .input("x", "4,32")
        .floats("scale", &[0.1])
        .node("QuantizeLinear", &["x", "scale"], &["q4"], vec![int("output_dtype", DataType::Int4.code() as i64)])
        .infer();
    assert_eq!(dtype(&opset21, "q4"), Some(DataType::Int4));
}

#[test]
fn symbolic_batch_flows_through_a_block() {
    let model = TestModel::new(13)
        .input("x", "N,3,32,32")
        .weight("w", &[16, 3, 3, 3])
        .weight("scale", &[16])
        .node("Conv", &["x", "w"], &["conv"], vec![ints("pads", &[1, 1, 1, 1])])
        .node("BatchNormalization", &["conv", "scale", "scale", "scale", "scale"], &["bn"], vec![])
        .node("Relu", &["bn"], &["relu"], vec![])
        .node("Add", &["relu", "conv"], &["sum"], vec![])
        .node("Sigmoid", &["sum"], &["gate"], vec![])
        .node("Mul", &["sum", "gate"], &["swish"], vec![])
        .node("GlobalAveragePool", &["swish"], &["pooled"], vec![])
        .node("Flatten", &["pooled"], &["flat"], vec![])
        .node("Softmax", &["flat"], &["prob"], vec![int("axis", 1)])
        .node("Equal", &["flat", "flat"], &["same"], vec![])
        .output("prob")
        .infer();
    assert_eq!(shape(&model, "swish"), "[N,16,32,32]");
    assert_eq!(shape(&model, "flat"), "[N,16]");
    assert_eq!(shape(&model, "prob"), "[N,16]");
    assert_eq!(dtype(&model, "same"), Some(DataType::Bool));
    let fixed = TestModel::new(13)
        .input("x", "N,3,32,32")
        .weight("w", &[16, 3, 3, 3])
        .node("Conv", &["x", "w"], &["conv"], vec![])
        .infer_fixed(&[("x", &[4, 3, 32, 32])]);
    assert_eq!(shape(&fixed, "conv"), "[4,16,30,30]");
}

#[test]
fn fixed_symbols_replace_declared_ones_and_computed_dims_win() {
    let model = TestModel::new(13)
        .input("x", "N,3,8,8")
        .node("Relu", &["x"], &["relu"], vec![])
        .node("Mystery", &["relu"], &["opaque"], vec![])
        .declare("relu", DataType::Float, "N,3,?,8")
        .declare("opaque", DataType::Float, "N,5")
        .infer_fixed(&[("x", &[2, 3, 8, 8])]);
    assert_eq!(shape(&model, "relu"), "[2,3,8,8]");
    assert_eq!(shape(&model, "opaque"), "[2,5]");
    assert_eq!(dtype(&model, "opaque"), Some(DataType::Float));
}

#[test]
fn unknown_and_inconsistent_nodes_never_fail() {
    let model = TestModel::new(13)
        .input("x", "N,3,8,8")
        .weight("bad_w", &[16, 5, 3])
        .int64s("bad_target", &[7, -1])
        .node("Conv", &["x", "bad_w"], &["conv"], vec![ints("pads", &[1, 1])])
        .node("Reshape", &["x", "bad_target"], &["reshaped"], vec![])
        .node("Gather", &["x", "bad_target"], &["gathered"], vec![int("axis", 9)])
        .node("Slice", &["x", "bad_target", "bad_target"], &["sliced"], vec![])
        .node("Concat", &["x", "bad_w"], &["joined"], vec![int("axis", 1)])
        .node("Unknown", &["x"], &["mystery"], vec![])
        .node("Relu", &["mystery"], &["after"], vec![])
        .infer();
    assert_eq!(shape(&model, "reshaped"), "[7,?]");
    assert_eq!(shape(&model, "gathered"), "none");
    assert_eq!(shape(&model, "mystery"), "none");
    assert_eq!(shape(&model, "after"), "none");
}

#[test]
fn huge_and_degenerate_constants_are_not_folded() {
    let model = TestModel::new(13)
        .input("x", "N,3")
        .int64s("absurd_shape", &[1 << 40, 1 << 40])
        .node("ConstantOfShape", &["absurd_shape"], &["huge"], vec![])
        .node("Shape", &["huge"], &["huge_shape"], vec![])
        .int64s("zero", &[0])
        .node("Div", &["huge_shape", "zero"], &["divided"], vec![])
        .int64s("steps", &[0])
        .node("Slice", &["huge_shape", "zero", "zero", "zero", "steps"], &["zero_step"], vec![])
        .infer();
    assert_eq!(shape(&model, "huge"), format!("[{0},{0}]", 1i64 << 40));
    assert_eq!(shape(&model, "divided"), "[2]");
    assert_eq!(shape(&model, "zero_step"), "[?]");
}

#[test]
fn fixed_shape_errors() {
    let model = || TestModel::new(13).input("x", "N,3,224,224").weight("w", &[3]);
    match model().try_infer(&[("y", &[1, 3, 224, 224])]) {
        Err(IrError::UnknownInput { name, known }) => {
            assert_eq!(name, "y");
            assert_eq!(known, "x");
        }
        other => panic!("expected UnknownInput, got {other:?}"),
    }
    assert!(matches!(model().try_infer(&[("x", &[1, 3, 224])]), Err(IrError::BadInputShape { .. })));
    assert!(matches!(model().try_infer(&[("x", &[1, 4, 224, 224])]), Err(IrError::BadInputShape { .. })));
    assert!(matches!(model().try_infer(&[("x", &[0, 3, 224, 224])]), Err(IrError::BadInputShape { .. })));
    assert!(matches!(
        model().try_infer(&[("x", &[1, 3, 224, 224]), ("x", &[2, 3, 224, 224])]),
        Err(IrError::BadInputShape { .. })
    ));
    let fixed = model().infer_fixed(&[("x", &[8, 3, 224, 224])]);
    assert_eq!(shape(&fixed, "x"), "[8,3,224,224]");
}

#[test]
fn parses_input_shape_specs() {
    assert_eq!(parse_input_shape("x=1,3,224,224").unwrap(), ("x".to_string(), vec![1, 3, 224, 224]));
    assert_eq!(parse_input_shape("a=b=2, 3").unwrap(), ("a=b".to_string(), vec![2, 3]));
    for bad in ["x", "=1,2", "x=", "x=1,,2", "x=1,-3", "x=0", "x=1.5", "x=a"] {
        assert!(matches!(parse_input_shape(bad), Err(IrError::BadInputShape { .. })), "{bad}");
    }
}

#[test]
fn normalizations_dropout_and_recurrent_outputs() {
    let model = TestModel::new(17)
        .input("x", "N,16,32")
        .weight("gamma", &[32])
        .node("LayerNormalization", &["x", "gamma"], &["ln", "mean", "inv_std"], vec![int("axis", -1)])
        .node("Dropout", &["x"], &["dropped", "mask"], vec![])
        .weight("w", &[2, 64, 32])
        .weight("r", &[2, 64, 16])
        .node(
            "LSTM",
            &["x", "w", "r"],
            &["y", "y_h", "y_c"],
            vec![int("hidden_size", 16), string("direction", "bidirectional")],
        )
        .infer();
    assert_eq!(shape(&model, "ln"), "[N,16,32]");
    assert_eq!(shape(&model, "mean"), "[N,16,1]");
    assert_eq!(dtype(&model, "mask"), Some(DataType::Bool));
    assert_eq!(shape(&model, "y"), "[N,2,16,16]");
    assert_eq!(shape(&model, "y_h"), "[2,16,16]");
}

#[test]
fn reductions_with_attribute_and_input_axes() {
    let old = TestModel::new(13)
        .input("x", "N,3,8,8")
        .int64s("axes", &[2, 3])
        .node("ReduceMean", &["x"], &["mean"], vec![ints("axes", &[2, 3])])
        .node("ReduceSum", &["x", "axes"], &["sum"], vec![int("keepdims", 0)])
        .node("ArgMax", &["x"], &["arg"], vec![int("axis", 1), int("keepdims", 0)])
        .infer();
    assert_eq!(shape(&old, "mean"), "[N,3,1,1]");
    assert_eq!(shape(&old, "sum"), "[N,3]");
    assert_eq!(shape(&old, "arg"), "[N,8,8]");
    assert_eq!(dtype(&old, "arg"), Some(DataType::Int64));
    let new = TestModel::new(18)
        .input("x", "N,3,8,8")
        .int64s("axes", &[-1])
        .int64s("no_axes", &[])
        .node("ReduceMean", &["x", "axes"], &["mean"], vec![])
        .node("ReduceMax", &["x", "no_axes"], &["noop"], vec![int("noop_with_empty_axes", 1)])
        .node("ReduceMax", &["x"], &["all"], vec![int("keepdims", 0)])
        .infer();
    assert_eq!(shape(&new, "mean"), "[N,3,8,1]");
    assert_eq!(shape(&new, "noop"), "[N,3,8,8]");
    assert_eq!(shape(&new, "all"), "[]");
}

#[test]
fn pad_transpose_expand_tile_where_range() {
    let model = TestModel::new(18)
        .input("x", "N,3,8,8")
        .int64s("pads", &[1, 2, 3, 4])
        .int64s("pad_axes", &[2, 3])
        .node("Pad", &["x", "pads", "", "pad_axes"], &["padded"], vec![])
        .node("Transpose", &["x"], &["nhwc"], vec![ints("perm", &[0, 2, 3, 1])])
        .int64s("target", &[2, 1, 1, 1, 1])
        .node("Expand", &["x", "target"], &["expanded"], vec![])
        .int64s("repeats", &[1, 2, 3, 1])
        .node("Tile", &["x", "repeats"], &["tiled"], vec![])
        .typed_input("cond", DataType::Bool, "8")
        .node("Where", &["cond", "x", "x"], &["picked"], vec![])
        .node("Constant", &[], &["start"], vec![int("value_int", 2)])
        .node("Constant", &[], &["limit"], vec![int("value_int", 11)])
        .node("Constant", &[], &["delta"], vec![int("value_int", 3)])
        .node("Range", &["start", "limit", "delta"], &["range"], vec![])
        .infer();
    assert_eq!(shape(&model, "padded"), "[N,3,12,14]");
    assert_eq!(shape(&model, "nhwc"), "[N,8,8,3]");
    assert_eq!(shape(&model, "expanded"), "[2,N,3,8,8]");
    assert_eq!(shape(&model, "tiled"), "[N,6,24,8]");
    assert_eq!(shape(&model, "picked"), "[N,3,8,8]");
    assert_eq!(shape(&model, "range"), "[3]");

    let old = TestModel::new(9)
        .input("x", "1,3,8,8")
        .node("Pad", &["x"], &["padded"], vec![ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1])])
        .infer();
    assert_eq!(shape(&old, "padded"), "[1,3,10,10]");
}

#[test]
fn initializers_listed_as_inputs_are_constant_only_before_ir_4() {
    let model = |ir_version: i64| {
        let mut model = TestModel::new(9)
            .ir_version(ir_version)
            .input("x", "1,256,6,6")
            .int64s("target", &[1, -1])
            .node("Reshape", &["x", "target"], &["flat"], vec![]);
        model.graph.input.push(value_info("target", DataType::Int64, Some("2")));
        model.infer()
    };
    assert_eq!(shape(&model(3), "flat"), "[1,9216]");
    // From IR 4 on, a listed initializer is only a default the caller may override.
    assert_eq!(shape(&model(4), "flat"), "[?,?]");
}

#[test]
fn gather_where_and_expand_fold_shape_values() {
    let model = TestModel::new(13)
        .input("x", "N,3,H,W")
        .node("Shape", &["x"], &["shape"], vec![])
        .int64s("last_two", &[-2, -1])
        .node("Gather", &["shape", "last_two"], &["hw"], vec![])
        .int64s("minus_ones", &[-1, -1])
        .node("Equal", &["hw", "minus_ones"], &["is_unset"], vec![])
        .int64s("defaults", &[32, 32])
        .node("Where", &["is_unset", "defaults", "hw"], &["picked"], vec![])
        .node("Expand", &["x", "picked"], &["expanded"], vec![])
        .infer_fixed(&[("x", &[2, 3, 40, 60])]);
    assert_eq!(shape(&model, "expanded"), "[2,3,40,60]");
}
