//! The rule catalogue: parses `passes/*.rules` (compiled in) and user rule
//! files into egg rewrites.
//!
//! One rule per entry, `name: LHS => RHS [if guard(?a, ...), ...]`, where LHS
//! is an egg pattern (or `(Op *)`: an `Op` node with any number of inputs) and
//! RHS a pattern or `@applier`, a named Rust applier (src/egraph/appliers.rs).
//! Guards are named Rust conditions (src/egraph/guards.rs) over the pattern's
//! variables. `name: builtin` lists a rewrite done structurally by the build
//! or export of the e-graph. The `#` comment lines just above a rule describe
//! it; the first is what `pare passes` prints. Lines that start with
//! whitespace continue the rule above.

use std::sync::{Arc, Mutex};

use egg::{Applier, Id, Pattern, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use super::analysis::{Facts, Graph};
use super::appliers;
use super::family::Family;
use super::guards;
use super::language::Onnx;

/// The exact families shipped with pare, in the order they run.
pub const EXACT_FAMILIES: &[(&str, &str)] = &[
    ("fold", include_str!("../../passes/fold.rules")),
    ("fuse", include_str!("../../passes/fuse.rules")),
    ("clean", include_str!("../../passes/clean.rules")),
];

/// Every family with its rules text, in the order they run: the exact
/// ones, then the given compression families.
pub fn families<'a>(compression: &'a [&'static dyn Family]) -> impl Iterator<Item = (&'static str, &'static str)> + 'a {
    EXACT_FAMILIES.iter().copied().chain(compression.iter().map(|f| (f.name(), f.rules())))
}

/// A rule as written.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub family: String,
    pub name: String,
    pub description: String,
    pub body: RuleBody,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleBody {
    /// Done by the e-graph's build or export; listed so every rewrite is named.
    Builtin,
    Rewrite {
        lhs: String,
        rhs: String,
        guards: Vec<(String, Vec<String>)>,
    },
}

/// A rule file that does not parse or compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: rule '{rule}': {reason}")]
pub struct RuleError {
    pub source_name: String,
    pub rule: String,
    pub reason: String,
}

/// Parses the text of a rule file.
pub fn parse(family: &str, source_name: &str, text: &str) -> Result<Vec<RuleSpec>, RuleError> {
    let error =
        |rule: &str, reason: String| RuleError { source_name: source_name.to_string(), rule: rule.to_string(), reason };
    // Join continuation lines, keeping the comments above each rule.
    let mut entries: Vec<(Vec<String>, String)> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            comments.clear();
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            comments.push(comment.trim().to_string());
        } else if line.starts_with(char::is_whitespace) {
            match entries.last_mut() {
                Some((_, body)) => {
                    body.push(' ');
                    body.push_str(trimmed);
                }
                None => return Err(error("?", format!("line {}: continuation without a rule", number + 1))),
            }
        } else {
            entries.push((std::mem::take(&mut comments), trimmed.to_string()));
        }
    }
    let mut specs = Vec::new();
    for (comments, entry) in entries {
        let (name, body) = entry.split_once(':').ok_or_else(|| error(&entry, "expected 'name: LHS => RHS'".into()))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(error(name, "a rule name is letters, digits, '-' and '_'".into()));
        }
        if specs.iter().any(|s: &RuleSpec| s.name == name) {
            return Err(error(name, "defined twice".into()));
        }
        let description = comments.join(" ");
        let body = body.trim();
        let body = if body == "builtin" {
            RuleBody::Builtin
        } else {
            let (lhs, rest) = body.split_once("=>").ok_or_else(|| error(name, "expected 'LHS => RHS'".into()))?;
            let (rhs, guard_text) = match rest.split_once(" if ") {
                Some((rhs, guards)) => (rhs, Some(guards)),
                None => (rest, None),
            };
            let guards = match guard_text {
                Some(text) => parse_guards(text).map_err(|reason| error(name, reason))?,
                None => Vec::new(),
            };
            RuleBody::Rewrite { lhs: lhs.trim().to_string(), rhs: rhs.trim().to_string(), guards }
        };
        specs.push(RuleSpec { family: family.to_string(), name: name.to_string(), description, body });
    }
    Ok(specs)
}

