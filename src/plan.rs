//! The plan summary: what a plan would do, read from `show -json`. Never from the exit code:
//! terraform's `-detailed-exitcode` 2 also means "the Go runtime crashed".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Counts of resource changes. A replacement (delete and create, in either order) counts only
/// under `replace`, not also under `add` and `destroy` as terraform's own "Plan:" line does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub replace: usize,
}

/// One resource that changes, with terraform's action list (e.g. `["delete", "create"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: String,
    pub actions: Vec<String>,
}

/// One root output that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChange {
    pub name: String,
    pub actions: Vec<String>,
}

/// What a plan would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanSummary {
    pub summary: Counts,
    pub resources: Vec<ResourceChange>,
    pub outputs: Vec<OutputChange>,
    pub has_changes: bool,
}

/// Why a plan JSON could not be summarised.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("plan JSON is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("plan JSON has no format_version: not the output of `show -json`")]
    NotAPlan,
}

/// Summarises a (redacted) plan JSON. Data-source reads and no-ops are not changes.
pub fn summarize(plan: &Value) -> Result<PlanSummary, SummaryError> {
    if plan.get("format_version").is_none() {
        return Err(SummaryError::NotAPlan);
    }
    let mut summary = PlanSummary::default();
    let changes = plan.get("resource_changes").and_then(Value::as_array);
    for change in changes.into_iter().flatten() {
        let actions = actions(change.pointer("/change/actions"));
        let counts = &mut summary.summary;
        match actions
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["create"] => counts.add += 1,
            ["update"] => counts.change += 1,
            ["delete"] => counts.destroy += 1,
            ["delete", "create"] | ["create", "delete"] => counts.replace += 1,
            [] | ["no-op"] | ["read"] => continue,
            // An action this version does not know is still a change worth showing.
            _ => counts.change += 1,
        }
        let address = change
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or("(unknown address)");
        summary.resources.push(ResourceChange {
            address: address.to_string(),
            actions,
        });
    }
    let outputs = plan.get("output_changes").and_then(Value::as_object);
    for (name, change) in outputs.into_iter().flatten() {
        let actions = actions(change.get("actions"));
        if actions.iter().all(|a| a == "no-op") {
            continue;
        }
        summary.outputs.push(OutputChange {
            name: name.clone(),
            actions,
        });
    }
    summary.has_changes = !summary.resources.is_empty() || !summary.outputs.is_empty();
    Ok(summary)
}

fn actions(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(plan: Value, counts: [usize; 4], resources: &[&str], outputs: &[&str], changes: bool) {
        let s = summarize(&plan).expect("summary");
        let [add, change, destroy, replace] = counts;
        assert_eq!(
            s.summary,
            Counts {
                add,
                change,
                destroy,
                replace
            }
        );
        let addrs: Vec<_> = s.resources.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, resources);
        let names: Vec<_> = s.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, outputs);
        assert_eq!(s.has_changes, changes);
    }

    fn rc(address: &str, actions: &[&str]) -> Value {
        json!({"address": address, "change": {"actions": actions}})
    }

    #[test]
    fn counts_each_kind_of_change() {
        check(
            json!({"format_version": "0.2", "resource_changes": [
                rc("a.new", &["create"]), rc("a.upd", &["update"]), rc("a.del", &["delete"]),
                rc("a.rep", &["delete", "create"]), rc("a.rep2", &["create", "delete"]),
                rc("a.same", &["no-op"]), rc("data.x.y", &["read"])
            ], "output_changes": {
                "kept": {"actions": ["no-op"]}, "new": {"actions": ["create"]}
            }}),
            [1, 1, 1, 2],
            &["a.new", "a.upd", "a.del", "a.rep", "a.rep2"],
            &["new"],
            true,
        );
    }

    #[test]
    fn an_empty_plan_has_no_changes() {
        check(
            json!({"format_version": "0.2"}),
            [0, 0, 0, 0],
            &[],
            &[],
            false,
        );
        check(
            json!({"format_version": "0.2", "resource_changes": [rc("a.b", &["no-op"])],
                   "output_changes": {"o": {"actions": ["no-op"]}}}),
            [0, 0, 0, 0],
            &[],
            &[],
            false,
        );
    }

    #[test]
    fn output_only_changes_count_as_changes() {
        check(
            json!({"format_version": "0.2", "output_changes": {"o": {"actions": ["update"]}}}),
            [0, 0, 0, 0],
            &[],
            &["o"],
            true,
        );
    }

    #[test]
    fn text_that_is_not_a_plan_is_refused() {
        assert!(matches!(
            summarize(&json!({"panic": "x"})),
            Err(SummaryError::NotAPlan)
        ));
    }
}
