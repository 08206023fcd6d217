//! Element-wise operators: activations and other unary maps (output like the
//! input), broadcasting binary and variadic arithmetic, comparisons and
//! logic (bool output), Where, Cast/CastLike, Clip, PRelu, Dropout. Integer
//! arithmetic, comparisons, Cast, Where and a few unary maps are also folded
//! on partial values, so shape computations pass through them.

use super::context::{NodeView, OutputFacts};
use super::dims::broadcast_shapes;
use super::partial::{Element, PartialTensor};
use crate::ir::dtype::DataType;
use crate::ir::shape::Shape;

/// An output with the dtype and shape of input 0 (activations, normalizations, ...).
pub(super) fn same_as_input(view: &NodeView) -> Vec<OutputFacts> {
    vec![view.like_input(0)]
}

/// Identity: the input passed through, elements included.
pub(super) fn identity(view: &NodeView) -> Vec<OutputFacts> {
    let value = view.input_value(0).map(|v| v.into_owned());
    vec![view.like_input(0).or_value(value)]
}

/// Unary maps whose elements inference evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnaryMap {
    Neg,
    Abs,
    Floor,
    Ceil,
    Round,
    Sqrt,
    Reciprocal,
    Relu,
    Sign,
    Not,
}

/// A unary map: output like the input, elements folded.
pub(super) fn unary(view: &NodeView, map: UnaryMap) -> Vec<OutputFacts> {
    let value = view.input_value(0).map(|v| v.map(|e| apply_unary(map, e)));
    vec![view.like_input(0).or_value(value)]
}

fn apply_unary(map: UnaryMap, element: &Element) -> Element {
    use Element::*;
    use UnaryMap::*;
    match (element, map) {
        (Int(x), Neg) => x.checked_neg().map_or(Unknown, Int),
        (Int(x), Abs) => x.checked_abs().map_or(Unknown, Int),
        (Int(x), Floor | Ceil | Round) => Int(*x),
        (Int(x), Relu) => Int((*x).max(0)),
        (Int(x), Sign) => Int(x.signum()),
        (Int(x), Not) => Int(i64::from(*x == 0)),
        (Int(_), Sqrt | Reciprocal) => Unknown,
        (Float(x), Neg) => Float(-x),
        (Float(x), Abs) => Float(x.abs()),
        (Float(x), Floor) => Float(x.floor()),
        (Float(x), Ceil) => Float(x.ceil()),
        (Float(x), Round) => Float(x.round_ties_even()),
        (Float(x), Sqrt) => Float(x.sqrt()),
        (Float(x), Reciprocal) => Float(1.0 / x),
        (Float(x), Relu) => Float(x.max(0.0)),
        (Float(x), Sign) => Float(if *x == 0.0 { 0.0 } else { x.signum() }),
        (Float(_), Not) => Unknown,
        // A symbol is a dimension: a non-negative integer.
        (Symbol(_), Abs | Floor | Ceil | Round | Relu) => element.clone(),
        _ => Unknown,
    }
}

/// Broadcasting operators with two or more inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arithmetic {
    Add,
    Sub,
    Mul,
    Div,
    /// `fmod`: the remainder takes the dividend's sign (else the divisor's).
    Mod {
        fmod: bool,
    },
    Pow,
    Max,
    Min,
    /// Variadic Sum: folded as repeated Add.
    Sum,
    /// Variadic Mean: folded as repeated Add, then divided.
    Mean,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    /// Shapes only (BitShift, BitwiseAnd, ...): output like input 0's dtype, no folding.
    Opaque,
}

impl Arithmetic {
    fn yields_bool(self) -> bool {
        use Arithmetic::*;
        matches!(self, Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor)
    }
}

/// A broadcasting operator over all its inputs (binary or variadic).
pub(super) fn broadcasting(view: &NodeView, op: Arithmetic) -> Vec<OutputFacts> {
    let slots: Vec<usize> = (0..view.input_count()).filter(|&s| view.has_input(s)).collect();
    if slots.is_empty() {
        return Vec::new();
    }
    let dtype = if op.yields_bool() {
        Some(DataType::Bool)
    } else if op == Arithmetic::Pow {
        view.input_dtype(0)
    } else {
        slots.iter().find_map(|&s| view.input_dtype(s))
    };
    let shapes: Option<Vec<&Shape>> = slots.iter().map(|&s| view.input_shape(s)).collect();
    let shape = shapes.map(broadcast_shapes);
    let value = fold_broadcasting(view, op, &slots);
    vec![OutputFacts::new(dtype, shape).or_value(value)]
}

