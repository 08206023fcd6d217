//! The e-graph's language: one e-node kind per ONNX operator (its inputs as
//! children, then one leaf holding its attributes, then the outer-scope values
//! its subgraphs read), weights and graph inputs as leaves, weight-only
//! computations that are folded into initializers at export, and the wrappers
//! that mark a multi-output node's outputs, an approximate alternative's
//! error, and the root that joins the graph outputs.
//!
//! Pattern syntax (the rule files): an operator is its ONNX name (`Conv`;
//! other domains as `com.microsoft::FusedConv`), a weight computation its
//! snake_case name (`bn_weight`), `absent` an omitted optional input,
//! `noattrs` an empty attribute set, `(~0.05 ?e)` an approximation with error
//! 0.05 (a family's alternatives point into the alternatives table instead), `(#1 ?n)` output 1 of a multi-output node.

use std::fmt;

use egg::{Id, Language, Symbol};

pub use super::alternatives::Approximation;
use crate::weights::WeightFn;

/// Index into the analysis' weight table.
pub type WeightId = u32;
/// Index into the analysis' attribute table (0 is the empty set).
pub type AttrsId = u32;
/// Index into the analysis' table of graph-fed values.
pub type InputId = u32;

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Onnx {
    /// An operator with one output. Children: inputs (omitted ones are
    /// `Absent`), the attribute leaf, then implicit (subgraph) inputs.
    Op(Symbol, Box<[Id]>),
    /// An operator whose several outputs are read; its class stands for the
    /// whole node and `Output` picks one.
    Tuple(Symbol, Box<[Id]>),
    /// Output `k` of a `Tuple` node.
    Output(u32, [Id; 1]),
    /// A weight-only computation (folded batch norm, scaled weights, ...),
    /// evaluated by `src/weights` into an initializer at export.
    Weights(WeightFn, Box<[Id]>),
    /// An approximate alternative of the class it sits in: which entry of
    /// the alternatives table it is (its family, error and details), or the
    /// error a rule wrote (see [`Approximation`]).
    Approx(Approximation, [Id; 1]),
    /// Joins everything the graph must compute (its outputs).
    Root(Box<[Id]>),
    /// A value fed from outside the graph's nodes: a graph input or a sparse initializer.
    Input(InputId),
    /// A constant tensor.
    Weight(WeightId),
    /// An operator's attributes.
    Attrs(AttrsId),
    /// An omitted optional input.
    Absent,
}

/// The text of an operator name for a domain ("" is ONNX's default).
pub fn op_symbol(domain: &str, op_type: &str) -> Symbol {
    if domain.is_empty() || domain == "ai.onnx" {
        Symbol::from(op_type)
    } else {
        Symbol::from(format!("{domain}::{op_type}"))
    }
}

/// Splits an operator symbol into (domain, op_type).
pub fn split_op(op: Symbol) -> (&'static str, &'static str) {
    let text = op.as_str();
    match text.rsplit_once("::") {
        Some((domain, op_type)) => (domain, op_type),
        None => ("", text),
    }
}

impl Onnx {
    /// For an operator node: its operator and children.
    pub fn as_op(&self) -> Option<(Symbol, &[Id])> {
        match self {
            Onnx::Op(op, children) | Onnx::Tuple(op, children) => Some((*op, children)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Discriminant {
    Op(Symbol, usize),
    Tuple(Symbol, usize),
    Output(u32),
    Weights(WeightFn, usize),
    Approx(Approximation),
    Root(usize),
    Input(InputId),
    Weight(WeightId),
    Attrs(AttrsId),
    Absent,
}

impl Language for Onnx {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            Onnx::Op(op, c) => Discriminant::Op(*op, c.len()),
            Onnx::Tuple(op, c) => Discriminant::Tuple(*op, c.len()),
            Onnx::Output(k, _) => Discriminant::Output(*k),
            Onnx::Weights(f, c) => Discriminant::Weights(*f, c.len()),
            Onnx::Approx(e, _) => Discriminant::Approx(*e),
            Onnx::Root(c) => Discriminant::Root(c.len()),
            Onnx::Input(i) => Discriminant::Input(*i),
            Onnx::Weight(w) => Discriminant::Weight(*w),
            Onnx::Attrs(a) => Discriminant::Attrs(*a),
            Onnx::Absent => Discriminant::Absent,
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }

    fn children(&self) -> &[Id] {
        match self {
            Onnx::Op(_, c) | Onnx::Tuple(_, c) | Onnx::Weights(_, c) | Onnx::Root(c) => c,
            Onnx::Output(_, c) | Onnx::Approx(_, c) => c,
            Onnx::Input(_) | Onnx::Weight(_) | Onnx::Attrs(_) | Onnx::Absent => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Onnx::Op(_, c) | Onnx::Tuple(_, c) | Onnx::Weights(_, c) | Onnx::Root(c) => c,
            Onnx::Output(_, c) | Onnx::Approx(_, c) => c,
            Onnx::Input(_) | Onnx::Weight(_) | Onnx::Attrs(_) | Onnx::Absent => &mut [],
        }
    }
}

impl fmt::Display for Onnx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Onnx::Op(op, _) => write!(f, "{op}"),
            Onnx::Tuple(op, _) => write!(f, "tuple:{op}"),
            Onnx::Output(k, _) => write!(f, "#{k}"),
            Onnx::Weights(function, _) => write!(f, "{}", function.name()),
            Onnx::Approx(Approximation::Literal(bits), _) => write!(f, "~{}", f64::from_bits(*bits)),
            Onnx::Approx(Approximation::Alternative(id), _) => write!(f, "alternative:{id}"),
            Onnx::Root(_) => write!(f, "root"),
            Onnx::Input(i) => write!(f, "input:{i}"),
            Onnx::Weight(w) => write!(f, "weight:{w}"),
            Onnx::Attrs(0) => write!(f, "noattrs"),
            Onnx::Attrs(a) => write!(f, "attrs:{a}"),
            Onnx::Absent => write!(f, "absent"),
        }
    }
}

/// Why a pattern's operator text is not an e-node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{op}' with {children} children is not an operator, weight computation or leaf of pare's language")]
pub struct UnknownOperator {
    pub op: String,
    pub children: usize,
}

impl egg::FromOp for Onnx {
    type Error = UnknownOperator;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Onnx, UnknownOperator> {
        let unknown = || UnknownOperator { op: op.to_string(), children: children.len() };
        let first = op.chars().next().ok_or_else(unknown)?;
        let single =
            |children: &[Id]| -> Result<[Id; 1], UnknownOperator> { children.try_into().map_err(|_| unknown()) };
        match op {
            "absent" if children.is_empty() => Ok(Onnx::Absent),
            "noattrs" if children.is_empty() => Ok(Onnx::Attrs(0)),
            "root" => Ok(Onnx::Root(children.into())),
            _ if first == '~' => {
                let error: f64 = op[1..].parse().map_err(|_| unknown())?;
                if !(error.is_finite() && error >= 0.0) {
                    return Err(unknown());
                }
                Ok(Onnx::Approx(Approximation::Literal(error.to_bits()), single(&children)?))
            }
            _ if first == '#' => Ok(Onnx::Output(op[1..].parse().map_err(|_| unknown())?, single(&children)?)),
            _ if first.is_ascii_uppercase() || op.contains("::") => Ok(Onnx::Op(Symbol::from(op), children.into())),
            _ => match WeightFn::from_name(op) {
                Some(function) if function.arity() == children.len() => Ok(Onnx::Weights(function, children.into())),
                _ => Err(unknown()),
            },
        }
    }
}
