//! The graph IR pare optimizes: operator nodes on a petgraph `StableGraph`,
//! values with dtype and shape, initializers as typed tensors, and the import
//! from / export to ONNX. Shape and dtype inference fills in what the model
//! did not declare.

pub mod attribute;
pub mod conv_geometry;
pub mod dtype;
pub mod export;
pub mod graph;
pub mod import;
pub mod infer;
pub(crate) mod names;
pub mod opset;
pub mod shape;
pub mod submodel;
pub mod tensor;

pub use dtype::DataType;
pub use export::export;
pub use graph::{AttributeList, Edge, Graph, GraphIo, Model, Node, Producer, Value, ValueId, ValueInfoEntry};
pub use import::import;
pub use opset::{upgrade as upgrade_opset, OpsetError, Upgrade};
pub use shape::{tensor_declaration, Dim, Shape};
pub use submodel::submodel;

/// Why a model cannot be turned into (or out of) the IR.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("{what} '{name}' defines a name that is already defined")]
    DuplicateName { what: String, name: String },
    #[error("node '{node}' ({op}) reads '{name}', which no node, graph input or initializer defines")]
    UndefinedInput { node: String, op: String, name: String },
    #[error("graph output '{name}' is not defined by any node, graph input or initializer")]
    UndefinedOutput { name: String },
    #[error("the graph has a cycle through node '{node}' ({op})")]
    Cycle { node: String, op: String },
    #[error("--input-shape names '{name}', which is not a graph input (inputs: {known})")]
    UnknownInput { name: String, known: String },
    #[error("--input-shape {name}: {reason}")]
    BadInputShape { name: String, reason: String },
    #[error("node '{node}' ({op}): {reason}")]
    Inference { node: String, op: String, reason: String },
}
