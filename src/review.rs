//! What a pull request's review allows (pure): which approvals count, and what a merge does
//! with each stack's reviewed plan — apply the reviewed artifact, plan the merge commit again,
//! or refuse, with the reasons.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::forge::{Permission, Review, ReviewState};

/// What must hold before a merge applies a reviewed plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyRequirement {
    /// Approved on the planned head by a user with write permission.
    Approved,
    /// The plan's policy verdict does not block.
    PolicyPassed,
    /// The forge said the pull request could be merged.
    Mergeable,
    /// The pull request's base had not moved past the stack since the plan (no re-plan needed).
    Undiverged,
}

impl ApplyRequirement {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyRequirement::Approved => "approved",
            ApplyRequirement::PolicyPassed => "policy_passed",
            ApplyRequirement::Mergeable => "mergeable",
            ApplyRequirement::Undiverged => "undiverged",
        }
    }
}

/// The users whose approval counts for `head`: each user's latest deciding review (approved,
/// changes requested or dismissed; a comment decides nothing) is an approval of exactly that
/// head, and the user may write. A later push makes earlier approvals stale; a dismissal or a
/// request for changes withdraws them. Sorted by login, with each one's permission.
pub fn approvers(
    reviews: &[Review],
    permissions: &HashMap<String, Permission>,
    head: &str,
) -> Vec<(String, Permission)> {
    let mut latest: HashMap<&str, &Review> = HashMap::new();
    for review in reviews {
        match review.state {
            ReviewState::Approved | ReviewState::ChangesRequested | ReviewState::Dismissed => {
                latest.insert(review.user.as_str(), review);
            }
            ReviewState::Commented | ReviewState::Pending => {}
        }
    }
    let mut approvers: Vec<(String, Permission)> = latest
        .into_iter()
        .filter(|(_, review)| review.state == ReviewState::Approved && review.commit_id == head)
        .map(|(user, _)| {
            let permission = permissions.get(user).copied().unwrap_or(Permission::None);
            (user.to_string(), permission)
        })
        .filter(|(_, permission)| permission.can_write())
        .collect();
    approvers.sort();
    approvers
}

/// The facts about one stack's reviewed plan when its pull request merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeFacts {
    pub requirements: Vec<ApplyRequirement>,
    /// Approvers that count (see [`approvers`]) on the head the plan was made for.
    pub approvers: Vec<String>,
    /// The plan's verdict does not block (a plan without a verdict does not pass).
    pub policy_passed: bool,
    /// What the forge last said about mergeability (`None`: not computed).
    pub mergeable: Option<bool>,
    /// The reviewed plan succeeded and stored an artifact.
    pub plan_usable: bool,
    /// The stack's inputs (its files, modules, includes and watched files) at the merge
    /// commit are the ones the plan was made from.
    pub inputs_unchanged: bool,
    /// The stack's state serial is the one the plan was made against.
    pub serial_unchanged: bool,
}

/// What the merge does for one stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum MergeAction {
    /// Apply the reviewed plan artifact itself.
    ApplyReviewed,
    /// Plan the merge commit; apply only if its change set equals the reviewed one.
    Replan { why: String },
    /// Apply nothing, for these reasons.
    Refuse { reasons: Vec<String> },
}

/// Decides what a merge does with one stack's reviewed plan.
pub fn merge_action(facts: &MergeFacts) -> MergeAction {
    let mut reasons = Vec::new();
    for requirement in &facts.requirements {
        match requirement {
            ApplyRequirement::Approved if facts.approvers.is_empty() => reasons.push(
                "not approved on the planned head by a user with write permission".to_string(),
            ),
            ApplyRequirement::PolicyPassed if !facts.policy_passed => {
                reasons.push("the policy verdict blocks the plan".to_string())
            }
            ApplyRequirement::Mergeable if facts.mergeable == Some(false) => {
                reasons.push("the pull request was not mergeable".to_string())
            }
            ApplyRequirement::Undiverged if !facts.inputs_unchanged => reasons.push(
                "the base branch changed the stack since the plan (undiverged is required)"
                    .to_string(),
            ),
            _ => {}
        }
    }
    if !facts.plan_usable {
        reasons.push("the reviewed plan did not succeed".to_string());
    }
    if !reasons.is_empty() {
        return MergeAction::Refuse { reasons };
    }
    match (facts.inputs_unchanged, facts.serial_unchanged) {
        (true, true) => MergeAction::ApplyReviewed,
        (false, _) => MergeAction::Replan {
            why: "the merge commit changed the stack's inputs since the reviewed plan".into(),
        },
        (true, false) => MergeAction::Replan {
            why: "the stack's state changed since the reviewed plan".into(),
        },
    }
}

