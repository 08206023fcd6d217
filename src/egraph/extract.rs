//! Budgeted, DAG-aware extraction: picks one e-node per needed e-class so the
//! chosen graph minimizes cost + λ·error, where a value shared by several
//! consumers is paid once (each candidate's cost is summed over the set of
//! e-classes it needs, not over a tree). Approximate alternatives carry an
//! error; λ is bisected so the summed error of the choice fits the budget.
//!
//! Costs per e-node come from the device profile and the objective: latency
//! or energy of operators (weights and weight-only computations are free at
//! run time: they are initializers), or weight bytes for `size`.

use crate::ir::{AttributeList, DataType};
use std::collections::HashMap;

use egg::{Id, Language};
use fixedbitset::FixedBitSet;
use serde::Serialize;

mod sharing;

use super::analysis::{ClassFacts, Graph};
use super::language::{split_op, Onnx};
use crate::cost::estimate::{bytes_or_one, dims_or_one, elements_or_one};
use crate::cost::measure::{CallInput, LatencyTable, OperatorCall};
use crate::cost::{estimate, linear_macs, DeviceProfile, LinearShapes, Objective, Work};

/// What the chosen graph costs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Choice {
    /// The chosen e-node of every e-class the root needs (weight-only
    /// operands included).
    #[serde(skip)]
    pub chosen: HashMap<Id, Onnx>,
    /// Summed cost in the objective's unit (seconds, joules or bytes).
    pub cost: f64,
    /// Summed error estimate of the approximate alternatives chosen.
    pub error: f64,
    /// The λ the choice was made with.
    pub lambda: f64,
}

/// Why nothing could be extracted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtractError {
    #[error("the e-graph has no acyclic choice for its outputs")]
    NoChoice,
    #[error("no choice fits the error budget {budget} (smallest error reachable: {smallest})")]
    OverBudget { budget: f64, smallest: f64 },
}

/// Size-objective tie-breaker per operator, in bytes: fewer nodes win.
const NODE_TIE_BREAK_BYTES: f64 = 1e-3;

/// Cost and error of every e-node, computed once.
#[derive(Clone)]
pub struct NodeCosts {
    ids: Vec<Id>,
    index: HashMap<Id, usize>,
    /// Per class, every e-node with its cost and error.
    nodes: Vec<Vec<Candidate>>,
}

#[derive(Clone)]
struct Candidate {
    node: Onnx,
    cost: f64,
    error: f64,
    /// Classes that must be chosen with it.
    children: Vec<usize>,
    /// Children that cost nothing at run time (a weight computation's operands).
    folded: bool,
}

fn dims(facts: &ClassFacts) -> Option<Vec<u64>> {
    facts.shape.as_ref().map(dims_or_one)
}

fn bytes(facts: &ClassFacts) -> u64 {
    bytes_or_one(facts.dtype, facts.shape.as_ref())
}

impl NodeCosts {
    /// Costs from the device profile, with latencies measured in ONNX
    /// Runtime where `measured` says ([`Measured`]).
    pub fn new(
        egraph: &Graph,
        profile: &DeviceProfile,
        objective: Objective,
        mut measured: Option<&mut Measured>,
    ) -> NodeCosts {
        NodeCosts::from_fn(egraph, |id, node| {
            let timed = match (&mut measured, objective) {
                (Some(measured), Objective::Latency) => measured.latency(egraph, id, node),
                _ => None,
            };
            match timed {
                Some(seconds) => (seconds, 0.0),
                None => node_cost(egraph, id, node, profile, objective),
            }
        })
    }

    /// Cost and error of every e-node by `cost_and_error(class, node)`.
    fn from_fn(egraph: &Graph, mut cost_and_error: impl FnMut(Id, &Onnx) -> (f64, f64)) -> NodeCosts {
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                egraph[id]
                    .nodes
                    .iter()
                    .map(|node| {
                        let (cost, error) = cost_and_error(id, node);
                        let children = node.children().iter().map(|c| index[&egraph.find(*c)]).collect();
                        let folded = matches!(node, Onnx::Weights(..));
                        Candidate { node: node.clone(), cost, error, children, folded }
                    })
                    .collect()
            })
            .collect();
        NodeCosts { ids, index, nodes }
    }
}

