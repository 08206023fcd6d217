//! The alternatives table. Every approximate e-node (`Onnx::Approx`) points at
//! one record here: the compression family that offered it, the e-classes it
//! replaces (one layer, or several when one alternative spans a group of
//! layers), the error extraction charges for it, and the family's details
//! for the report. Errors live on the alternative, not on the e-class, so they
//! can be re-measured after saturation and the same e-graph extracted again.
//!
//! A user rule may also write an approximation with a literal error
//! (`(~0.05 ?x)`); it has no record.

use std::collections::HashMap;

use egg::{Id, Language};
use serde::Serialize;

use super::analysis::Graph;

/// What an `Approx` e-node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Approximation {
    /// A family's alternative: an index into the [`Alternatives`] table.
    Alternative(u32),
    /// An approximation a rule wrote with its error (f64 bits).
    Literal(u64),
}

/// One alternative a family offered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alternative {
    /// The family's name (its rules file is `passes/<family>.rules`).
    pub family: &'static str,
    /// The classes it replaces (ids as added: look them up through `find`).
    #[serde(skip)]
    pub replaces: Vec<Id>,
    /// Whether it gives a layer another form (what forcing a family forces
    /// and what a pinned choice repeats), rather than only rounding a value
    /// between layers.
    pub is_layer: bool,
    /// The relative L2 error extraction charges: the family's estimate, or
    /// the output error measured with this alternative alone.
    pub error: f64,
    /// Whether [`error`](Self::error) was measured on the model's output.
    pub measured: bool,
    /// The family's estimate does not bound the alternative's effect on the
    /// model's output (a layer's own output error, which later layers may
    /// amplify): where errors are measured, an unmeasured one is not chosen.
    #[serde(skip)]
    pub needs_measurement: bool,
    /// It replaces a layer the user excluded (`--exclude`): never chosen.
    #[serde(skip)]
    pub excluded: bool,
    /// What the family reports of it (form, rank, MACs, ...).
    pub details: serde_json::Value,
}

/// Every alternative offered in one e-graph.
#[derive(Clone, Debug, Default)]
pub struct Alternatives {
    records: Vec<Alternative>,
    /// Records by everything but the classes they replace (whose ids change
    /// as classes merge): candidates for being offered again.
    index: HashMap<String, Vec<u32>>,
}

/// Registers an alternative in the e-graph's table. An equal one offered
/// again (rules re-run on every match each iteration) gets the same id, so
/// the e-node it marks is the same e-node; classes replaced are compared
/// as they are now (merged classes are one).
pub fn offer(egraph: &mut Graph, alternative: Alternative) -> Approximation {
    let key = format!(
        "{}|{}|{}|{}",
        alternative.family,
        alternative.is_layer,
        alternative.error.to_bits(),
        alternative.details
    );
    let replaced: Vec<Id> = alternative.replaces.iter().map(|&c| egraph.find(c)).collect();
    let table = &egraph.analysis.alternatives;
    let known = table.index.get(&key).into_iter().flatten().copied().find(|&id| {
        let record = &table.records[id as usize];
        record.replaces.len() == replaced.len()
            && record.replaces.iter().zip(&replaced).all(|(&a, &b)| egraph.find(a) == b)
    });
    if let Some(id) = known {
        return Approximation::Alternative(id);
    }
    let table = &mut egraph.analysis.alternatives;
    let id = table.records.len() as u32;
    table.records.push(alternative);
    table.index.entry(key).or_default().push(id);
    Approximation::Alternative(id)
}

impl Alternatives {
    /// The error extraction charges for an approximation.
    pub fn error(&self, approximation: Approximation) -> f64 {
        match approximation {
            Approximation::Alternative(id) => self.records.get(id as usize).map_or(f64::INFINITY, |r| r.error),
            Approximation::Literal(bits) => f64::from_bits(bits),
        }
    }

    /// The record of an approximation, when a family offered it.
    pub fn get(&self, approximation: Approximation) -> Option<&Alternative> {
        match approximation {
            Approximation::Alternative(id) => self.records.get(id as usize),
            Approximation::Literal(_) => None,
        }
    }

    /// Every record with its approximation, in the order offered.
    pub fn iter(&self) -> impl Iterator<Item = (Approximation, &Alternative)> {
        self.records.iter().enumerate().map(|(i, r)| (Approximation::Alternative(i as u32), r))
    }

    /// Replaces the error of every alternative `measured` gives one for
    /// (`measured(record)`: the output error measured with it alone); one
    /// that needs a measurement and got none is excluded.
    pub fn set_measured_errors(&mut self, mut measured: impl FnMut(&Alternative) -> Option<f64>) {
        for record in &mut self.records {
            match measured(record) {
                Some(error) => {
                    record.error = error;
                    record.measured = true;
                }
                None if record.needs_measurement => record.excluded = true,
                None => {}
            }
        }
    }

    /// Whether an approximation replaces an excluded layer.
    pub fn is_excluded(&self, approximation: Approximation) -> bool {
        self.get(approximation).is_some_and(|r| r.excluded)
    }

    /// Also excludes the alternatives `excluded(record)` says replace an excluded layer.
    pub fn exclude(&mut self, mut excluded: impl FnMut(&Alternative) -> bool) {
        for record in &mut self.records {
            record.excluded |= excluded(record);
        }
    }
}

