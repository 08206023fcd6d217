//! How verification numbers are written: short numbers for people (messages and the
//! table), and non-finite floats as strings in JSON.

use std::fmt::Write as _;

use serde::Serializer;

use super::{OutputReport, Report};

/// Writes a float as a JSON number when finite, otherwise as "inf", "-inf" or "nan".
pub(super) fn serialize_float<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match *value {
        v if v.is_finite() => serializer.serialize_f64(v),
        v if v.is_nan() => serializer.serialize_str("nan"),
        v if v > 0.0 => serializer.serialize_str("inf"),
        _ => serializer.serialize_str("-inf"),
    }
}

/// Drops trailing zeros of a decimal fraction ("0.3100" → "0.31", "2.000" → "2").
fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A float with at most `digits` significant digits: plain between 1e-3 and 1e5,
/// scientific ("1e-4", "3.5e7") outside, "inf", "-inf", "nan" when not finite.
pub(super) fn significant(value: f64, digits: usize) -> String {
    if value.is_nan() {
        return "nan".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let digits = digits.max(1);
    let magnitude = value.abs();
    if !(1e-3..1e5).contains(&magnitude) {
        let text = format!("{:.*e}", digits - 1, value);
        return match text.split_once('e') {
            Some((mantissa, exponent)) => format!("{}e{exponent}", trim_fraction(mantissa)),
            None => text,
        };
    }
    let decimals = (digits as i32 - 1 - magnitude.log10().floor() as i32).max(0) as usize;
    trim_fraction(&format!("{value:.decimals$}")).to_string()
}

/// A float with four significant digits, for messages and most table cells.
pub(super) fn number(value: f64) -> String {
    significant(value, 4)
}

/// Cosine with six significant digits, never rounded up to a misleading "1".
fn cosine_text(cosine: f64) -> String {
    let text = significant(cosine, 6);
    if text == "1" && cosine < 1.0 {
        ">0.99999".to_string()
    } else {
        text
    }
}

fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape.iter().map(|dim| dim.map_or_else(|| "?".to_string(), |d| d.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

fn percent(fraction: f64) -> String {
    format!("{}%", significant(fraction * 100.0, 4))
}

fn row(output: &OutputReport) -> [String; 9] {
    let top_k = output.top_k.as_ref();
    [
        output.name.clone(),
        shape_text(&output.shape),
        number(output.max_abs),
        number(output.rel_l2),
        cosine_text(output.cosine),
        number(output.sqnr_db),
        top_k.map_or_else(|| "-".to_string(), |t| percent(t.top1)),
        top_k.and_then(|t| t.top5).map_or_else(|| "-".to_string(), percent),
        if output.passed { "pass" } else { "FAIL" }.to_string(),
    ]
}

/// The report as a table, one row per output, followed by the reasons for any failure
/// and a one-line verdict.
pub fn table(report: &Report) -> String {
    let header = ["output", "shape", "max abs", "rel L2", "cosine", "SQNR dB", "top-1", "top-5", "verdict"];
    let rows: Vec<[String; 9]> = report.outputs.iter().map(row).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for cells in &rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, &width))| {
                // Names and shapes read left to right; numbers line up on the right.
                if column < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from));
    for cells in &rows {
        line(cells);
    }
    for failure in &report.failures {
        let _ = writeln!(out, "  {failure}");
    }
    let failed = report.failed_outputs().count();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(
        out,
        "{verdict}: {failed} of {} outputs failed over {} samples ({})",
        report.outputs.len(),
        report.samples,
        criteria_summary(report)
    );
    out
}

/// The distinct criteria applied to any output, in first-use order.
fn criteria_summary(report: &Report) -> String {
    let mut criteria: Vec<&str> = Vec::new();
    for criterion in report.outputs.iter().flat_map(|output| output.criteria.iter()) {
        if !criteria.contains(&criterion.as_str()) {
            criteria.push(criterion);
        }
    }
    if criteria.is_empty() {
        "no criteria applied".to_string()
    } else {
        criteria.join("; ")
    }
}
