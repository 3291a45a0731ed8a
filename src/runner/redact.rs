//! Redaction: secrets and every value terraform marks sensitive become `(sensitive)` before
//! anything is stored or shown.
//!
//! Terraform 1.0.3 prints `(sensitive)` in its human output but writes sensitive values in
//! plain text into `show -json`. So redaction works in two passes: a structural one over the
//! plan JSON that follows terraform's own sensitivity marks (and learns the values), and a
//! textual one ([`Redactor`]) that replaces every known value wherever it appears: in log
//! lines, error tails and the rest of the JSON.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::crypto::REDACTED;

mod structure;

pub use structure::{PLAN_FORMAT_KEYS, PLAN_WORD_FIELDS};

/// Shorter values are not replaced in free text: a sensitive `true` or `1` would otherwise
/// blank out every log line. The plan JSON still hides them structurally.
const MIN_TEXT_LEN: usize = 4;

/// Replaces known sensitive values in text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a value containing another is replaced whole.
    values: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    pub fn new<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Redactor {
        let mut redactor = Redactor::default();
        redactor.extend(values);
        redactor
    }

    /// Adds values to hide; blank and very short ones are ignored (see `MIN_TEXT_LEN`).
    pub fn extend<S: Into<String>>(&mut self, values: impl IntoIterator<Item = S>) {
        let mut all: BTreeSet<String> = self.values.drain(..).collect();
        for value in values {
            let value = value.into();
            if value.trim().len() >= MIN_TEXT_LEN {
                all.insert(value);
            }
        }
        self.values = all.into_iter().collect();
        self.values
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// `text` with every known value replaced.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), REDACTED));
            }
        }
        out
    }

    /// Redacts every string (and object key) inside a JSON value.
    pub fn redact_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (key, mut v) in old {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&key).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

/// Redacts a plan JSON (`terraform show -json`) in place, following terraform's sensitivity
/// marks, then replaces every learnt value and every value of `redactor` in all strings.
/// The learnt values are added to `redactor` so later text (error tails) is covered too.
pub fn redact_plan_json(plan: &mut Value, redactor: &mut Redactor) {
    let mut learnt = Vec::new();
    // `resource_drift` (Terraform 1.2 and later, OpenTofu: what changed outside terraform) has
    // the shape of `resource_changes`, and its `before` is often a value found nowhere else
    // (the one in the state before the refresh); `deferred_changes` wraps resource changes.
    for key in ["resource_changes", "resource_drift"] {
        if let Some(changes) = plan.get_mut(key).and_then(Value::as_array_mut) {
            for change in changes.iter_mut().filter_map(|c| c.get_mut("change")) {
                redact_change(change, &mut learnt);
            }
        }
    }
    if let Some(deferred) = plan
        .get_mut("deferred_changes")
        .and_then(Value::as_array_mut)
    {
        for change in deferred
            .iter_mut()
            .filter_map(|d| d.pointer_mut("/resource_change/change"))
        {
            redact_change(change, &mut learnt);
        }
    }
    if let Some(outputs) = plan
        .get_mut("output_changes")
        .and_then(Value::as_object_mut)
    {
        for change in outputs.values_mut() {
            redact_change(change, &mut learnt);
        }
    }
    for key in ["planned_values", "prior_state"] {
        if let Some(values) = state_values(plan, key) {
            redact_values(values, &mut learnt);
        }
    }
    let sensitive_vars = sensitive_variables(plan.pointer("/configuration/root_module"));
    if let Some(vars) = plan.get_mut("variables").and_then(Value::as_object_mut) {
        for (name, var) in vars.iter_mut() {
            if sensitive_vars.contains(name)
                && let Some(value) = var.get_mut("value")
            {
                hide(value, &mut learnt);
            }
        }
    }
    if let Some(module) = plan.pointer_mut("/configuration/root_module") {
        redact_configuration(module, &mut learnt);
    }
    redactor.extend(learnt);
    // The pass over every string must not rewrite the plan's structure: a sensitive value that
    // happens to be an action ("delete"), a key ("change") or a resource type would hide a
    // change from the policies. Those fields are words of the configuration, never values.
    let kept = structure::take(plan);
    structure::redact_strings(redactor, plan);
    structure::put(plan, kept);
}

/// `planned_values` holds `outputs`/`root_module` directly; `prior_state` under `values`.
fn state_values<'p>(plan: &'p mut Value, key: &str) -> Option<&'p mut Value> {
    let section = plan.get_mut(key)?;
    if section.get("values").is_some() {
        section.get_mut("values")
    } else {
        Some(section)
    }
}

