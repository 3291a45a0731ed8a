//! Verdicts: every message the policies produced, who produced it, and whether the run is
//! blocked. Stored per run as JSON, so everything here round-trips through serde.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A policy set's enforcement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Reported only; never blocks.
    Advisory,
    /// Blocks unless a person overrides it for this plan.
    SoftMandatory,
    /// Blocks; no override.
    HardMandatory,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Advisory, Level::SoftMandatory, Level::HardMandatory];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Advisory => "advisory",
            Level::SoftMandatory => "soft-mandatory",
            Level::HardMandatory => "hard-mandatory",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .ok_or_else(|| {
                format!("unknown enforcement level {text:?} (advisory, soft-mandatory or hard-mandatory)")
            })
    }
}

/// The rules Tidemark collects from every package, conftest style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// A failure: blocks at the set's level.
    Deny,
    /// A failure, under the name Gatekeeper and some conftest policies use.
    Violation,
    /// Reported, never blocks, whatever the set's level.
    Warn,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Deny, Rule::Violation, Rule::Warn];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Deny => "deny",
            Rule::Violation => "violation",
            Rule::Warn => "warn",
        }
    }

    /// Whether a message from this rule is a failure (as opposed to a warning).
    pub fn is_failure(self) -> bool {
        matches!(self, Rule::Deny | Rule::Violation)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message from one rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyResult {
    /// The policy set's name (`shipped` for Tidemark's own, else the directory's name).
    pub set: String,
    /// The Rego package that produced the message, without the `data.` prefix.
    pub policy: String,
    pub rule: Rule,
    /// The set's enforcement level.
    pub level: Level,
    pub message: String,
}

impl PolicyResult {
    /// How much this result blocks: warnings and advisory failures not at all.
    pub fn blocking(&self) -> Blocking {
        match (self.rule.is_failure(), self.level) {
            (false, _) | (true, Level::Advisory) => Blocking::None,
            (true, Level::SoftMandatory) => Blocking::Soft,
            (true, Level::HardMandatory) => Blocking::Hard,
        }
    }
}

/// Whether a verdict stops the apply, and whether a person may override it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blocking {
    /// Nothing blocks.
    #[default]
    None,
    /// Only soft-mandatory failures block: an override for this plan lets it through.
    Soft,
    /// A hard-mandatory failure or a policy that could not be evaluated: no override.
    Hard,
}

/// What the policies said about one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `blocking == Blocking::None`.
    pub passed: bool,
    pub blocking: Blocking,
    /// Every message, sorted by set, policy, rule and message so verdicts compare and diff.
    pub results: Vec<PolicyResult>,
    /// Policies that could not be evaluated, each naming its set and file. Any error blocks
    /// hard: a policy that did not run has not approved anything.
    pub errors: Vec<String>,
}

impl Verdict {
    /// Builds a verdict from everything the sets produced; the blocking level follows.
    pub fn new(mut results: Vec<PolicyResult>, errors: Vec<String>) -> Verdict {
        results.sort();
        results.dedup();
        let blocking = if errors.is_empty() {
            results
                .iter()
                .map(PolicyResult::blocking)
                .max()
                .unwrap_or(Blocking::None)
        } else {
            Blocking::Hard
        };
        Verdict {
            passed: blocking == Blocking::None,
            blocking,
            results,
            errors,
        }
    }

    /// The results that block (or would, without an override).
    pub fn failures(&self) -> impl Iterator<Item = &PolicyResult> {
        self.results
            .iter()
            .filter(|result| result.blocking() != Blocking::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rule: Rule, level: Level) -> PolicyResult {
        PolicyResult {
            set: "s".into(),
            policy: "p".into(),
            rule,
            level,
            message: format!("{rule} at {level}"),
        }
    }

    fn check(results: &[(Rule, Level)], errors: &[&str], expected: Blocking) {
        let verdict = Verdict::new(
            results.iter().map(|&(r, l)| result(r, l)).collect(),
            errors.iter().map(|e| e.to_string()).collect(),
        );
        assert_eq!(verdict.blocking, expected, "{results:?} {errors:?}");
        assert_eq!(verdict.passed, expected == Blocking::None);
        let json = serde_json::to_string(&verdict).expect("json");
        assert_eq!(
            serde_json::from_str::<Verdict>(&json).expect("verdict"),
            verdict
        );
    }

    #[test]
    fn blocking_follows_rule_and_level() {
        use Level::*;
        use Rule::*;
        check(&[], &[], Blocking::None);
        check(&[(Warn, HardMandatory)], &[], Blocking::None);
        check(
            &[(Deny, Advisory), (Violation, Advisory)],
            &[],
            Blocking::None,
        );
        check(&[(Deny, SoftMandatory)], &[], Blocking::Soft);
        check(&[(Violation, SoftMandatory)], &[], Blocking::Soft);
        check(&[(Deny, HardMandatory)], &[], Blocking::Hard);
        check(
            &[(Deny, SoftMandatory), (Violation, HardMandatory)],
            &[],
            Blocking::Hard,
        );
        check(&[], &["p.rego: broken"], Blocking::Hard);
        check(&[(Warn, Advisory)], &["p.rego: broken"], Blocking::Hard);
    }

    #[test]
    fn levels_parse_and_print_the_same_text() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
            assert_eq!(
                serde_json::to_value(level).expect("json"),
                serde_json::json!(level.as_str())
            );
        }
        assert!("mandatory".parse::<Level>().is_err());
    }
}
