//! `pare inspect`: a per-layer account of a model — output shape, parameters,
//! MACs, weight and activation bytes — with totals, as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cost::{node_cost, node_weights};
use crate::ir::{Dim, Model};

/// One row of the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Layer {
    pub name: String,
    pub op: String,
    /// Dims of the first output: numbers, symbol names, or null when unknown;
    /// null altogether when even the rank is unknown.
    pub output_shape: Option<Vec<serde_json::Value>>,
    pub params: u64,
    /// null when a shape the count needs is unknown.
    pub macs: Option<u64>,
    pub weight_bytes: u64,
    pub activation_bytes: Option<u64>,
}

/// The whole report. Totals count each weight once, however many nodes share it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub nodes: u64,
    pub params: u64,
    /// MACs of the layers whose MACs are known.
    pub macs: u64,
    /// Layers whose MACs could not be counted (unknown shapes).
    pub layers_with_unknown_macs: u64,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// The default (ai.onnx) domain's opset.
    pub opset: Option<i64>,
    /// Every imported domain and its version.
    pub opsets: BTreeMap<String, i64>,
    pub layers: Vec<Layer>,
}

/// Builds the report of a model whose shapes have been inferred.
pub fn inspect(model: &Model) -> Report {
    let graph = &model.graph;
    let order = graph.topological_order().unwrap_or_else(|_| graph.nodes.node_indices().collect());
    let mut layers = Vec::with_capacity(order.len());
    let mut counted_weights = std::collections::HashSet::new();
    let (mut params, mut weight_bytes, mut macs, mut unknown_macs, mut activation_bytes) = (0, 0, 0, 0, 0);
    for index in order {
        let node = graph.node(index);
        let cost = node_cost(graph, index);
        for (id, size) in node_weights(graph, index) {
            if counted_weights.insert(id) {
                params += size.elements;
                weight_bytes += size.bytes;
            }
        }
        match cost.macs {
            Some(m) => macs += m,
            None => unknown_macs += 1,
        }
        activation_bytes += cost.activation_bytes.unwrap_or(0);
        let output_shape = node.output(0).and_then(|id| graph.value(id).shape.as_ref()).map(|shape| {
            shape
                .0
                .iter()
                .map(|dim| match dim {
                    Dim::Known(v) => serde_json::Value::from(*v),
                    Dim::Symbol(s) => serde_json::Value::from(s.clone()),
                    Dim::Unknown => serde_json::Value::Null,
                })
                .collect()
        });
        layers.push(Layer {
            name: node.name.clone(),
            op: if node.domain.is_empty() { node.op_type.clone() } else { format!("{}:{}", node.domain, node.op_type) },
            output_shape,
            params: cost.params,
            macs: cost.macs,
            weight_bytes: cost.weight_bytes,
            activation_bytes: cost.activation_bytes,
        });
    }
    let opsets = model
        .header
        .opset_import
        .iter()
        .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
        .collect();
    Report {
        nodes: layers.len() as u64,
        params,
        macs,
        layers_with_unknown_macs: unknown_macs,
        weight_bytes,
        activation_bytes,
        opset: model.opset(""),
        opsets,
        layers,
    }
}

/// A number with a unit prefix: 25.6 M, 4.1 G.
pub fn human(value: u64) -> String {
    let v = value as f64;
    match value {
        0..=9_999 => value.to_string(),
        10_000..=999_999 => format!("{:.1} K", v / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} M", v / 1e6),
        _ => format!("{:.1} G", v / 1e9),
    }
}

/// Bytes with a binary prefix.
pub fn human_bytes(value: u64) -> String {
    let v = value as f64;
    match value {
        0..=1023 => format!("{value} B"),
        1024..=1_048_575 => format!("{:.1} KiB", v / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", v / 1_048_576.0),
        _ => format!("{:.2} GiB", v / 1_073_741_824.0),
    }
}

/// The report as a human-readable table.
pub fn table(report: &Report) -> String {
    let shape_text = |layer: &Layer| match &layer.output_shape {
        None => "?".to_string(),
        Some(dims) => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    serde_json::Value::Null => "?".to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            format!("[{}]", dims.join(","))
        }
    };
    let rows: Vec<[String; 7]> = report
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            [
                if layer.name.is_empty() { format!("#{i}") } else { layer.name.clone() },
                layer.op.clone(),
                shape_text(layer),
                layer.params.to_string(),
                layer.macs.map_or("?".into(), |m| m.to_string()),
                layer.weight_bytes.to_string(),
                layer.activation_bytes.map_or("?".into(), |b| b.to_string()),
            ]
        })
        .collect();
    let header = ["name", "op", "output shape", "params", "MACs", "weight bytes", "act bytes"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count()).min(48);
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let numeric = i >= 3;
            if numeric {
                let _ = write!(text, "{cell:>width$}  ");
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &header.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "nodes        {}", report.nodes);
    let _ = writeln!(out, "params       {} ({})", report.params, human(report.params));
    let unknown = if report.layers_with_unknown_macs > 0 {
        format!(", {} layers unknown: fix dynamic inputs with --input-shape", report.layers_with_unknown_macs)
    } else {
        String::new()
    };
    let _ = writeln!(out, "MACs         {} ({}{unknown})", report.macs, human(report.macs));
    let _ = writeln!(out, "weight bytes {} ({})", report.weight_bytes, human_bytes(report.weight_bytes));
    let _ = writeln!(out, "act bytes    {} ({})", report.activation_bytes, human_bytes(report.activation_bytes));
    let opsets: Vec<String> = report
        .opsets
        .iter()
        .map(|(domain, version)| format!("{}={version}", if domain.is_empty() { "ai.onnx" } else { domain }))
        .collect();
    let _ = writeln!(out, "opset        {}", opsets.join(" "));
    out
}