/// Which e-nodes are priced by latencies measured in ONNX Runtime, and the
/// table that has them.
pub struct Measured<'a> {
    pub table: &'a mut LatencyTable,
    /// Operators timed everywhere: those of the compression families whose
    /// costs are measured ([`super::family::Family::measured_operators`]).
    pub operators: std::collections::HashSet<&'static str>,
    /// Classes whose every operator node is timed: the alternatives of
    /// `measured()` rules (canonical ids).
    pub classes: std::collections::HashSet<Id>,
    /// The e-nodes of the input model (canonical children): a measured
    /// alternative that is not one of them wins only beyond the noise.
    pub original: std::collections::HashSet<Onnx>,
    /// Static dims of classes whose shapes the model leaves open, at the
    /// shapes latencies are measured at.
    pub timing_dims: HashMap<Id, Vec<i64>>,
}

impl Measured<'_> {
    fn dims(&self, egraph: &Graph, class: Id) -> Option<Vec<i64>> {
        egraph[class].data.static_dims().or_else(|| self.timing_dims.get(&egraph.find(class)).cloned())
    }

    /// The latency of an operator node measured alone in ONNX Runtime, when
    /// every input and the output have static (or timing) shapes. Choices
    /// must not follow timing noise, so a node on 8-bit integers (a quantized
    /// form, or the conversions to and from one) and a node no input model
    /// had (a fused activation) are charged the top of their latency's 95%
    /// interval and the input model's float nodes the bottom: a rewrite wins
    /// only where it is faster beyond the measured noise.
    fn latency(&mut self, egraph: &Graph, class: Id, node: &Onnx) -> Option<f64> {
        let Onnx::Op(op, children) = node else { return None };
        let quantized_operator = self.operators.contains(op.as_str());
        if !quantized_operator && !self.classes.contains(&egraph.find(class)) {
            return None;
        }
        let mut attributes: &[crate::onnx::proto::AttributeProto] = &[];
        let mut inputs = Vec::new();
        for &child in children.iter() {
            if let Some(attrs) = super::analysis::attrs_of(egraph, child) {
                if !attrs.implicit.is_empty() {
                    return None;
                }
                attributes = &attrs.attributes;
            } else if super::analysis::is_absent(egraph, child) {
                inputs.push(CallInput::Absent);
            } else if let Some(tensor) = super::analysis::constant_of(egraph, child) {
                inputs.push(CallInput::Constant(tensor));
            } else {
                inputs.push(CallInput::Fed(egraph[child].data.dtype?, self.dims(egraph, child)?));
            }
        }
        while matches!(inputs.last(), Some(CallInput::Absent)) {
            inputs.pop();
        }
        let (domain, op_type) = split_op(*op);
        let output = (egraph[class].data.dtype?, self.dims(egraph, class)?);
        let call = OperatorCall { domain, op_type, attributes, inputs, output };
        let rewritten = !quantized_operator
            && !self.original.contains(&egg::Language::map_children(node.clone(), |c| egraph.find(c)));
        let Some(interval) = self.table.latency(&call) else {
            // A rewrite the runtime cannot run alone (no kernel for its type or
            // opset) is not taken; the input model's nodes fall back to the profile.
            return rewritten.then_some(UNRUNNABLE_COST);
        };
        let byte_sized = |dtype: DataType| matches!(dtype, DataType::Uint8 | DataType::Int8);
        let on_integers = byte_sized(call.output.0)
            || call.inputs.iter().any(|input| match input {
                CallInput::Fed(dtype, _) => byte_sized(*dtype),
                CallInput::Constant(tensor) => tensor.data_type.and_then(DataType::from_code).is_some_and(byte_sized),
                CallInput::Absent => false,
            });
        Some(if on_integers || rewritten { interval.high } else { interval.low })
    }
}

/// Cost of a rewritten node ONNX Runtime could not run alone.
const UNRUNNABLE_COST: f64 = 1e6;

/// Cost of an alternative of a layer the user excluded: above any forced or
/// pinned preference, so it is never chosen while the layer has another form.
const EXCLUDED_COST: f64 = 1e12;

/// Cost added to the other alternatives of a class holding a preferred one.
const DISPREFERRED_COST: f64 = 1e6;

impl NodeCosts {
    /// The e-nodes of `class` (canonical id) with their own cost, children not counted.
    pub fn of_class(&self, class: Id) -> impl Iterator<Item = (&Onnx, f64)> {
        self.index.get(&class).into_iter().flat_map(|&i| self.nodes[i].iter().map(|c| (&c.node, c.cost)))
    }

