//! What the pass of learnt values over a whole plan JSON leaves alone: the fields of each
//! resource change that are structure (type, name, actions, ...) and the keys of
//! terraform's plan format. A sensitive value that happens to equal one of those words would
//! otherwise rewrite the plan's shape and hide a change from the policies.

use std::borrow::Cow;

use serde_json::Value;

use super::Redactor;

/// A change entry's structural fields, taken out while the pass runs, by JSON pointer.
pub(super) type Kept = Vec<(String, Vec<(String, Value)>)>;

/// The fields of each resource change that are structure, not data: a resource's mode, type,
/// name and provider are words of the configuration, never values. Addresses and indexes are
/// not among them: a `for_each` key can carry a secret (through `nonsensitive`), so they are
/// redacted like any text.
pub const PLAN_WORD_FIELDS: &[&str] = &["mode", "type", "name", "provider_name", "action_reason"];

/// The keys of terraform's plan format, left as they are by the pass over every string.
pub const PLAN_FORMAT_KEYS: &[&str] = &[
    "format_version",
    "terraform_version",
    "variables",
    "planned_values",
    "resource_changes",
    "resource_drift",
    "deferred_changes",
    "resource_change",
    "output_changes",
    "prior_state",
    "configuration",
    "relevant_attributes",
    "checks",
    "change",
    "actions",
    "before",
    "after",
    "after_unknown",
    "before_sensitive",
    "after_sensitive",
    "replace_paths",
    "values",
    "sensitive_values",
    "root_module",
    "child_modules",
    "resources",
    "outputs",
    "value",
    "sensitive",
    "schema_version",
    "reason",
    "importing",
    "generated_config",
];

/// Every JSON pointer to a change entry whose structure is kept.
fn entries(plan: &Value) -> Vec<String> {
    let mut entries = Vec::new();
    for key in ["resource_changes", "resource_drift"] {
        let count = plan.get(key).and_then(Value::as_array).map_or(0, Vec::len);
        entries.extend((0..count).map(|i| format!("/{key}/{i}")));
    }
    let deferred = plan
        .get("deferred_changes")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    entries.extend((0..deferred).map(|i| format!("/deferred_changes/{i}/resource_change")));
    entries
}

/// Takes the structural fields (and `change.actions`) out of every change entry.
pub(super) fn take(plan: &mut Value) -> Kept {
    let mut kept = Vec::new();
    for pointer in entries(plan) {
        let Some(entry) = plan.pointer_mut(&pointer).and_then(Value::as_object_mut) else {
            continue;
        };
        let mut fields: Vec<(String, Value)> = PLAN_WORD_FIELDS
            .iter()
            .filter_map(|f| entry.remove(*f).map(|v| (f.to_string(), v)))
            .collect();
        if let Some(actions) = entry
            .get_mut("change")
            .and_then(Value::as_object_mut)
            .and_then(|c| c.remove("actions"))
        {
            fields.push(("change/actions".into(), actions));
        }
        kept.push((pointer, fields));
    }
    kept
}

/// Puts back what [`take`] took.
pub(super) fn put(plan: &mut Value, kept: Kept) {
    for (pointer, fields) in kept {
        let Some(entry) = plan.pointer_mut(&pointer).and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, value) in fields {
            match field.strip_prefix("change/") {
                Some(inner) => {
                    if let Some(change) = entry.get_mut("change").and_then(Value::as_object_mut) {
                        change.insert(inner.to_string(), value);
                    }
                }
                None => {
                    entry.insert(field, value);
                }
            }
        }
    }
}

/// [`Redactor::redact_json`], except that the plan format's own keys stay as they are.
pub(super) fn redact_strings(redactor: &Redactor, value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(r) = redactor.redact(s) {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_strings(redactor, v)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                redact_strings(redactor, &mut v);
                let key = if PLAN_FORMAT_KEYS.contains(&key.as_str()) {
                    key
                } else {
                    redactor.redact(&key).into_owned()
                };
                map.insert(key, v);
            }
        }
        _ => {}
    }
}
