//! pare: an ONNX-to-ONNX optimizing compiler for low-power inference.
//!
//! Data flow: bytes → [`onnx`] (ModelProto) → [`ir`] (petgraph graph, shapes
//! inferred) → passes → [`ir::export`] → [`onnx`] → bytes. [`cost`] counts
//! what a graph costs; [`inspect`] reports it per layer; [`pipeline`] strings
//! the stages together for the CLI and for toolchains embedding pare.

pub mod cost;
pub mod egraph;
pub mod eval;
pub mod families;
pub mod fuzz_targets;
pub mod inspect;
pub mod ir;
pub mod onnx;
pub mod onnxruntime;
pub mod optimize_report;
pub mod parallel;
pub mod passes;
pub mod pipeline;
pub mod runtime;
pub mod samples;
pub mod verify;
pub mod weights;
