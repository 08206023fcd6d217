//! What `pare optimize` reports: the model's cost before and after (nodes,
//! parameters, MACs, weight bytes, estimated latency and energy on the device
//! profile), which rules fired where, saturation statistics, time per stage,
//! and the verification verdict — as a table for people and JSON (`--report`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::cost::Objective;
use crate::egraph::{EngineReport, Options};
use crate::inspect::human;
use crate::pipeline::Summary;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct OptimizeReport {
    pub device: String,
    pub objective: Objective,
    pub budget: f64,
    pub families: Vec<String>,
    pub before: Summary,
    pub after: Summary,
    /// null when no pass ran (`--passes none`).
    pub engine: Option<EngineReport>,
    /// null when not verified (`--no-verify`, or nothing changed).
    pub verification: Option<crate::verify::Report>,
    /// With `--cost-cache`: the file, the machine its timings were filed
    /// under, how many were found, and the misses measured in this run.
    pub cost_cache: Option<crate::cost::cache::CacheSummary>,
}

impl OptimizeReport {
    pub fn new(
        options: &Options,
        before: Summary,
        after: Summary,
        engine: Option<EngineReport>,
        verification: Option<crate::verify::Report>,
    ) -> OptimizeReport {
        OptimizeReport {
            device: options.profile.name.clone(),
            objective: options.objective,
            budget: options.budget,
            families: options.families.clone(),
            before,
            after,
            engine,
            verification,
            cost_cache: None,
        }
    }
}

fn ratio(before: f64, after: f64) -> String {
    if before == 0.0 {
        "-".into()
    } else {
        format!("{:.3}x", after / before)
    }
}

/// The report as a table.
pub fn table(report: &OptimizeReport) -> String {
    let mut out = String::new();
    let (b, a) = (&report.before, &report.after);
    let _ =
        writeln!(out, "{:<22} {:>14} {:>14} {:>9}", format!("device {}", report.device), "before", "after", "ratio");
    let rows: [(&str, String, String, f64, f64); 6] = [
        ("nodes", b.nodes.to_string(), a.nodes.to_string(), b.nodes as f64, a.nodes as f64),
        ("params", human(b.params), human(a.params), b.params as f64, a.params as f64),
        ("MACs", human(b.macs), human(a.macs), b.macs as f64, a.macs as f64),
        ("weight bytes", human(b.weight_bytes), human(a.weight_bytes), b.weight_bytes as f64, a.weight_bytes as f64),
        (
            "est. latency",
            format!("{:.3} ms", b.latency_seconds * 1e3),
            format!("{:.3} ms", a.latency_seconds * 1e3),
            b.latency_seconds,
            a.latency_seconds,
        ),
        (
            "est. energy",
            format!("{:.3} mJ", b.energy_joules * 1e3),
            format!("{:.3} mJ", a.energy_joules * 1e3),
            b.energy_joules,
            a.energy_joules,
        ),
    ];
    for (name, before, after, x, y) in rows {
        let _ = writeln!(out, "{name:<22} {before:>14} {after:>14} {:>9}", ratio(x, y));
    }
    if let Some(engine) = &report.engine {
        let s = &engine.saturation;
        let t = &engine.timings;
        let _ = writeln!(
            out,
            "e-graph: {} rules, {} iterations ({}), {} e-nodes in {} e-classes",
            s.rules, s.iterations, s.stop_reason, s.egraph_nodes, s.egraph_classes
        );
        let _ = writeln!(
            out,
            "time: build {:.3} s, saturate {:.3} s, extract {:.3} s, export {:.3} s",
            t.build, t.saturate, t.extract, t.export
        );
        if engine.fired.is_empty() {
            out.push_str("no rule fired\n");
        } else {
            let fired: Vec<String> = engine.fired.iter().map(|(rule, n)| format!("{rule} ×{n}")).collect();
            let _ = writeln!(out, "fired: {}", fired.join(", "));
        }
        if let Some(raised) = &engine.opset_raised {
            let needs: Vec<String> = raised.operators.iter().map(|(op, opset)| format!("{op} ({opset})")).collect();
            let _ = writeln!(out, "opset raised from {} to {} for {}", raised.from, raised.to, needs.join(", "));
        }
    }
    for section in report.engine.iter().flat_map(|e| &e.sections.0) {
        section.table(&mut out);
    }
    if let Some(engine) = report.engine.as_ref() {
        kept_float(engine, report.objective, &mut out);
    }
    if let Some(engine) = report.engine.as_ref().filter(|e| !e.timing_shapes.is_empty()) {
        let _ = writeln!(out, "latencies measured at: {}", engine.timing_shapes.join(", "));
    }
    if let Some(cache) = &report.cost_cache {
        let file = cache.file.as_ref().map_or("(in memory)".into(), |f| f.display().to_string());
        let _ = writeln!(
            out,
            "cost cache {file}: {} timings found, {} measured and added ({})",
            cache.hits,
            cache.misses.len(),
            cache.machine
        );
    }
    match &report.verification {
        Some(v) if v.passed => {
            let worst = v.outputs.iter().map(|o| o.rel_l2).fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "verified: {} samples at {}, worst rel L2 {worst:.2e}",
                v.samples,
                v.input_shapes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
            if let Some(probe) = &v.probe {
                let _ = writeln!(
                    out,
                    "probe: the written model's output error {:.3e} on {} samples reproduces the {:.3e} measured",
                    probe.written, probe.samples, probe.measured
                );
            }
        }
        Some(v) => {
            let _ = writeln!(out, "verification FAILED: {}", v.failures.join("; "));
        }
        None => {}
    }
    out
}

/// Alternatives listed in the text when a budgeted run keeps every layer float.
const KEPT_FLOAT_LINES: usize = 20;

/// When a budgeted run kept every layer float: what ruled each alternative
/// out, its measured error and its cost beside the layer's (the JSON
/// report's `engine.layer_sensitivity` has them all).
fn kept_float(engine: &EngineReport, objective: Objective, out: &mut String) {
    let compressed: usize = engine.sections.0.iter().map(|s| s.compressed_layers()).sum();
    if compressed > 0 || engine.layer_sensitivity.is_empty() {
        return;
    }
    let _ = writeln!(out, "kept float; each alternative's measured error, and its cost beside the layer's:");
    for layer in engine.layer_sensitivity.iter().take(KEPT_FLOAT_LINES) {
        let (scale, unit) = match objective {
            Objective::Latency => (1e3, "ms"),
            Objective::Energy => (1e3, "mJ"),
            Objective::Size => (1.0, "bytes"),
        };
        let cost = layer.cost.map_or("not priced".to_string(), |c| {
            format!("{:.3} {unit} -> {:.3} {unit}", c.layer * scale, c.alternative * scale)
        });
        let _ = writeln!(out, "  {} {}: error {:.2e}, {cost}", layer.value, layer.alternative, layer.error);
    }
    if engine.layer_sensitivity.len() > KEPT_FLOAT_LINES {
        let more = engine.layer_sensitivity.len() - KEPT_FLOAT_LINES;
        let _ = writeln!(out, "  ... {more} more in the JSON report (engine.layer_sensitivity)");
    }
}