/// The name a measured error is kept under ([`super::Compression::measured_errors`]):
/// the replaced layer's value name with the alternative's family and
/// details, which stay the same when the model is saturated again. Details
/// named `macs…` count the layer's work at the shapes of the e-graph they
/// were offered in; a model with open dims is measured at its open shapes
/// but chosen at its representative ones, so they are no part of the name.
pub fn measured_key(value: &str, alternative: &Alternative) -> String {
    format!("{value}|{}", identity(alternative))
}

/// What tells an alternative from the layer's others, whatever the shapes of
/// the e-graph it was offered in: its family and its details without the
/// `macs…` fields (a pinned choice names its alternatives by it).
pub fn identity(alternative: &Alternative) -> String {
    let mut details = alternative.details.clone();
    if let Some(fields) = details.as_object_mut() {
        fields.retain(|name, _| !name.starts_with(SHAPE_DEPENDENT_DETAIL));
    }
    format!("{}|{details}", alternative.family)
}

/// The prefix of the detail names [`measured_key`] leaves out.
const SHAPE_DEPENDENT_DETAIL: &str = "macs";

/// The alternative an e-node of a layer's class stands for: an approximation
/// itself, or a node reading one as its first input (a DequantizeLinear of
/// an integer layer).
pub fn approximation_of(egraph: &Graph, node: &super::language::Onnx) -> Option<Approximation> {
    use super::language::Onnx;
    let of = |n: &Onnx| match n {
        Onnx::Approx(a @ Approximation::Alternative(_), _) => Some(*a),
        _ => None,
    };
    of(node).or_else(|| egraph[*node.children().first()?].nodes.iter().find_map(of))
}

/// Layers every compression family leaves alone (`--exclude`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    /// The node with this name, or the node computing the value with this name.
    Name(String),
    /// Every node of this operator type (`op:Conv`).
    Op(String),
}

impl std::str::FromStr for Exclusion {
    type Err = String;

    /// `NAME` or `op:TYPE`.
    fn from_str(text: &str) -> Result<Exclusion, String> {
        let text = text.trim();
        match text.strip_prefix("op:") {
            Some(op) if !op.trim().is_empty() && !op.contains(char::is_whitespace) => {
                Ok(Exclusion::Op(op.trim().to_string()))
            }
            Some(_) => Err(format!("--exclude '{text}': op: takes an operator type, as in op:Conv")),
            None if text.is_empty() => Err("--exclude takes a node name or op:TYPE, not an empty string".into()),
            None => Ok(Exclusion::Name(text.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(error: f64) -> Alternative {
        Alternative {
            family: "test",
            replaces: vec![Id::from(3)],
            is_layer: true,
            error,
            measured: false,
            needs_measurement: false,
            excluded: false,
            details: serde_json::json!({"form": "x"}),
        }
    }

    #[test]
    fn an_alternative_offered_twice_is_one_record_and_errors_can_be_remeasured() {
        let mut egraph = Graph::default();
        for i in 0..4 {
            egraph.add(crate::egraph::language::Onnx::Op(format!("X{i}").into(), Box::new([])));
        }
        let a = offer(&mut egraph, record(0.1));
        assert_eq!(offer(&mut egraph, record(0.1)), a);
        let b = offer(&mut egraph, record(0.2));
        assert_ne!(a, b);
        // Offered again once its class merged with another: the same record.
        egraph.union(Id::from(3), Id::from(2));
        egraph.rebuild();
        let mut moved = record(0.1);
        moved.replaces = vec![Id::from(2)];
        assert_eq!(offer(&mut egraph, moved), a);
        let table = &mut egraph.analysis.alternatives;
        assert_eq!(table.error(a), 0.1);
        table.set_measured_errors(|r| (r.error == 0.2).then_some(0.05));
        assert_eq!((table.error(a), table.error(b)), (0.1, 0.05));
        assert!(table.get(b).unwrap().measured && !table.get(a).unwrap().measured);
        assert_eq!(table.error(Approximation::Literal(0.3f64.to_bits())), 0.3);
    }

    #[test]
    fn a_measured_error_is_named_without_the_layer_work_its_shapes_give() {
        let at = |rank: u64, macs: u64| Alternative {
            details: serde_json::json!({"form": "svd", "rank": rank, "macs_before": 4 * macs, "macs_after": macs}),
            ..record(0.1)
        };
        assert_eq!(measured_key("y", &at(8, 100)), measured_key("y", &at(8, 7)));
        assert_ne!(measured_key("y", &at(8, 100)), measured_key("y", &at(16, 100)));
        assert_ne!(measured_key("y", &at(8, 100)), measured_key("z", &at(8, 100)));
    }

    #[test]
    fn exclusions_parse_names_and_operator_types() {
        assert_eq!("conv1".parse(), Ok(Exclusion::Name("conv1".into())));
        assert_eq!("op:Conv".parse(), Ok(Exclusion::Op("Conv".into())));
        assert!("op:".parse::<Exclusion>().is_err());
        assert!("".parse::<Exclusion>().is_err());
        assert!("op:Conv Relu".parse::<Exclusion>().is_err());
    }
}