    /// Makes every class that holds a node `preferred` says yes to (given
    /// the class and the node) choose such a node whenever it can (the others
    /// cost [`DISPREFERRED_COST`] more).
    pub fn prefer(&mut self, preferred: impl Fn(Id, &Onnx) -> bool) {
        for (candidates, &class) in self.nodes.iter_mut().zip(&self.ids) {
            let marks: Vec<bool> = candidates.iter().map(|c| preferred(class, &c.node)).collect();
            if marks.iter().any(|&m| m) {
                for (candidate, marked) in candidates.iter_mut().zip(marks) {
                    if !marked {
                        candidate.cost += DISPREFERRED_COST;
                    }
                }
            }
        }
    }
}

/// (cost, error) of one e-node in its class.
fn node_cost(egraph: &Graph, class: Id, node: &Onnx, profile: &DeviceProfile, objective: Objective) -> (f64, f64) {
    let facts = &egraph[class].data;
    match node {
        Onnx::Approx(approximation, _) if egraph.analysis.alternatives.is_excluded(*approximation) => {
            (EXCLUDED_COST, 0.0)
        }
        Onnx::Approx(approximation, _) => (0.0, egraph.analysis.alternatives.error(*approximation)),
        Onnx::Weight(_) | Onnx::Weights(..) => match objective {
            Objective::Size => (bytes(facts) as f64, 0.0),
            _ => (0.0, 0.0),
        },
        Onnx::Op(op, children) | Onnx::Tuple(op, children) => {
            if objective == Objective::Size {
                return (NODE_TIE_BREAK_BYTES, 0.0);
            }
            let mut work = Work::default();
            let mut inputs: Vec<&ClassFacts> = Vec::new();
            for &child in children.iter() {
                let child_facts = &egraph[child].data;
                if egraph[child].nodes.iter().any(|n| matches!(n, Onnx::Attrs(_) | Onnx::Absent)) {
                    continue;
                }
                if child_facts.constant.is_some() {
                    work.weight_bytes += bytes(child_facts);
                } else {
                    work.input_bytes += bytes(child_facts);
                }
                inputs.push(child_facts);
            }
            work.dtype = inputs.first().and_then(|f| f.dtype);
            if matches!(node, Onnx::Op(..)) {
                work.output_bytes = bytes(facts);
                work.output_elements = elements_or_one(facts.shape.as_ref());
            }
            if let Some((kind, first, second)) = linear_operands(*op) {
                let operand = |i: usize| children.get(i).and_then(|&c| dims(&egraph[c].data));
                let trans_a = children
                    .iter()
                    .find_map(|&c| super::analysis::attrs_of(egraph, c))
                    .and_then(|a| a.attr_int("transA"))
                    .unwrap_or(0)
                    != 0;
                let shapes = LinearShapes {
                    first_input: operand(first),
                    second_input: operand(second),
                    output: dims(facts),
                    trans_a,
                };
                work.macs = linear_macs(kind, &shapes).unwrap_or(0);
            }
            let estimate = estimate(profile, &work);
            let cost = match objective {
                Objective::Latency => estimate.latency_seconds,
                Objective::Energy => estimate.energy_joules,
                Objective::Size => unreachable!("handled above"),
            };
            (cost, 0.0)
        }
        Onnx::Output(..) | Onnx::Root(_) | Onnx::Input(_) | Onnx::Attrs(_) | Onnx::Absent => (0.0, 0.0),
    }
}

/// For a linear operator: the float operator its MACs are counted as, and
/// the child indices of its two operands (integer forms read their
/// quantization parameters in between).
fn linear_operands(op: egg::Symbol) -> Option<(&'static str, usize, usize)> {
    match split_op(op) {
        ("", "QLinearConv") => Some(("Conv", 0, 3)),
        ("", "QLinearMatMul") => Some(("MatMul", 0, 3)),
        ("com.microsoft", "QGemm") => Some(("Gemm", 0, 3)),
        ("", op_type) => Some((op_type, 0, 1)),
        _ => None,
    }
}

struct Best {
    candidate: usize,
    total: f64,
    cost: f64,
    error: f64,
    needs: FixedBitSet,
}

/// Classes whose chosen e-node is approximate, with its error.
type Approximated = Vec<(usize, f64)>;