fn fold_broadcasting(view: &NodeView, op: Arithmetic, slots: &[usize]) -> Option<PartialTensor> {
    if op == Arithmetic::Opaque {
        return None;
    }
    let values: Vec<_> = slots.iter().map(|&s| view.input_value(s)).collect::<Option<_>>()?;
    let operands: Vec<&PartialTensor> = values.iter().map(|v| v.as_ref()).collect();
    let count = operands.len();
    // Variadic operators fold pairwise; Mean sums first and divides at the end.
    let step = match op {
        Arithmetic::Sum | Arithmetic::Mean => Arithmetic::Add,
        _ => op,
    };
    PartialTensor::broadcast_map(&operands, |elements| {
        let Some((first, rest)) = elements.split_first() else { return Element::Unknown };
        let total = rest.iter().fold((*first).clone(), |acc, e| combine(step, &acc, e));
        match (op, total.as_float()) {
            (Arithmetic::Mean, Some(sum)) => Element::Float(sum / count as f64),
            (Arithmetic::Mean, None) => Element::Unknown,
            _ => total,
        }
    })
}

/// One application of a binary operator to two elements.
pub(super) fn combine(op: Arithmetic, a: &Element, b: &Element) -> Element {
    match (a, b) {
        (Element::Int(x), Element::Int(y)) => combine_ints(op, *x, *y),
        (Element::Int(_) | Element::Float(_), Element::Int(_) | Element::Float(_)) => {
            match (a.as_float(), b.as_float()) {
                (Some(x), Some(y)) => combine_floats(op, x, y),
                _ => Element::Unknown,
            }
        }
        _ => combine_symbolic(op, a, b),
    }
}

fn truth(value: bool) -> Element {
    Element::Int(i64::from(value))
}

fn combine_ints(op: Arithmetic, x: i64, y: i64) -> Element {
    use Arithmetic::*;
    let number = |value: Option<i64>| value.map_or(Element::Unknown, Element::Int);
    match op {
        Add => number(x.checked_add(y)),
        Sub => number(x.checked_sub(y)),
        Mul => number(x.checked_mul(y)),
        // Integer division truncates toward zero, as runtimes do.
        Div => number(x.checked_div(y)),
        Mod { fmod: true } => number(x.checked_rem(y)),
        Mod { fmod: false } => number(x.checked_rem(y).map(|r| if r != 0 && ((r < 0) != (y < 0)) { r + y } else { r })),
        Pow => number(u32::try_from(y).ok().and_then(|e| x.checked_pow(e))),
        Max => Element::Int(x.max(y)),
        Min => Element::Int(x.min(y)),
        Equal => truth(x == y),
        Less => truth(x < y),
        Greater => truth(x > y),
        LessOrEqual => truth(x <= y),
        GreaterOrEqual => truth(x >= y),
        And => truth(x != 0 && y != 0),
        Or => truth(x != 0 || y != 0),
        Xor => truth((x != 0) != (y != 0)),
        Sum | Mean | Opaque => Element::Unknown,
    }
}

fn combine_floats(op: Arithmetic, x: f64, y: f64) -> Element {
    use Arithmetic::*;
    match op {
        Add => Element::Float(x + y),
        Sub => Element::Float(x - y),
        Mul => Element::Float(x * y),
        Div => Element::Float(x / y),
        Mod { fmod: true } => Element::Float(x % y),
        Mod { fmod: false } => {
            let r = x % y;
            Element::Float(if r != 0.0 && ((r < 0.0) != (y < 0.0)) { r + y } else { r })
        }
        Pow => Element::Float(x.powf(y)),
        Max => Element::Float(x.max(y)),
        Min => Element::Float(x.min(y)),
        Equal => truth(x == y),
        Less => truth(x < y),
        Greater => truth(x > y),
        LessOrEqual => truth(x <= y),
        GreaterOrEqual => truth(x >= y),
        Sum | Mean | And | Or | Xor | Opaque => Element::Unknown,
    }
}

fn is_number(element: &Element, wanted: f64) -> bool {
    element.as_float() == Some(wanted)
}