/// `g(?a, ?b), h(?c)` → [(g, [?a, ?b]), (h, [?c])].
fn parse_guards(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut guards = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let open = rest.find('(').ok_or_else(|| format!("guard '{rest}' needs (arguments)"))?;
        let close = open + rest[open..].find(')').ok_or_else(|| format!("guard '{rest}' is missing ')'"))?;
        let name = rest[..open].trim().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("guard '{rest}' needs a name before its (arguments)"));
        }
        let args = rest[open + 1..close].split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        guards.push((name, args));
        rest = rest[close + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Ok(guards)
}

/// Where a rule fired: the rule and the e-class it added an alternative to.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    pub rule: String,
    pub class: Id,
}

/// Shared log of firings, in the order they happened.
pub type FiringLog = Arc<Mutex<Vec<Firing>>>;

/// Compiles a rule into an egg rewrite (`None` for builtins).
/// `families`: the compression families whose appliers and guards rules may name.
pub fn compile(
    spec: &RuleSpec,
    source_name: &str,
    log: &FiringLog,
    families: &[&'static dyn Family],
) -> Result<Option<Rewrite<Onnx, Facts>>, RuleError> {
    let error = |reason: String| RuleError { source_name: source_name.to_string(), rule: spec.name.clone(), reason };
    let RuleBody::Rewrite { lhs, rhs, guards } = &spec.body else { return Ok(None) };
    let searcher: RuleSearcher = match any_arity_op(lhs) {
        Some(op) => RuleSearcher::Op(Symbol::from(op)),
        None => RuleSearcher::Pattern(lhs.parse::<Pattern<Onnx>>().map_err(|e| error(format!("left side: {e}")))?),
    };
    let bound = searcher.bound_vars();
    let mut checks = Vec::new();
    let (mut unshared_intermediates, mut measured) = (false, false);
    for (name, args) in guards {
        if [UNSHARED_INTERMEDIATES, MEASURED].contains(&name.as_str()) {
            if !args.is_empty() {
                return Err(error(format!("guard '{name}' takes no arguments")));
            }
            if name == UNSHARED_INTERMEDIATES {
                if !matches!(searcher, RuleSearcher::Pattern(_)) {
                    return Err(error(format!("guard '{name}' needs a pattern on the left side")));
                }
                unshared_intermediates = true;
            } else {
                measured = true;
            }
            continue;
        }
        let guard = guards::lookup(name, families)
            .ok_or_else(|| error(format!("unknown guard '{name}' (known: {})", guards::names(families).join(", "))))?;
        // Variables first, then numbers.
        let split = args.iter().position(|a| !a.starts_with('?')).unwrap_or(args.len());
        let vars = args[..split]
            .iter()
            .map(|a| {
                let var: Var = a.parse().map_err(|_| error(format!("guard argument '{a}' is not a ?variable")))?;
                if bound.contains(&var) {
                    Ok(var)
                } else {
                    Err(error(format!("guard argument '{a}' is not bound by the left side")))
                }
            })
            .collect::<Result<Vec<Var>, RuleError>>()?;
        let numbers = args[split..]
            .iter()
            .map(|a| match a.parse::<f64>() {
                Ok(number) if number.is_finite() => Ok(number),
                _ => Err(error(format!(
                    "guard argument '{a}' is neither a ?variable nor a number (variables come first)"
                ))),
            })
            .collect::<Result<Vec<f64>, RuleError>>()?;
        guard.check_arity(vars.len(), numbers.len()).map_err(|reason| error(format!("guard '{name}': {reason}")))?;
        checks.push(GuardCheck { guard, vars, numbers });
    }
    let action = match rhs.strip_prefix('@') {
        Some(name) => Action::Named(appliers::lookup(name, families).ok_or_else(|| {
            error(format!("unknown applier '@{name}' (known: {})", appliers::names(families).join(", ")))
        })?),
        None => {
            let pattern: Pattern<Onnx> = rhs.parse().map_err(|e| error(format!("right side: {e}")))?;
            if let Some(var) = pattern.vars().into_iter().find(|v| !bound.contains(v)) {
                return Err(error(format!("right side uses {var}, which the left side does not bind")));
            }
            let written = pattern
                .ast
                .as_ref()
                .iter()
                .filter_map(|node| match node {
                    egg::ENodeOrVar::ENode(Onnx::Op(op, _)) => Some(*op),
                    _ => None,
                })
                .collect();
            Action::Pattern(pattern.ast, written)
        }
    };
    let applier = GuardedApplier {
        rule: spec.name.clone(),
        op: match &searcher {
            RuleSearcher::Op(op) => Some(*op),
            RuleSearcher::Pattern(_) => None,
        },
        lhs: match &searcher {
            RuleSearcher::Pattern(pattern) => Some(pattern.ast.clone()),
            RuleSearcher::Op(_) => None,
        },
        checks,
        unshared_intermediates,
        measured,
        action,
        log: log.clone(),
    };
    Rewrite::new(spec.name.as_str(), searcher, applier).map(Some).map_err(error)
}

/// `(Op *)` → `Op`.
fn any_arity_op(lhs: &str) -> Option<&str> {
    let inner = lhs.trim().strip_prefix('(')?.strip_suffix(')')?.trim();
    let (op, star) = inner.split_once(char::is_whitespace)?;
    (star.trim() == "*").then_some(op)
}

/// What a rule's left side matches.
enum RuleSearcher {
    Pattern(Pattern<Onnx>),
    /// Every e-class holding an `Op` node of this operator, whatever its arity.
    Op(Symbol),
}

impl RuleSearcher {
    fn bound_vars(&self) -> Vec<Var> {
        match self {
            RuleSearcher::Pattern(p) => p.vars(),
            RuleSearcher::Op(_) => Vec::new(),
        }
    }
}

impl Searcher<Onnx, Facts> for RuleSearcher {
    fn search_eclass_with_limit(&self, egraph: &Graph, eclass: Id, limit: usize) -> Option<SearchMatches<'_, Onnx>> {
        match self {
            RuleSearcher::Pattern(p) => p.search_eclass_with_limit(egraph, eclass, limit),
            RuleSearcher::Op(op) => egraph[eclass]
                .nodes
                .iter()
                .any(|n| matches!(n, Onnx::Op(o, _) if o == op))
                .then(|| SearchMatches { eclass, substs: vec![Subst::with_capacity(0)], ast: None }),
        }
    }

    fn vars(&self) -> Vec<Var> {
        self.bound_vars()
    }
}