/// Extracts with a fixed λ.
pub fn extract_with(costs: &NodeCosts, egraph: &Graph, root: Id, lambda: f64) -> Result<Choice, ExtractError> {
    Ok(extract_within(costs, egraph, root, lambda, None)?.0)
}

/// Extracts with a fixed λ, choosing approximate e-nodes (error > 0) only in
/// the classes `approximable` holds (anywhere when `None`). Returns the
/// choice, the classes where it chose an approximate e-node with its error,
/// and every class's pick (the classes the choice does not need included).
fn extract_within(
    costs: &NodeCosts,
    egraph: &Graph,
    root: Id,
    lambda: f64,
    approximable: Option<&FixedBitSet>,
) -> Result<(Choice, Approximated, Picks), ExtractError> {
    let picks = best_picks(costs, lambda, approximable);
    let (choice, approximated) = collect(costs, egraph, root, &picks, lambda)?;
    Ok((choice, approximated, picks))
}

/// The chosen candidate of every class (an index into its e-nodes), `None`
/// where the class has no acyclic choice.
type Picks = Vec<Option<usize>>;

/// Bottom-up: per class, the e-node whose cost + λ·error, summed over the
/// set of classes it needs, is smallest.
fn best_picks(costs: &NodeCosts, lambda: f64, approximable: Option<&FixedBitSet>) -> Picks {
    let n = costs.ids.len();
    let mut best: Vec<Option<Best>> = (0..n).map(|_| None).collect();
    let own = |b: &Best| b.cost + lambda * b.error;
    let mut changed = true;
    let mut rounds = 0;
    while changed && rounds < 10 * n.max(1) {
        changed = false;
        rounds += 1;
        for class in 0..n {
            let may_approximate = approximable.is_none_or(|classes| classes.contains(class));
            for (ci, candidate) in costs.nodes[class].iter().enumerate() {
                if candidate.children.iter().any(|&c| best[c].is_none()) || (candidate.error > 0.0 && !may_approximate)
                {
                    continue;
                }
                let mut needs = FixedBitSet::with_capacity(n);
                if !candidate.folded {
                    for &child in &candidate.children {
                        needs.union_with(&best[child].as_ref().expect("checked above").needs);
                    }
                    if needs.contains(class) {
                        continue; // a cycle through this class
                    }
                }
                let mut total = candidate.cost + lambda * candidate.error;
                total += needs.ones().map(|c| own(best[c].as_ref().expect("needed classes are chosen"))).sum::<f64>();
                needs.insert(class);
                let better = match &best[class] {
                    None => true,
                    Some(current) => total < current.total * (1.0 - 1e-12) - 1e-300,
                };
                if better {
                    best[class] =
                        Some(Best { candidate: ci, total, cost: candidate.cost, error: candidate.error, needs });
                    changed = true;
                }
            }
        }
    }
    best.into_iter().map(|b| b.map(|b| b.candidate)).collect()
}

/// The choice `picks` make for `root`: the chosen e-node of every class the
/// root needs, the summed cost and error, and the approximated classes.
fn collect(
    costs: &NodeCosts,
    egraph: &Graph,
    root: Id,
    picks: &[Option<usize>],
    lambda: f64,
) -> Result<(Choice, Approximated), ExtractError> {
    let root_index = costs.index[&egraph.find(root)];
    // The chosen nodes: everything the root needs, plus weight computations'
    // operands (which cost nothing at run time, so they are not summed).
    let (mut cost, mut error) = (0.0, 0.0);
    let mut chosen = HashMap::new();
    let mut stack = vec![(root_index, true)];
    let mut counted = FixedBitSet::with_capacity(costs.ids.len());
    let mut approximated = Vec::new();
    while let Some((class, runs)) = stack.pop() {
        let candidate = &costs.nodes[class][picks[class].ok_or(ExtractError::NoChoice)?];
        if runs && !counted.put(class) {
            cost += candidate.cost;
            error += candidate.error;
            if candidate.error > 0.0 {
                approximated.push((class, candidate.error));
            }
        } else if chosen.contains_key(&costs.ids[class]) {
            continue;
        }
        stack.extend(candidate.children.iter().map(|&child| (child, runs && !candidate.folded)));
        chosen.insert(costs.ids[class], candidate.node.clone().map_children(|c| egraph.find(c)));
    }
    Ok((Choice { chosen, cost, error, lambda }, approximated))
}

