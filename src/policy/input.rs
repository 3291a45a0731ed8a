//! The policy input: the redacted plan JSON exactly as terraform prints it, plus
//! `input.tidemark`, what Tidemark knows about the run. Pure: no IO, no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The run kinds policies see in `input.tidemark.run_kind`. A plain string in the input so that
/// policies written today keep working when the engine grows a new kind.
pub mod run_kind {
    /// A plan for a commit (push or pull request).
    pub const PLAN: &str = "plan";
    /// An apply of a checked plan.
    pub const APPLY: &str = "apply";
    /// A scheduled drift check: its plan is what remediating the drift would do.
    pub const DRIFT: &str = "drift";
    /// A plan or apply made to remediate detected drift.
    pub const REMEDIATION: &str = "remediation";
}

/// `input.tidemark`: the run a plan belongs to. Unknown facts are `null` (or empty lists), never
/// guessed: a policy can tell "no approvers" from "not a pull request". Missing fields
/// deserialize to their empty values, so a hand-written `--tidemark` file may be partial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TidemarkInput {
    /// The repository's name in the server config.
    pub repo: String,
    /// The full commit sha the plan was made at.
    pub commit: String,
    /// The branch the commit was seen on.
    pub branch: String,
    pub stack: StackInput,
    /// One of [`run_kind`]'s values.
    pub run_kind: String,
    /// The commit's author (name or login), when known.
    pub author: Option<String>,
    /// Files the commit (or pull request) changed, repository-relative, sorted.
    pub changed_files: Vec<String>,
    /// The pull request, when the run is for one.
    pub pr: Option<PullRequestInput>,
    /// The same pull request under its full name (`input.tidemark.pull_request`).
    pub pull_request: Option<PullRequestInput>,
    /// Policy parameters from the server config (e.g. `max_deletions`), so that a pull request
    /// cannot loosen them. Empty when none are set: shipped policies then use their defaults.
    pub config: BTreeMap<String, Value>,
}

/// `input.tidemark.stack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StackInput {
    /// From the repository root, `/`-separated; `"."` for the root.
    pub path: String,
    pub name: String,
    pub tags: Vec<String>,
}

/// `input.tidemark.pr`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullRequestInput {
    pub number: u64,
    /// Logins that approved the pull request at its current head, sorted.
    pub approvers: Vec<String>,
    /// The same approvals with each approver's permission in the repository
    /// (`admin`, `maintain`, `write`, ...), so a policy can count only writers.
    pub approvals: Vec<ApprovalInput>,
    pub author: String,
    /// The base branch and the head's sha.
    pub base: String,
    pub head: String,
    pub labels: Vec<String>,
    pub draft: bool,
}

/// One approving review in `input.tidemark.pull_request.approvals`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApprovalInput {
    pub login: String,
    pub permission: String,
}

impl TidemarkInput {
    /// The facts every run has; the optional ones start empty.
    pub fn new(
        repo: impl Into<String>,
        commit: impl Into<String>,
        branch: impl Into<String>,
        stack: StackInput,
        run_kind: impl Into<String>,
    ) -> TidemarkInput {
        TidemarkInput {
            repo: repo.into(),
            commit: commit.into(),
            branch: branch.into(),
            stack,
            run_kind: run_kind.into(),
            ..TidemarkInput::default()
        }
    }

    pub fn author(mut self, author: impl Into<String>) -> TidemarkInput {
        self.author = Some(author.into());
        self
    }

    /// Sets the changed files, sorted and without duplicates so the input is deterministic.
    pub fn changed_files<S: Into<String>>(
        mut self,
        files: impl IntoIterator<Item = S>,
    ) -> TidemarkInput {
        let mut files: Vec<String> = files.into_iter().map(Into::into).collect();
        files.sort();
        files.dedup();
        self.changed_files = files;
        self
    }

    pub fn pull_request<S: Into<String>>(
        mut self,
        number: u64,
        approvers: impl IntoIterator<Item = S>,
    ) -> TidemarkInput {
        let mut approvers: Vec<String> = approvers.into_iter().map(Into::into).collect();
        approvers.sort();
        approvers.dedup();
        self.pr = Some(PullRequestInput {
            number,
            approvers,
            ..PullRequestInput::default()
        });
        self.pull_request = self.pr.clone();
        self
    }

    /// Sets the whole pull request (`pr` and `pull_request`); approvers are sorted.
    pub fn pull_request_input(mut self, mut pr: PullRequestInput) -> TidemarkInput {
        pr.approvals.sort_by(|a, b| a.login.cmp(&b.login));
        pr.approvers = pr.approvals.iter().map(|a| a.login.clone()).collect();
        pr.approvers.dedup();
        self.pr = Some(pr.clone());
        self.pull_request = Some(pr);
        self
    }

    /// Sets one policy parameter (`input.tidemark.config.NAME`).
    pub fn config(mut self, name: impl Into<String>, value: impl Into<Value>) -> TidemarkInput {
        self.config.insert(name.into(), value.into());
        self
    }
}