/// What a rule adds when its guards hold.
enum Action {
    /// A pattern, and the operators it writes (each must be one the model's
    /// opset, or the target opset, has: [`super::analysis::Facts::may_write`]).
    Pattern(PatternAst<Onnx>, Vec<Symbol>),
    Named(appliers::NamedApplier),
}

/// A guard with the variables and numbers a rule gives it.
struct GuardCheck {
    guard: guards::Guard,
    vars: Vec<Var>,
    numbers: Vec<f64>,
}

struct GuardedApplier {
    rule: String,
    /// The operator an any-arity rule matched.
    op: Option<Symbol>,
    /// The left side, when it is a pattern.
    lhs: Option<PatternAst<Onnx>>,
    checks: Vec<GuardCheck>,
    /// `unshared_intermediates()`: the classes the left side matched below
    /// its root must each have one reader.
    unshared_intermediates: bool,
    /// `measured()`: the classes the rule matched are priced by measured
    /// latencies ([`super::analysis::Facts::measured_classes`]).
    measured: bool,
    action: Action,
    log: FiringLog,
}

impl Applier<Onnx, Facts> for GuardedApplier {
    fn apply_one(
        &self,
        egraph: &mut Graph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Onnx>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        for check in &self.checks {
            let args: Vec<Id> = check.vars.iter().map(|v| subst[*v]).collect();
            if !check.guard.holds(egraph, eclass, &args, &check.numbers) {
                return Vec::new();
            }
        }
        // The classes the left side matched, only for the rules that read them.
        let matched = match (&self.lhs, self.unshared_intermediates || self.measured) {
            (_, false) => Vec::new(),
            (Some(lhs), true) => match matched_classes(egraph, lhs, subst) {
                Some(classes) => classes,
                None => return Vec::new(),
            },
            (None, true) => vec![eclass],
        };
        let below_root = &matched[..matched.len().saturating_sub(1)];
        if self.unshared_intermediates && below_root.iter().any(|&class| egraph[class].data.uses > 1) {
            return Vec::new();
        }
        egraph.analysis.walked.clear();
        let added = match &self.action {
            Action::Pattern(ast, written) => {
                if !written.iter().all(|op| egraph.analysis.may_write(op.as_str())) {
                    return Vec::new();
                }
                Some(egraph.add_instantiation(ast, subst))
            }
            Action::Named(applier) => applier.apply(egraph, eclass, subst, self.op),
        };
        if self.measured && added.is_some() {
            let walked = std::mem::take(&mut egraph.analysis.walked);
            egraph.analysis.measured_classes.extend(matched.iter().chain(&walked));
        }
        let Some(added) = added else { return Vec::new() };
        if egraph.union(eclass, added) {
            self.log.lock().unwrap_or_else(|p| p.into_inner()).push(Firing { rule: self.rule.clone(), class: eclass });
            vec![eclass]
        } else {
            Vec::new()
        }
    }
}

