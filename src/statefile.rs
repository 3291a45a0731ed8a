//! What Tidemark keeps in the clear about a Terraform state file (format version 4, written by
//! Terraform 0.12 and later): serial, lineage, digest, the managed resource instances, and the
//! outputs with every sensitive value replaced by [`REDACTED`]. Pure: bytes in, summary out.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::crypto::REDACTED;

/// The clear-text facts of one state file. Never holds a sensitive value.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSummary {
    pub serial: i64,
    pub lineage: String,
    /// sha256 (hex) of the state file's bytes.
    pub digest: String,
    /// The addresses of the managed resource instances (`module.a.null_resource.b["k"]`).
    pub resources: Vec<String>,
    /// `{name: {value, sensitive, type}}`; a sensitive output's value is [`REDACTED`].
    pub outputs: Value,
}

/// Why bytes are not a state file Tidemark can keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFileError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("state format version {0} is not supported (Terraform 0.12 and later write 4)")]
    Version(String),
    #[error("the state has no {0}")]
    Missing(&'static str),
}

/// Reads a state file's clear-text facts.
pub fn summarize_state(raw: &[u8]) -> Result<StateSummary, StateFileError> {
    let state: Value =
        serde_json::from_slice(raw).map_err(|e| StateFileError::NotJson(e.to_string()))?;
    match state.get("version").and_then(Value::as_i64) {
        Some(4) => {}
        other => {
            let shown = other.map_or_else(|| "(none)".to_string(), |v| v.to_string());
            return Err(StateFileError::Version(shown));
        }
    }
    let serial = state
        .get("serial")
        .and_then(Value::as_i64)
        .ok_or(StateFileError::Missing("serial"))?;
    let lineage = state
        .get("lineage")
        .and_then(Value::as_str)
        .ok_or(StateFileError::Missing("lineage"))?
        .to_string();
    Ok(StateSummary {
        serial,
        lineage,
        digest: hex::encode(Sha256::digest(raw)),
        resources: managed_addresses(&state),
        outputs: redacted_outputs(&state),
    })
}

fn managed_addresses(state: &Value) -> Vec<String> {
    let mut addresses = Vec::new();
    let resources = state.get("resources").and_then(Value::as_array);
    for resource in resources.into_iter().flatten() {
        if resource.get("mode").and_then(Value::as_str) != Some("managed") {
            continue;
        }
        let text = |key: &str| resource.get(key).and_then(Value::as_str).unwrap_or("");
        let mut base = String::new();
        if !text("module").is_empty() {
            base.push_str(text("module"));
            base.push('.');
        }
        base.push_str(&format!("{}.{}", text("type"), text("name")));
        let instances = resource.get("instances").and_then(Value::as_array);
        for instance in instances.into_iter().flatten() {
            let address = match instance.get("index_key") {
                Some(Value::Number(n)) => format!("{base}[{n}]"),
                Some(Value::String(s)) => format!("{base}[{}]", Value::from(s.as_str())),
                _ => base.clone(),
            };
            addresses.push(address);
        }
    }
    addresses
}

fn redacted_outputs(state: &Value) -> Value {
    let mut outputs = Map::new();
    let stored = state.get("outputs").and_then(Value::as_object);
    for (name, output) in stored.into_iter().flatten() {
        let sensitive = output.get("sensitive").and_then(Value::as_bool) == Some(true);
        let value = if sensitive {
            Value::from(REDACTED)
        } else {
            output.get("value").cloned().unwrap_or(Value::Null)
        };
        let mut entry = Map::new();
        entry.insert("value".into(), value);
        entry.insert("sensitive".into(), Value::from(sensitive));
        entry.insert(
            "type".into(),
            output.get("type").cloned().unwrap_or(Value::Null),
        );
        outputs.insert(name.clone(), Value::Object(entry));
    }
    Value::Object(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(state: Value, resources: &[&str], outputs: Value) {
        let summary = summarize_state(state.to_string().as_bytes()).expect("summary");
        assert_eq!(summary.resources, resources);
        assert_eq!(summary.outputs, outputs);
        assert_eq!(summary.resources.len(), resources.len());
    }

    #[test]
    fn addresses_count_managed_instances_only() {
        check(
            json!({
                "version": 4, "serial": 3, "lineage": "l",
                "resources": [
                    {"mode": "managed", "type": "null_resource", "name": "a",
                     "instances": [{"attributes": {}}]},
                    {"mode": "managed", "module": "module.net", "type": "null_resource",
                     "name": "b", "each": "map",
                     "instances": [{"index_key": "x"}, {"index_key": "y"}]},
                    {"mode": "managed", "type": "null_resource", "name": "c", "each": "list",
                     "instances": [{"index_key": 0}]},
                    {"mode": "data", "type": "external", "name": "d",
                     "instances": [{"attributes": {}}]}
                ]
            }),
            &[
                "null_resource.a",
                "module.net.null_resource.b[\"x\"]",
                "module.net.null_resource.b[\"y\"]",
                "null_resource.c[0]",
            ],
            json!({}),
        );
    }

    #[test]
    fn sensitive_outputs_are_redacted() {
        check(
            json!({
                "version": 4, "serial": 1, "lineage": "l",
                "outputs": {
                    "value": {"value": "v1", "type": "string"},
                    "secret": {"value": "hunter2", "type": "string", "sensitive": true},
                    "nested": {"value": {"pw": "hunter2"}, "type": ["object", {"pw": "string"}],
                               "sensitive": true}
                }
            }),
            &[],
            json!({
                "value": {"value": "v1", "sensitive": false, "type": "string"},
                "secret": {"value": REDACTED, "sensitive": true, "type": "string"},
                "nested": {"value": REDACTED, "sensitive": true,
                           "type": ["object", {"pw": "string"}]}
            }),
        );
    }

    #[test]
    fn bad_state_files_say_why() {
        let err = |text: &str| summarize_state(text.as_bytes()).expect_err(text);
        assert!(matches!(err("{"), StateFileError::NotJson(_)));
        assert_eq!(
            err(r#"{"version": 3, "serial": 1, "lineage": "l"}"#),
            StateFileError::Version("3".into())
        );
        assert_eq!(
            err(r#"{"version": 4, "lineage": "l"}"#),
            StateFileError::Missing("serial")
        );
        let ok = summarize_state(br#"{"version": 4, "serial": 7, "lineage": "abc"}"#).expect("ok");
        assert_eq!((ok.serial, ok.lineage.as_str()), (7, "abc"));
        assert_eq!(ok.digest.len(), 64);
    }
}
