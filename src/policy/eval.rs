//! Evaluation: every set's `deny`, `violation` and `warn` rules against one input, and the
//! messages they produce turned into a [`Verdict`].

use serde_json::Value as Json;

use super::input::{TidemarkInput, build_input};
use super::set::{PolicySet, Target};
use super::verdict::{PolicyResult, Verdict};

/// Evaluates every set against a (redacted) plan JSON and the run's facts.
///
/// Never fails: a rule that errors or produces something other than messages becomes an entry
/// in [`Verdict::errors`], which blocks hard. No sets at all is a pass (nothing was asked).
pub fn evaluate(sets: &[PolicySet], plan_json: &Json, tidemark: &TidemarkInput) -> Verdict {
    let input = regorus::Value::from(build_input(plan_json, tidemark));
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for set in sets {
        set.evaluate_into(&input, &mut results, &mut errors);
    }
    Verdict::new(results, errors)
}

impl PolicySet {
    /// Evaluates this set's rules against an input already converted for regorus.
    fn evaluate_into(
        &self,
        input: &regorus::Value,
        results: &mut Vec<PolicyResult>,
        errors: &mut Vec<String>,
    ) {
        // Cloning shares the parsed modules; each evaluation gets its own input and caches.
        let mut engine = self.engine.clone();
        engine.set_input(input.clone());
        for target in &self.targets {
            let query = format!("data.{}.{}", target.package, target.rule);
            let value = match engine.eval_rule(query) {
                Ok(value) => value,
                Err(error) => {
                    errors.push(format!(
                        "{}: {}: {}",
                        self.name(),
                        locate(target),
                        one_line(&format!("{error:#}"))
                    ));
                    continue;
                }
            };
            match messages(&value) {
                Ok(messages) => results.extend(messages.into_iter().map(|message| PolicyResult {
                    set: self.name().to_string(),
                    policy: target.package.clone(),
                    rule: target.rule,
                    level: self.level(),
                    message,
                })),
                Err(problem) => errors.push(format!(
                    "{}: {}: rule `{}` in package {} {problem}",
                    self.name(),
                    locate(target),
                    target.rule,
                    target.package
                )),
            }
        }
    }
}

fn locate(target: &Target) -> String {
    match target.line {
        Some(line) => format!("{}:{line}", target.file),
        None => target.file.clone(),
    }
}

/// regorus errors span several lines (`--> FILE:LINE:COL`, the source line with a caret, then
/// `error: MESSAGE`); a verdict keeps `FILE:LINE:COL: MESSAGE` on one line.
fn one_line(text: &str) -> String {
    let location = text.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "));
    match (location, message) {
        (Some(location), Some(message)) => format!("{location}: {message}"),
        _ => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The messages a rule produced. Undefined (no rule body matched) is no messages; a set or an
/// array holds messages, each a string or an object with a string `msg` (conftest's shape,
/// other keys ignored). Anything else is a policy bug, reported as what it produced.
pub(crate) fn messages(value: &regorus::Value) -> Result<Vec<String>, String> {
    match value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        regorus::Value::Set(_) | regorus::Value::Array(_) => {}
        other => {
            return Err(format!(
                "must produce a set of messages, but produced {}",
                describe(other)
            ));
        }
    }
    let json =
        serde_json::to_value(value).map_err(|e| format!("produced unreadable value: {e}"))?;
    let items = json.as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| match item {
            Json::String(text) => Ok(text.clone()),
            Json::Object(map) => match map.get("msg") {
                Some(Json::String(text)) => Ok(text.clone()),
                _ => Err(format!(
                    "produced an object without a string `msg`: {}",
                    truncate(&item.to_string())
                )),
            },
            other => Err(format!(
                "produced a message that is neither a string nor an object with `msg`: {}",
                truncate(&other.to_string())
            )),
        })
        .collect()
}

fn describe(value: &regorus::Value) -> String {
    let kind = match value {
        regorus::Value::Bool(_) => "a boolean",
        regorus::Value::Number(_) => "a number",
        regorus::Value::String(_) => "a string",
        regorus::Value::Object(_) => "an object",
        regorus::Value::Null => "null",
        _ => "a value",
    };
    let shown = serde_json::to_string(value).unwrap_or_default();
    format!("{kind} ({})", truncate(&shown))
}

fn truncate(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