/// A change (`before`/`after` with `before_sensitive`/`after_sensitive` marks).
fn redact_change(change: &mut Value, learnt: &mut Vec<String>) {
    for (value_key, mark_key) in [("before", "before_sensitive"), ("after", "after_sensitive")] {
        let mark = change.get(mark_key).cloned().unwrap_or(Value::Bool(false));
        if let Some(value) = change.get_mut(value_key) {
            apply_mark(value, &mark, learnt);
        }
    }
}

/// Hides the parts of `value` that `mark` (terraform's sensitivity mask: `true`, or an
/// object/array of the value's shape) says are sensitive.
fn apply_mark(value: &mut Value, mark: &Value, learnt: &mut Vec<String>) {
    match (mark, value) {
        (Value::Bool(true), value) => hide(value, learnt),
        (Value::Object(marks), Value::Object(values)) => {
            for (key, mark) in marks {
                if let Some(value) = values.get_mut(key) {
                    apply_mark(value, mark, learnt);
                }
            }
        }
        (Value::Array(marks), Value::Array(values)) => {
            for (mark, value) in marks.iter().zip(values.iter_mut()) {
                apply_mark(value, mark, learnt);
            }
        }
        _ => {}
    }
}

/// Replaces a whole value with the marker, remembering its text leaves.
fn hide(value: &mut Value, learnt: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    collect_leaves(value, learnt);
    *value = Value::String(REDACTED.to_string());
}

fn collect_leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_leaves(v, out)),
        _ => {}
    }
}

/// A state-shaped value: `outputs` with `sensitive` flags and modules of resources with
/// `sensitive_values` marks.
fn redact_values(values: &mut Value, learnt: &mut Vec<String>) {
    if let Some(outputs) = values.get_mut("outputs").and_then(Value::as_object_mut) {
        for output in outputs.values_mut() {
            if output.get("sensitive") == Some(&Value::Bool(true))
                && let Some(value) = output.get_mut("value")
            {
                hide(value, learnt);
            }
        }
    }
    if let Some(module) = values.get_mut("root_module") {
        redact_module(module, learnt);
    }
}

fn redact_module(module: &mut Value, learnt: &mut Vec<String>) {
    if let Some(resources) = module.get_mut("resources").and_then(Value::as_array_mut) {
        for resource in resources {
            let mark = resource
                .get("sensitive_values")
                .cloned()
                .unwrap_or_default();
            if let Some(values) = resource.get_mut("values") {
                apply_mark(values, &mark, learnt);
            }
        }
    }
    if let Some(children) = module
        .get_mut("child_modules")
        .and_then(Value::as_array_mut)
    {
        for child in children {
            redact_module(child, learnt);
        }
    }
}

/// The names of the variables a configuration module declares `sensitive = true`.
fn sensitive_variables(module: Option<&Value>) -> BTreeSet<String> {
    module
        .and_then(|m| m.get("variables"))
        .and_then(Value::as_object)
        .map(|vars| {
            vars.iter()
                .filter(|(_, v)| v.get("sensitive") == Some(&Value::Bool(true)))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The configuration section: defaults of sensitive variables, and constant arguments that
/// module calls pass to a module's sensitive variables.
fn redact_configuration(module: &mut Value, learnt: &mut Vec<String>) {
    let sensitive = sensitive_variables(Some(module));
    if let Some(vars) = module.get_mut("variables").and_then(Value::as_object_mut) {
        for (name, var) in vars.iter_mut() {
            if sensitive.contains(name)
                && let Some(default) = var.get_mut("default")
            {
                hide(default, learnt);
            }
        }
    }
    let Some(calls) = module
        .get_mut("module_calls")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for call in calls.values_mut() {
        let inner_sensitive = sensitive_variables(call.get("module"));
        if let Some(exprs) = call.get_mut("expressions").and_then(Value::as_object_mut) {
            for (name, expr) in exprs.iter_mut() {
                if inner_sensitive.contains(name)
                    && let Some(constant) = expr.get_mut("constant_value")
                {
                    hide(constant, learnt);
                }
            }
        }
        if let Some(inner) = call.get_mut("module") {
            redact_configuration(inner, learnt);
        }
    }
}

/// The variables a stack declares `sensitive = true` and the values its files give them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StackSensitives {
    pub names: BTreeSet<String>,
    pub values: Vec<String>,
}

/// Reads a stack's `*.tf` for variables declared `sensitive = true` with their literal
/// defaults, and `terraform.tfvars` / `*.auto.tfvars` for the values assigned to them. Known
/// before terraform runs, so these are hidden from the streamed logs too. Files that do not
/// parse are skipped: terraform reports them itself.
pub fn sensitive_in_stack(dir: &Path) -> StackSensitives {
    let mut found = StackSensitives::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut tf = Vec::new();
    let mut tfvars = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tf") {
            tf.push(path);
        } else if name == "terraform.tfvars" || name.ends_with(".auto.tfvars") {
            tfvars.push(path);
        }
    }
    for path in tf {
        let Some(body) = parse(&path) else { continue };
        for block in body.blocks().filter(|b| b.identifier() == "variable") {
            let sensitive = block
                .body()
                .attributes()
                .any(|a| a.key() == "sensitive" && *a.expr() == hcl::Expression::Bool(true));
            let Some(name) = block.labels().first() else {
                continue;
            };
            if sensitive {
                found.names.insert(name.as_str().to_string());
                if let Some(default) = block.body().attributes().find(|a| a.key() == "default") {
                    literal_leaves(default.expr(), &mut found.values);
                }
            }
        }
    }
    for path in tfvars {
        let Some(body) = parse(&path) else { continue };
        for attr in body.attributes().filter(|a| found.names.contains(a.key())) {
            literal_leaves(attr.expr(), &mut found.values);
        }
    }
    found
}

