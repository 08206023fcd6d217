//! What each layer alternative costs beside the layer it replaces, priced
//! as extraction priced them (measured ONNX Runtime latencies or the device
//! profile): with the measured errors, the report says why extraction took
//! or left each alternative, also when the model stays float.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::{Id, Language};
use serde::Serialize;

use super::alternatives::{approximation_of, measured_key};
use super::extract::NodeCosts;
use super::language::Onnx;
use super::Compression;
use crate::egraph::analysis::Graph;

/// One alternative's cost beside its layer's, in the objective's unit
/// (seconds for latency).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AlternativeCost {
    /// The layer's own float operator.
    pub layer: f64,
    /// The operators the alternative puts in its place.
    pub alternative: f64,
}

/// Each layer alternative's cost, by [`measured_key`] (one entry per value
/// name of the layer). `names` are the classes the input model has (the
/// values an alternative reads); everything else an alternative reaches is its own.
pub fn alternative_costs(
    egraph: &Graph,
    costs: &NodeCosts,
    compression: &Compression,
    names: &HashMap<Id, Vec<String>>,
) -> BTreeMap<String, AlternativeCost> {
    let named: HashSet<Id> = names.keys().map(|&c| egraph.find(c)).collect();
    let mut found = BTreeMap::new();
    for (&class, layer_names) in names {
        let class = egraph.find(class);
        let exact = |node: &Onnx| matches!(node, Onnx::Op(..)) && !compression.offers(egraph, node);
        let Some(layer) = cheapest(costs, class, exact) else { continue };
        for node in egraph[class].nodes.iter().filter(|node| compression.is_layer_alternative(egraph, node)) {
            let Some(record) = approximation_of(egraph, node).and_then(|a| egraph.analysis.alternatives.get(a)) else {
                continue;
            };
            let alternative = own_cost(egraph, costs, class, node, &named);
            for name in layer_names {
                found.insert(measured_key(name, record), AlternativeCost { layer, alternative });
            }
        }
    }
    found
}

/// The cheapest cost among the e-nodes of `class` that `eligible` admits.
fn cheapest(costs: &NodeCosts, class: Id, eligible: impl Fn(&Onnx) -> bool) -> Option<f64> {
    costs.of_class(class).filter(|(node, _)| eligible(node)).map(|(_, cost)| cost).reduce(f64::min)
}

/// The summed cost of `node` (in `class`; an approximation itself costs
/// nothing) and of the classes only it reaches (down to the input model's
/// values, the `named` classes), each at its cheapest operator.
fn own_cost(egraph: &Graph, costs: &NodeCosts, class: Id, node: &Onnx, named: &HashSet<Id>) -> f64 {
    let mut seen: HashSet<Id> = HashSet::from([class]);
    let mut pending: Vec<Id> = node.children().iter().map(|&c| egraph.find(c)).collect();
    let canonical = node.clone().map_children(|c| egraph.find(c));
    let own =
        costs.of_class(class).find(|(candidate, _)| (*candidate).clone().map_children(|c| egraph.find(c)) == canonical);
    let mut total = match own {
        Some((Onnx::Approx(..), _)) | None => 0.0,
        Some((_, cost)) => cost,
    };
    while let Some(class) = pending.pop() {
        if named.contains(&class) || !seen.insert(class) {
            continue;
        }
        let best = costs
            .of_class(class)
            .filter(|(node, _)| !matches!(node, Onnx::Approx(..)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((node, cost)) = best {
            total += cost;
            pending.extend(node.children().iter().map(|&c| egraph.find(c)));
        }
    }
    total
}