/// Extracts the cheapest choice whose summed error fits `budget`: λ is
/// bisected to the smallest that fits, then [`refine`] looks past the λ
/// boundary for a cheaper choice that also fits, and [`sharing::improve`]
/// prices the result as a whole graph.
pub fn extract(costs: &NodeCosts, egraph: &Graph, root: Id, budget: f64) -> Result<Choice, ExtractError> {
    let (choice, picks) = fitting(costs, egraph, root, budget)?;
    sharing::improve(costs, egraph, root, choice, picks, budget)
}

/// The bisection and refinement of [`extract`]: a fitting choice and its picks.
fn fitting(costs: &NodeCosts, egraph: &Graph, root: Id, budget: f64) -> Result<(Choice, Picks), ExtractError> {
    let (free, free_approximated, free_picks) = extract_within(costs, egraph, root, 0.0, None)?;
    if free.error <= budget {
        return Ok((free, free_picks));
    }
    // Find a λ large enough, then bisect down to the cheapest that fits.
    let smallest_error =
        costs.nodes.iter().flatten().map(|c| c.error).filter(|&e| e > 0.0).fold(f64::INFINITY, f64::min);
    let mut high = (free.cost.max(1e-30) / smallest_error).max(1e-30);
    let mut fitting = loop {
        let (choice, _, picks) = extract_within(costs, egraph, root, high, None)?;
        if choice.error <= budget {
            break (choice, picks);
        }
        if high > 1e300 {
            return Err(ExtractError::OverBudget { budget, smallest: choice.error });
        }
        high *= 4.0;
    };
    // The classes the last over-budget choice approximated.
    let (mut low, mut over) = (0.0, free_approximated);
    for _ in 0..60 {
        if high - low <= high * 1e-6 {
            break;
        }
        let middle = 0.5 * (low + high);
        let (choice, approximated, picks) = extract_within(costs, egraph, root, middle, None)?;
        if choice.error <= budget {
            high = middle;
            fitting = (choice, picks);
        } else {
            low = middle;
            over = approximated;
        }
    }
    Ok(match refine(costs, egraph, root, budget, over)? {
        Some(refined) if refined.0.cost < fitting.0.cost => refined,
        _ => fitting,
    })
}

