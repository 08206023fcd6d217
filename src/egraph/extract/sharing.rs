//! Sharing-aware improvement of an extracted choice. The bottom-up
//! extraction prices each class by the set of classes it needs, on its own:
//! it cannot see that a value some other consumer in the chosen graph pays
//! for anyway is free. It may then take, for a MaxPool quantized to its
//! consumer's scale, a Concat of integer layers re-emitted at that scale —
//! computing those layers twice, since the graph also needs them at their own
//! scale — over reading the Concat the graph already has.
//!
//! This local search prices whole choices instead: it switches one needed
//! class's e-node at a time and keeps the switch when the chosen graph (each
//! class counted once) costs less and its error still fits the budget, until
//! no single switch helps.

use egg::Id;
use fixedbitset::FixedBitSet;

use super::{collect, Choice, ExtractError, NodeCosts, Picks};
use crate::egraph::analysis::Graph;

/// Rounds over every needed class; each round that changes nothing ends it.
const MAX_ROUNDS: usize = 8;

/// Relative saving a switch must bring (float sums are not exact).
const MIN_SAVING: f64 = 1e-9;

/// `choice` (made by `picks`), improved by single-class switches that lower
/// its cost with its error within `budget`.
pub(super) fn improve(
    costs: &NodeCosts,
    egraph: &Graph,
    root: Id,
    choice: Choice,
    mut picks: Picks,
    budget: f64,
) -> Result<Choice, ExtractError> {
    let root_index = costs.index[&egraph.find(root)];
    let Some(mut current) = priced(costs, root_index, &picks) else { return Ok(choice) };
    let mut switched = false;
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        for class in needed(costs, root_index, &picks) {
            for candidate in 0..costs.nodes[class].len() {
                let node = &costs.nodes[class][candidate];
                if picks[class] == Some(candidate) || node.children.iter().any(|&child| picks[child].is_none()) {
                    continue;
                }
                let previous = picks[class].replace(candidate);
                match priced(costs, root_index, &picks) {
                    Some(total) if total.error <= budget && total.cost < current.cost * (1.0 - MIN_SAVING) => {
                        current = total;
                        changed = true;
                    }
                    _ => picks[class] = previous,
                }
            }
        }
        switched |= changed;
        if !changed {
            break;
        }
    }
    if !switched {
        return Ok(choice);
    }
    Ok(collect(costs, egraph, root, &picks, choice.lambda)?.0)
}

/// Summed cost and error of the graph `picks` choose for `root`.
struct Priced {
    cost: f64,
    error: f64,
}

/// The classes the choice reaches from `root`, in visiting order.
fn needed(costs: &NodeCosts, root: usize, picks: &[Option<usize>]) -> Vec<usize> {
    let mut seen = FixedBitSet::with_capacity(picks.len());
    let mut order = Vec::new();
    let mut stack = vec![root];
    while let Some(class) = stack.pop() {
        if seen.put(class) {
            continue;
        }
        order.push(class);
        if let Some(pick) = picks[class] {
            stack.extend(&costs.nodes[class][pick].children);
        }
    }
    order
}

/// The price of the graph `picks` choose for `root`, counting each class
/// once (a weight computation's operands, which cost nothing at run time,
/// not at all); `None` when it has a cycle or a class without a pick.
fn priced(costs: &NodeCosts, root: usize, picks: &[Option<usize>]) -> Option<Priced> {
    if has_cycle(costs, root, picks)? {
        return None;
    }
    let n = picks.len();
    let (mut visited, mut counted) = (FixedBitSet::with_capacity(n), FixedBitSet::with_capacity(n));
    let mut total = Priced { cost: 0.0, error: 0.0 };
    let mut stack = vec![(root, true)];
    while let Some((class, runs)) = stack.pop() {
        let candidate = &costs.nodes[class][picks[class]?];
        if runs {
            if counted.put(class) {
                continue;
            }
            total.cost += candidate.cost;
            total.error += candidate.error;
        } else if visited.contains(class) {
            continue;
        }
        visited.insert(class);
        let children_run = runs && !candidate.folded;
        stack.extend(candidate.children.iter().map(|&child| (child, children_run)));
    }
    Some(total)
}

/// Whether the chosen graph under `root` has a cycle; `None` when a class
/// in it has no pick.
fn has_cycle(costs: &NodeCosts, root: usize, picks: &[Option<usize>]) -> Option<bool> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; picks.len()];
    state[root] = OPEN;
    let mut stack = vec![(root, 0usize)];
    while let Some((class, next)) = stack.last_mut() {
        let children = &costs.nodes[*class][picks[*class]?].children;
        if let Some(&child) = children.get(*next) {
            *next += 1;
            match state[child] {
                OPEN => return Some(true),
                NEW => {
                    state[child] = OPEN;
                    stack.push((child, 0));
                }
                _ => {}
            }
        } else {
            state[*class] = DONE;
            stack.pop();
        }
    }
    Some(false)
}