/// A plan's change set from a run's stored summary: every resource address with its actions,
/// and every output change, sorted. Two plans with equal change sets do the same thing.
pub fn change_set(summary: &Value) -> Vec<(String, Vec<String>)> {
    let mut set = Vec::new();
    for (key, label) in [("resources", "address"), ("outputs", "name")] {
        for item in summary
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = item.get(label).and_then(Value::as_str).unwrap_or_default();
            let actions = item
                .get("actions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            let prefix = if key == "outputs" { "output." } else { "" };
            set.push((format!("{prefix}{name}"), actions));
        }
    }
    set.sort();
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(id: u64, user: &str, state: ReviewState, commit: &str) -> Review {
        Review {
            id,
            user: user.into(),
            state,
            commit_id: commit.into(),
        }
    }

    fn writers(users: &[(&str, Permission)]) -> HashMap<String, Permission> {
        users.iter().map(|(u, p)| (u.to_string(), *p)).collect()
    }

    #[test]
    fn only_current_approvals_by_writers_count() {
        let perms = writers(&[
            ("alice", Permission::Write),
            ("bob", Permission::Admin),
            ("carol", Permission::Read),
            ("dave", Permission::Maintain),
            ("erin", Permission::Write),
        ]);
        let reviews = vec![
            review(1, "alice", ReviewState::Approved, "h2"),
            // A comment after an approval keeps it.
            review(2, "alice", ReviewState::Commented, "h2"),
            // Read permission: does not count.
            review(3, "carol", ReviewState::Approved, "h2"),
            // Approved an older head: stale.
            review(4, "bob", ReviewState::Approved, "h1"),
            // Approved, then dismissed.
            review(5, "dave", ReviewState::Approved, "h2"),
            review(6, "dave", ReviewState::Dismissed, "h2"),
            // Requested changes, then approved.
            review(7, "erin", ReviewState::ChangesRequested, "h2"),
            review(8, "erin", ReviewState::Approved, "h2"),
        ];
        assert_eq!(
            approvers(&reviews, &perms, "h2"),
            vec![
                ("alice".to_string(), Permission::Write),
                ("erin".to_string(), Permission::Write)
            ]
        );
        assert!(approvers(&reviews, &perms, "h3").is_empty());
    }

    fn facts() -> MergeFacts {
        MergeFacts {
            requirements: vec![ApplyRequirement::Approved, ApplyRequirement::PolicyPassed],
            approvers: vec!["alice".into()],
            policy_passed: true,
            mergeable: Some(true),
            plan_usable: true,
            inputs_unchanged: true,
            serial_unchanged: true,
        }
    }

    #[test]
    fn a_merge_applies_the_reviewed_plan_replans_or_refuses() {
        assert_eq!(merge_action(&facts()), MergeAction::ApplyReviewed);
        let moved = MergeFacts {
            inputs_unchanged: false,
            ..facts()
        };
        assert!(matches!(merge_action(&moved), MergeAction::Replan { .. }));
        let stale = MergeFacts {
            serial_unchanged: false,
            ..facts()
        };
        assert!(
            matches!(merge_action(&stale), MergeAction::Replan { why } if why.contains("state"))
        );
        let unapproved = MergeFacts {
            approvers: vec![],
            policy_passed: false,
            ..facts()
        };
        assert_eq!(
            merge_action(&unapproved),
            MergeAction::Refuse {
                reasons: vec![
                    "not approved on the planned head by a user with write permission".into(),
                    "the policy verdict blocks the plan".into()
                ]
            }
        );
        // Requirements left out are not checked.
        let loose = MergeFacts {
            requirements: vec![],
            approvers: vec![],
            ..facts()
        };
        assert_eq!(merge_action(&loose), MergeAction::ApplyReviewed);
        let strict = MergeFacts {
            requirements: vec![ApplyRequirement::Undiverged],
            inputs_unchanged: false,
            ..facts()
        };
        assert!(matches!(merge_action(&strict), MergeAction::Refuse { .. }));
        let failed = MergeFacts {
            plan_usable: false,
            ..facts()
        };
        assert!(matches!(merge_action(&failed), MergeAction::Refuse { .. }));
    }

    #[test]
    fn change_sets_compare_addresses_actions_and_outputs_not_order() {
        let a = serde_json::json!({
            "resources": [{"address": "null_resource.b", "actions": ["delete"]},
                          {"address": "null_resource.a", "actions": ["create"]}],
            "outputs": [{"name": "id", "actions": ["update"]}]
        });
        let b = serde_json::json!({
            "resources": [{"address": "null_resource.a", "actions": ["create"]},
                          {"address": "null_resource.b", "actions": ["delete"]}],
            "outputs": [{"name": "id", "actions": ["update"]}],
            "summary": {"add": 1}
        });
        assert_eq!(change_set(&a), change_set(&b));
        let c = serde_json::json!({
            "resources": [{"address": "null_resource.a", "actions": ["delete", "create"]},
                          {"address": "null_resource.b", "actions": ["delete"]}],
            "outputs": [{"name": "id", "actions": ["update"]}]
        });
        assert_ne!(change_set(&a), change_set(&c));
    }
}
