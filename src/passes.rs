//! `pare passes`: the rule catalogue as text — every shipped family with its
//! rules and their one-line descriptions, then the guards and appliers a
//! rule (shipped or `--rules FILE`) may name.

use std::fmt::Write as _;

use crate::egraph::{appliers, catalogue, guards, rules, RuleError};
use crate::families::REGISTRY;

/// The first comment paragraph of a rules file: what the family is.
pub fn family_description(text: &str) -> String {
    text.lines()
        .take_while(|line| line.trim_start().starts_with('#'))
        .map(|line| line.trim_start().trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The listing `pare passes` prints.
pub fn listing() -> Result<String, RuleError> {
    let rules = catalogue(REGISTRY)?;
    let mut out = String::new();
    for (family, text) in rules::families(REGISTRY) {
        let description = family_description(text);
        let description = description.strip_prefix(&format!("{family}:")).unwrap_or(&description).trim();
        let _ = writeln!(out, "{family}: {description}");
        for rule in rules.iter().filter(|r| r.family == *family) {
            let _ = writeln!(out, "  {:<26} {}", rule.name, rule.description);
        }
        out.push('\n');
    }
    out.push_str("guards (if name(?a, ...)):\n");
    for guard in guards::all(REGISTRY) {
        let _ = writeln!(out, "  {:<26} {}", guard.name, guard.about);
    }
    out.push_str("\nappliers (=> @name):\n");
    for applier in appliers::all(REGISTRY) {
        let _ = writeln!(out, "  {:<26} {}", applier.name, applier.about);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_rule_is_listed_with_a_description() {
        let text = listing().unwrap();
        let rules = catalogue(REGISTRY).unwrap();
        assert!(rules.len() >= 30, "{} rules", rules.len());
        for rule in &rules {
            assert!(!rule.description.is_empty(), "rule {} has no description", rule.name);
            assert!(text.contains(&format!("  {:<26} ", rule.name)), "{} missing", rule.name);
        }
        assert!(text.starts_with("fold: exact constant folding"), "{text}");
    }
}