fn parse(path: &Path) -> Option<hcl::Body> {
    hcl::parse(&std::fs::read_to_string(path).ok()?).ok()
}

fn literal_leaves(expr: &hcl::Expression, out: &mut Vec<String>) {
    use hcl::Expression as E;
    match expr {
        E::String(s) => out.push(s.clone()),
        E::Number(n) => out.push(n.to_string()),
        E::Array(items) => items.iter().for_each(|e| literal_leaves(e, out)),
        E::Object(map) => map.values().for_each(|e| literal_leaves(e, out)),
        E::TemplateExpr(t) => out.push(t.to_string()),
        _ => {}
    }
}

/// What to redact of a secret file: its whole text and each of its lines (a key file's
/// lines, a JSON credential's values), for files up to 1 MiB. A file that cannot be read here
/// was already refused when the run resolved its variables.
pub(super) fn secret_file_values(file: &Path) -> Vec<String> {
    const MAX: u64 = 1 << 20;
    let small = std::fs::metadata(file).is_ok_and(|m| m.len() <= MAX);
    let Some(text) = small.then(|| std::fs::read_to_string(file).ok()).flatten() else {
        return Vec::new();
    };
    let mut values: Vec<String> = text
        .lines()
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
        .collect();
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        json_strings(&json, &mut values);
    }
    values.push(text.trim().to_string());
    values.retain(|v| v.len() >= 8);
    values
}

fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => {
            out.push(s.clone());
            out.extend(s.lines().map(|l| l.trim().to_string()));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret;
    use serde_json::json;

    fn check(mut plan: Value, expected: Value, learnt: &[&str]) {
        let mut redactor = Redactor::default();
        redact_plan_json(&mut plan, &mut redactor);
        assert_eq!(plan, expected);
        for value in learnt {
            assert_eq!(redactor.redact(value), REDACTED, "learnt {value}");
        }
    }

    #[test]
    fn resource_changes_follow_the_marks() {
        check(
            json!({"resource_changes": [{"change": {
                "before": null,
                "after": {"triggers": {"value": "hunter2-pw", "other": "plain"}, "list": ["a", "secret-b"]},
                "before_sensitive": false,
                "after_sensitive": {"triggers": {"value": true}, "list": [false, true]}
            }}]}),
            json!({"resource_changes": [{"change": {
                "before": null,
                "after": {"triggers": {"value": REDACTED, "other": "plain"}, "list": ["a", REDACTED]},
                "before_sensitive": false,
                "after_sensitive": {"triggers": {"value": true}, "list": [false, true]}
            }}]}),
            &["hunter2-pw", "secret-b"],
        );
    }

    /// A sensitive value that is also a word of the plan's structure ("delete", "change") is
    /// redacted where it is data, but the actions, keys, types and names stay, so the policies
    /// still see the change (it would otherwise hide a destroy from them).
    #[test]
    fn a_secret_equal_to_a_word_of_the_structure_leaves_the_structure_alone() {
        let mut plan = json!({
            "resource_changes": [{
                "address": "null_resource.delete",
                "type": "null_resource",
                "name": "delete",
                "change": {
                    "actions": ["delete"],
                    "before": {"triggers": {"value": "delete", "note": "change"}},
                    "after": null,
                    "before_sensitive": {"triggers": {"value": true, "note": true}},
                    "after_sensitive": false
                }
            }],
            "variables": {"x": {"value": "a change to delete"}}
        });
        let mut redactor = Redactor::default();
        redact_plan_json(&mut plan, &mut redactor);
        let change = &plan["resource_changes"][0];
        assert_eq!(change["change"]["actions"], json!(["delete"]));
        assert_eq!(change["type"], "null_resource");
        assert_eq!(change["name"], "delete");
        // An address can carry a secret (a `for_each` key through `nonsensitive`): redacted.
        assert_eq!(change["address"], "null_resource.(sensitive)");
        assert_eq!(change["change"]["before"]["triggers"]["value"], REDACTED);
        assert_eq!(
            plan["variables"]["x"]["value"],
            "a (sensitive) to (sensitive)"
        );
    }

    /// Found by the `plan` fuzz target: a sensitive `before` in `resource_drift` (the value
    /// before a refresh, in no other section) was left in the stored plan JSON.
    #[test]
    fn resource_drift_and_deferred_changes_follow_the_marks() {
        let change = |before: &str| {
            json!({"change": {
                "before": {"password": before, "id": "1"},
                "after": null,
                "before_sensitive": {"password": true},
                "after_sensitive": false
            }})
        };
        let hidden = json!({"change": {
            "before": {"password": REDACTED, "id": "1"},
            "after": null,
            "before_sensitive": {"password": true},
            "after_sensitive": false
        }});
        check(
            json!({
                "resource_drift": [change("old-pw-1234")],
                "deferred_changes": [{"reason": "provider_config_unknown", "resource_change": change("deferred-pw")}],
                "note": "was old-pw-1234"
            }),
            json!({
                "resource_drift": [hidden.clone()],
                "deferred_changes": [{"reason": "provider_config_unknown", "resource_change": hidden}],
                "note": "was (sensitive)"
            }),
            &["old-pw-1234", "deferred-pw"],
        );
    }

    #[test]
    fn outputs_variables_and_values_are_hidden_and_repeats_replaced() {
        check(
            json!({
                "variables": {"pw": {"value": "hunter2-pw"}, "region": {"value": "eu-west-1"}},
                "output_changes": {"secret": {"after": "hunter2-pw", "after_sensitive": true, "before": null, "before_sensitive": true}},
                "planned_values": {"outputs": {"secret": {"sensitive": true, "value": "hunter2-pw"}},
                    "root_module": {"child_modules": [{"resources": [{"values": {"x": 12345}, "sensitive_values": {"x": true}}]}]}},
                "prior_state": {"values": {"outputs": {"secret": {"sensitive": true, "value": {"k": "v-hunter2-pw"}}}}},
                "configuration": {"root_module": {
                    "variables": {"pw": {"default": "hunter2-pw", "sensitive": true}},
                    "module_calls": {"m": {"expressions": {"token": {"constant_value": "tok-123456"}},
                        "module": {"variables": {"token": {"sensitive": true}}}}},
                    "resources": [{"expressions": {"note": {"constant_value": "has hunter2-pw inside"}}}]
                }}
            }),
            json!({
                "variables": {"pw": {"value": REDACTED}, "region": {"value": "eu-west-1"}},
                "output_changes": {"secret": {"after": REDACTED, "after_sensitive": true, "before": null, "before_sensitive": true}},
                "planned_values": {"outputs": {"secret": {"sensitive": true, "value": REDACTED}},
                    "root_module": {"child_modules": [{"resources": [{"values": {"x": REDACTED}, "sensitive_values": {"x": true}}]}]}},
                "prior_state": {"values": {"outputs": {"secret": {"sensitive": true, "value": REDACTED}}}},
                "configuration": {"root_module": {
                    "variables": {"pw": {"default": REDACTED, "sensitive": true}},
                    "module_calls": {"m": {"expressions": {"token": {"constant_value": REDACTED}},
                        "module": {"variables": {"token": {"sensitive": true}}}}},
                    "resources": [{"expressions": {"note": {"constant_value": "has (sensitive) inside"}}}]
                }}
            }),
            &["hunter2-pw", "12345", "tok-123456", "v-hunter2-pw"],
        );
    }

    #[test]
    fn text_redaction_prefers_the_longest_value_and_skips_tiny_ones() {
        let r = Redactor::new(["abcd", "abcdefgh", "no"]);
        assert_eq!(
            r.redact("x abcdefgh y abcd z no"),
            "x (sensitive) y (sensitive) z no"
        );
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(..)");
    }

    #[test]
    fn stack_files_give_sensitive_defaults_and_tfvars() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("main.tf"),
            "variable \"pw\" {\n  sensitive = true\n  default = \"default-secret\"\n}\nvariable \"open\" { default = \"visible\" }\nvariable \"tok\" { sensitive = true }\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("terraform.tfvars"),
            "tok = \"tfvars-secret\"\nopen = \"x-visible\"\n",
        )
        .expect("write");
        let mut found = sensitive_in_stack(dir.path());
        found.values.sort();
        assert_eq!(found.values, ["default-secret", "tfvars-secret"]);
        assert_eq!(found.names.into_iter().collect::<Vec<_>>(), ["pw", "tok"]);
    }
}