/// The bisection's answer is only the cheapest fitting choice when the error
/// grows steadily as λ falls. Alternatives that are cheap only together (two
/// neighbouring quantized layers save the conversion between them) make it
/// jump: just below the fitting λ the choice takes a whole group and goes
/// over budget. Starting from that over-budget choice (`over`: the classes it
/// approximates), this drops the approximation of largest error until the
/// rest fits, then adds back each other approximable class, smallest error
/// first, where the result still fits and costs less. Every step extracts at
/// λ = 0 within the allowed classes; `None` when nothing fits that way.
fn refine(
    costs: &NodeCosts,
    egraph: &Graph,
    root: Id,
    budget: f64,
    over: Approximated,
) -> Result<Option<(Choice, Picks)>, ExtractError> {
    let smallest_error =
        |class: usize| costs.nodes[class].iter().map(|c| c.error).filter(|&e| e > 0.0).fold(f64::INFINITY, f64::min);
    let mut allowed = FixedBitSet::with_capacity(costs.ids.len());
    allowed.extend(over.iter().map(|&(class, _)| class));
    let mut current = extract_within(costs, egraph, root, 0.0, Some(&allowed))?;
    while current.0.error > budget {
        let Some(&(worst, _)) = current.1.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
            return Ok(None);
        };
        allowed.set(worst, false);
        current = extract_within(costs, egraph, root, 0.0, Some(&allowed))?;
    }
    let mut others: Vec<usize> =
        (0..costs.ids.len()).filter(|&class| !allowed.contains(class) && smallest_error(class).is_finite()).collect();
    others.sort_by(|&a, &b| smallest_error(a).total_cmp(&smallest_error(b)));
    for class in others {
        allowed.insert(class);
        let candidate = extract_within(costs, egraph, root, 0.0, Some(&allowed))?;
        if candidate.0.error <= budget && candidate.0.cost < current.0.cost {
            current = candidate;
        } else {
            allowed.set(class, false);
        }
    }
    Ok(Some((current.0, current.2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egraph::alternatives::Approximation;

    fn op(egraph: &mut Graph, name: &str, children: &[Id]) -> Id {
        egraph.add(Onnx::Op(name.into(), children.into()))
    }

    /// A class with a float operator of cost 10 and an approximate
    /// alternative `inner` of `error`.
    fn layer(egraph: &mut Graph, name: &str, x: Id, error: f64, inner: Id) -> Id {
        let float = op(egraph, name, &[x]);
        let approximate = egraph.add(Onnx::Approx(Approximation::Literal(error.to_bits()), [inner]));
        egraph.union(float, approximate);
        float
    }

    /// Three layers P, S, T of float cost 10. P and S are cheap only
    /// together (their approximations share a cost-4 operand: alone 9, both
    /// 14), T saves 0.5 at error 0.04. With a budget of 0.03 only P or S
    /// alone fits (cost 29), but no λ chooses one alone: above λ = 150 the
    /// choice is all float (30), below it P and S together (error 0.04).
    #[test]
    fn a_cheaper_fitting_choice_past_the_lambda_jump_is_found() {
        let mut egraph = Graph::default();
        let x = op(&mut egraph, "Input", &[]);
        let shared = op(&mut egraph, "Shared", &[x]);
        let p_approximate = op(&mut egraph, "PQ", &[x, shared]);
        let s_approximate = op(&mut egraph, "SQ", &[x, shared]);
        let t_approximate = op(&mut egraph, "TQ", &[x]);
        let p = layer(&mut egraph, "P", x, 0.02, p_approximate);
        let s = layer(&mut egraph, "S", x, 0.02, s_approximate);
        let t = layer(&mut egraph, "T", x, 0.04, t_approximate);
        let root = egraph.add(Onnx::Root([p, s, t].into()));
        egraph.rebuild();
        let costs = NodeCosts::from_fn(&egraph, |_, node| match node {
            Onnx::Approx(approximation, _) => (0.0, egraph.analysis.alternatives.error(*approximation)),
            Onnx::Op(name, _) => match name.as_str() {
                "P" | "S" | "T" => (10.0, 0.0),
                "PQ" | "SQ" => (5.0, 0.0),
                "Shared" => (4.0, 0.0),
                "TQ" => (9.5, 0.0),
                _ => (0.0, 0.0),
            },
            _ => (0.0, 0.0),
        });
        let budget = 0.03;
        for lambda in (0..40).map(|k| 1.5f64.powi(k)) {
            let choice = extract_with(&costs, &egraph, root, lambda).unwrap();
            assert!(choice.error > budget || choice.cost == 30.0, "λ {lambda}: {choice:?}");
        }
        let choice = extract(&costs, &egraph, root, budget).unwrap();
        assert_eq!((choice.cost, choice.error), (29.0, 0.02));
        // With room for P and S together, the bisection's own answer stands.
        let choice = extract(&costs, &egraph, root, 0.04).unwrap();
        assert_eq!((choice.cost, choice.error), (24.0, 0.04));
    }

    /// A layer A (cost 10) read by U (1) and by a class that is either V(A)
    /// (1) or W(x) (5). Priced alone, V costs 11 with the A it needs and W 5,
    /// so the bottom-up pick is W (16 in all); since U needs A anyway, V is
    /// the cheaper graph (12).
    #[test]
    fn a_value_the_graph_already_computes_is_reused_not_recomputed() {
        let mut egraph = Graph::default();
        let x = op(&mut egraph, "Input", &[]);
        let a = op(&mut egraph, "A", &[x]);
        let u = op(&mut egraph, "U", &[a]);
        let v = op(&mut egraph, "V", &[a]);
        let w = op(&mut egraph, "W", &[x]);
        egraph.union(v, w);
        let root = egraph.add(Onnx::Root([u, v].into()));
        egraph.rebuild();
        let costs = NodeCosts::from_fn(&egraph, |_, node| match node {
            Onnx::Op(name, _) => match name.as_str() {
                "A" => (10.0, 0.0),
                "U" | "V" => (1.0, 0.0),
                "W" => (5.0, 0.0),
                _ => (0.0, 0.0),
            },
            _ => (0.0, 0.0),
        });
        assert_eq!(extract_with(&costs, &egraph, root, 0.0).unwrap().cost, 16.0, "the bottom-up pick");
        let choice = extract(&costs, &egraph, root, f64::INFINITY).unwrap();
        assert_eq!(choice.cost, 12.0);
        let shared = &choice.chosen[&egraph.find(v)];
        assert!(matches!(shared, Onnx::Op(name, _) if name.as_str() == "V"), "{shared:?}");
    }
}