impl StackInput {
    pub fn new<S: Into<String>>(
        path: impl Into<String>,
        name: impl Into<String>,
        tags: impl IntoIterator<Item = S>,
    ) -> StackInput {
        StackInput {
            path: path.into(),
            name: name.into(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&crate::stacks::Stack> for StackInput {
    fn from(stack: &crate::stacks::Stack) -> StackInput {
        StackInput::new(&stack.path, &stack.name, stack.tags.iter().cloned())
    }
}

/// The whole policy input: the plan JSON's top-level keys with `tidemark` added. The plan's own
/// keys are kept as terraform printed them; a plan that is not an object (which `show -json`
/// never prints) is kept under `input.plan` instead, so nothing is silently dropped.
pub fn build_input(plan: &Value, tidemark: &TidemarkInput) -> Value {
    let mut input = match plan {
        Value::Object(map) => map.clone(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("plan".to_string(), other.clone());
            map
        }
    };
    // A plan JSON has no `tidemark` key; if one ever appears, ours wins so a crafted plan
    // cannot impersonate the run's facts.
    input.insert(
        "tidemark".to_string(),
        // Serializing a struct of strings, lists and JSON values cannot fail.
        serde_json::to_value(tidemark).unwrap_or(Value::Null),
    );
    Value::Object(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(plan: Value, tidemark: TidemarkInput, expected: Value) {
        assert_eq!(build_input(&plan, &tidemark), expected);
    }

    fn base() -> TidemarkInput {
        TidemarkInput::new(
            "infra",
            "abc123",
            "main",
            StackInput::new("stacks/net", "net", ["prod"]),
            run_kind::PLAN,
        )
    }

    #[test]
    fn plan_keys_are_kept_and_tidemark_is_added() {
        check(
            json!({"format_version": "0.2", "resource_changes": [{"address": "a"}]}),
            base(),
            json!({
                "format_version": "0.2",
                "resource_changes": [{"address": "a"}],
                "tidemark": {
                    "repo": "infra", "commit": "abc123", "branch": "main",
                    "stack": {"path": "stacks/net", "name": "net", "tags": ["prod"]},
                    "run_kind": "plan", "author": null, "changed_files": [], "pr": null,
                    "pull_request": null, "config": {}
                }
            }),
        );
    }

    #[test]
    fn optional_facts_are_sorted_and_deduplicated() {
        let tidemark = base()
            .author("alice")
            .changed_files(["b.tf", "a.tf", "b.tf"])
            .pull_request(7, ["zed", "amy"])
            .config("max_deletions", 3);
        let input = build_input(&json!({}), &tidemark);
        let pr = json!({
            "number": 7, "approvers": ["amy", "zed"], "approvals": [], "author": "",
            "base": "", "head": "", "labels": [], "draft": false
        });
        assert_eq!(
            input["tidemark"],
            json!({
                "repo": "infra", "commit": "abc123", "branch": "main",
                "stack": {"path": "stacks/net", "name": "net", "tags": ["prod"]},
                "run_kind": "plan", "author": "alice", "changed_files": ["a.tf", "b.tf"],
                "pr": pr.clone(),
                "pull_request": pr,
                "config": {"max_deletions": 3}
            })
        );
    }

    #[test]
    fn a_pull_request_gives_its_author_labels_and_approvals_with_permissions() {
        let tidemark = base().pull_request_input(PullRequestInput {
            number: 9,
            approvals: vec![
                ApprovalInput {
                    login: "zed".into(),
                    permission: "admin".into(),
                },
                ApprovalInput {
                    login: "amy".into(),
                    permission: "write".into(),
                },
            ],
            author: "alice".into(),
            base: "main".into(),
            head: "abc123".into(),
            labels: vec!["prod".into()],
            draft: false,
            ..PullRequestInput::default()
        });
        let input = build_input(&json!({}), &tidemark);
        let pr = &input["tidemark"]["pull_request"];
        assert_eq!(pr["approvers"], json!(["amy", "zed"]));
        assert_eq!(
            pr["approvals"][0],
            json!({"login": "amy", "permission": "write"})
        );
        assert_eq!(
            (pr["author"].as_str(), pr["labels"][0].as_str()),
            (Some("alice"), Some("prod"))
        );
        assert_eq!(
            input["tidemark"]["pr"], *pr,
            "the short name holds the same"
        );
    }

    #[test]
    fn a_plan_cannot_impersonate_the_run() {
        let input = build_input(
            &json!({"tidemark": {"stack": {"tags": ["allow-destroy"]}}}),
            &base(),
        );
        assert_eq!(input["tidemark"]["stack"]["tags"], json!(["prod"]));
    }

    #[test]
    fn a_partial_tidemark_file_fills_in_empty_values() {
        let parsed: TidemarkInput = serde_json::from_value(
            json!({"stack": {"tags": ["allow-destroy"]}, "run_kind": "drift"}),
        )
        .expect("partial input");
        assert_eq!(parsed.stack.tags, ["allow-destroy"]);
        assert_eq!((parsed.run_kind.as_str(), parsed.pr), ("drift", None));
    }

    #[test]
    fn a_non_object_plan_is_kept_under_plan() {
        check(
            json!([1]),
            TidemarkInput::default(),
            json!({"plan": [1], "tidemark": serde_json::to_value(TidemarkInput::default()).expect("json")}),
        );
    }
}