/// Identities that hold whatever value a symbolic dimension takes.
fn combine_symbolic(op: Arithmetic, a: &Element, b: &Element) -> Element {
    use Arithmetic::*;
    let same_symbol = matches!((a, b), (Element::Symbol(x), Element::Symbol(y)) if x == y);
    match op {
        Add if is_number(b, 0.0) => a.clone(),
        Add if is_number(a, 0.0) => b.clone(),
        Sub if is_number(b, 0.0) => a.clone(),
        Sub if same_symbol => Element::Int(0),
        Mul if is_number(b, 1.0) => a.clone(),
        Mul if is_number(a, 1.0) => b.clone(),
        Mul if is_number(a, 0.0) => a.clone(),
        Mul if is_number(b, 0.0) => b.clone(),
        Div if is_number(b, 1.0) => a.clone(),
        Max | Min if same_symbol => a.clone(),
        Equal | LessOrEqual | GreaterOrEqual if same_symbol => Element::Int(1),
        Less | Greater if same_symbol => Element::Int(0),
        _ => Element::Unknown,
    }
}

/// Where(condition, x, y): broadcast of all three, dtype of x.
pub(super) fn where_select(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(1).or_else(|| view.input_dtype(2));
    let shapes: Option<Vec<&Shape>> = (0..3).map(|s| view.input_shape(s)).collect();
    let shape = shapes.map(broadcast_shapes);
    let value = (|| {
        let values: Vec<_> = (0..3).map(|s| view.input_value(s)).collect::<Option<_>>()?;
        let operands: Vec<&PartialTensor> = values.iter().map(|v| v.as_ref()).collect();
        PartialTensor::broadcast_map(&operands, |e| match e[0].as_int() {
            Some(0) => e[2].clone(),
            Some(_) => e[1].clone(),
            None if e[1] == e[2] => e[1].clone(),
            None => Element::Unknown,
        })
    })();
    vec![OutputFacts::new(dtype, shape).or_value(value)]
}

/// Cast: the `to` dtype, elements converted.
pub(super) fn cast(view: &NodeView) -> Vec<OutputFacts> {
    let target = view.attr_int("to").and_then(|code| DataType::from_code(code as i32));
    cast_to(view, target)
}

/// CastLike: the dtype of input 1, elements converted.
pub(super) fn cast_like(view: &NodeView) -> Vec<OutputFacts> {
    cast_to(view, view.input_dtype(1))
}

fn cast_to(view: &NodeView, target: Option<DataType>) -> Vec<OutputFacts> {
    let value = match target {
        Some(dtype) => view.input_value(0).map(|v| v.map(|e| e.cast(dtype))),
        None => None,
    };
    vec![OutputFacts::new(target, view.input_shape(0).cloned()).or_value(value)]
}

/// Clip (min/max as attributes before opset 11, as inputs from 11): like input 0,
/// elements folded when the bounds are known.
pub(super) fn clip(view: &NodeView) -> Vec<OutputFacts> {
    let bound = |attr: &str, slot: usize| -> Option<Option<Element>> {
        if view.opset < 11 {
            return Some(view.attr_float(attr).map(|v| Element::Float(f64::from(v))));
        }
        if !view.has_input(slot) {
            return Some(None);
        }
        let value = view.input_value(slot)?;
        (value.elements.len() == 1).then(|| value.elements.first().cloned())
    };
    let value = (|| {
        let low = bound("min", 1)?;
        let high = bound("max", 2)?;
        let input = view.input_value(0)?;
        Some(input.map(|e| {
            let mut clipped = e.clone();
            if let Some(low) = &low {
                clipped = combine(Arithmetic::Max, &clipped, low);
            }
            if let Some(high) = &high {
                clipped = combine(Arithmetic::Min, &clipped, high);
            }
            clipped
        }))
    })();
    vec![view.like_input(0).or_value(value)]
}

/// Dropout: output like the input; the mask has the input's shape and is
/// bool from opset 10 (the input's dtype before).
pub(super) fn dropout(view: &NodeView) -> Vec<OutputFacts> {
    let mask_dtype = if view.opset >= 10 { Some(DataType::Bool) } else { view.input_dtype(0) };
    vec![view.like_input(0), OutputFacts::new(mask_dtype, view.input_shape(0).cloned())]
}

/// An output of input 0's shape with a fixed dtype (IsNaN, IsInf: bool).
pub(super) fn same_shape_as_input(view: &NodeView, dtype: DataType) -> Vec<OutputFacts> {
    vec![OutputFacts::new(Some(dtype), view.input_shape(0).cloned())]
}