/// The guard the rule engine checks itself: a match's intermediates are unshared.
const UNSHARED_INTERMEDIATES: &str = "unshared_intermediates";

/// The guard that marks a rule whose alternatives are priced by measured latencies.
const MEASURED: &str = "measured";

/// The classes the pattern `lhs` matched under `subst`, one per e-node of
/// the pattern (its root last); `None` when one is not in the e-graph.
fn matched_classes(egraph: &Graph, lhs: &PatternAst<Onnx>, subst: &Subst) -> Option<Vec<Id>> {
    let mut classes: Vec<Id> = Vec::with_capacity(lhs.as_ref().len());
    let mut matched = Vec::new();
    for node in lhs.as_ref() {
        let class = match node {
            egg::ENodeOrVar::Var(var) => subst[*var],
            egg::ENodeOrVar::ENode(enode) => {
                let enode = egg::Language::map_children(enode.clone(), |child| classes[usize::from(child)]);
                let class = egraph.lookup(enode)?;
                matched.push(class);
                class
            }
        };
        classes.push(class);
    }
    Some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files_parse_with_descriptions_and_guards() {
        let text = "# Identity passes its input through.\nremove-identity: (Identity ?x ?a) => ?x\n\n\
                    # Folded.\n# More words.\nfold-it: (Shape *) => @fold_shape\n\
                    guarded: (Cast ?x ?a) => ?x\n    if same_dtype(?x)\n# Builtin.\ndead: builtin\n";
        let specs = parse("clean", "test.rules", text).unwrap();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].description, "Identity passes its input through.");
        assert_eq!(specs[1].description, "Folded. More words.");
        assert_eq!(
            specs[2].body,
            RuleBody::Rewrite {
                lhs: "(Cast ?x ?a)".into(),
                rhs: "?x".into(),
                guards: vec![("same_dtype".into(), vec!["?x".into()])]
            }
        );
        assert_eq!(specs[3].body, RuleBody::Builtin);
        let log = FiringLog::default();
        for spec in &specs {
            compile(spec, "test.rules", &log, &[]).unwrap();
        }
    }

    #[test]
    fn bad_rules_name_the_rule_and_the_reason() {
        let log = FiringLog::default();
        let compile_one = |text: &str| {
            let specs = parse("user", "mine.rules", text)?;
            compile(&specs[0], "mine.rules", &log, &[]).map(|_| ())
        };
        let err = compile_one("r1: (Identity ?x ?a) => ?y").unwrap_err();
        assert!(err.to_string().contains("mine.rules: rule 'r1'") && err.reason.contains("?y"), "{err}");
        let err = compile_one("r2: (Identity ?x ?a) => ?x if no_such_guard(?x)").unwrap_err();
        assert!(err.reason.contains("unknown guard 'no_such_guard'"), "{err}");
        let err = compile_one("r3: (Identity ?x ?a) => @nope").unwrap_err();
        assert!(err.reason.contains("unknown applier"), "{err}");
        let err = compile_one("r4: (identity ?x) => ?x").unwrap_err();
        assert!(err.reason.contains("left side"), "{err}");
        assert!(parse("user", "mine.rules", "no arrow here").is_err());
        assert!(parse("user", "mine.rules", "a: builtin\na: builtin").is_err());
    }

    /// Found by a user (and the rules fuzzer): a ')' before the '(' sliced backwards and panicked.
    #[test]
    fn malformed_guards_are_errors_not_panics() {
        for guards in ["g)(", ")(", "g(?x", "(?x)", "g(?x) h", "g(?x)) (", "é)(x"] {
            let text = format!("r: (Relu ?x ?a) => ?x if {guards}");
            let err = parse("user", "mine.rules", &text).unwrap_err();
            assert!(err.to_string().contains("mine.rules: rule 'r'"), "{guards}: {err}");
        }
    }
}
