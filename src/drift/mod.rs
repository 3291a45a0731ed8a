//! Drift: what a drift check's plan says about a stack, its fingerprint, and the per-stack
//! state machine that decides when people are told (pure: no IO, no clock).
//!
//! A stack is drifted when the plan of the tracked branch's head has changes. The normalized
//! drift (resource addresses with their actions, output names, sorted) is hashed into a
//! fingerprint, so "the same drift as last time" is a string comparison and one drift episode
//! produces one message, however many checks see it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::plan::{SummaryError, summarize};

/// A stack's drift state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    InSync,
    Drifted,
    /// The last check could not decide (the plan failed, the JSON was unreadable).
    Error,
}

impl DriftState {
    /// The state's name as stored and printed: `in_sync`, `drifted` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Drifted => "drifted",
            Self::Error => "error",
        }
    }
}

/// One resource that drifted, with terraform's action list (e.g. `["delete", "create"]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DriftedResource {
    pub address: String,
    pub actions: Vec<String>,
}

/// The normalized drift: resources sorted by address, output names sorted. Values never
/// appear, only addresses, actions and names, so a fingerprint cannot leak a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub resources: Vec<DriftedResource>,
    pub outputs: Vec<String>,
}

impl Drift {
    /// The drift in a (redacted) plan JSON of the head: its resource changes (no-ops and
    /// data-source reads excluded) and changed outputs.
    pub fn from_plan(plan: &Value) -> Result<Self, SummaryError> {
        let summary = summarize(plan)?;
        Ok(Self::normalized(
            summary
                .resources
                .into_iter()
                .map(|r| DriftedResource {
                    address: r.address,
                    actions: r.actions,
                })
                .collect(),
            summary.outputs.into_iter().map(|o| o.name).collect(),
        ))
    }

    /// What changed outside terraform, from a `-refresh-only` plan JSON: its `resource_drift`
    /// (where terraform lists objects that changed or vanished outside it) together with any
    /// non-no-op `resource_changes`, and its changed outputs. An address in both keeps the
    /// `resource_drift` actions.
    pub fn from_refresh_only(plan: &Value) -> Result<Self, SummaryError> {
        let summary = summarize(plan)?;
        let mut resources = resource_drift(plan);
        for change in summary.resources {
            if !resources.iter().any(|r| r.address == change.address) {
                resources.push(DriftedResource {
                    address: change.address,
                    actions: change.actions,
                });
            }
        }
        let outputs = summary.outputs.into_iter().map(|o| o.name).collect();
        Ok(Self::normalized(resources, outputs))
    }

    /// Only the `resource_drift` of any plan JSON (normal or refresh-only): the objects
    /// terraform found changed or gone outside it while refreshing.
    pub fn from_resource_drift(plan: &Value) -> Self {
        Self::normalized(resource_drift(plan), Vec::new())
    }

    fn normalized(mut resources: Vec<DriftedResource>, mut outputs: Vec<String>) -> Self {
        resources.sort();
        resources.dedup();
        outputs.sort();
        outputs.dedup();
        Self { resources, outputs }
    }

    /// True when nothing drifted.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.outputs.is_empty()
    }

    /// The sha256 (hex) of the normalized drift's canonical JSON.
    pub fn fingerprint(&self) -> String {
        // Serializing a struct of strings and vectors cannot fail; an empty string would
        // still give a well-defined (if useless) fingerprint.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }
}

fn resource_drift(plan: &Value) -> Vec<DriftedResource> {
    plan.get("resource_drift")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|change| {
            let address = change.get("address")?.as_str()?.to_string();
            let actions = string_list(change.pointer("/change/actions"));
            let changed = actions.iter().any(|a| a != "no-op" && a != "read");
            changed.then_some(DriftedResource { address, actions })
        })
        .collect()
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Why a stack's plan has changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftCause {
    /// The head was applied, yet the plan has changes: the infrastructure (a refresh-only plan
    /// shows changes) or the state (another apply, `terraform state rm`) changed outside git.
    ChangedOutsideGit,
    /// The head commit was never applied to the stack, and nothing changed outside git.
    NotYetApplied,
    /// Both: the head was never applied and a refresh-only plan shows changes too.
    Both,
}

impl DriftCause {
    /// Words for people: "changed outside git", "code not yet applied", or both.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ChangedOutsideGit => "changed outside git",
            Self::NotYetApplied => "code not yet applied",
            Self::Both => "changed outside git, and code not yet applied",
        }
    }
}

/// What one drift check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    InSync,
    Drifted {
        drift: Drift,
        fingerprint: String,
        cause: DriftCause,
        /// What a refresh-only plan showed changed outside terraform, when one ran.
        outside: Option<Drift>,
    },
    /// The check could not decide; `message` names what failed (already redacted).
    Error {
        message: String,
    },
}

/// Assesses a drift check: the head's plan JSON, optionally a refresh-only plan JSON of the
/// same stack (without one, the plan's own `resource_drift` stands in), and whether the head
/// commit was ever applied to the stack. A plan JSON that
/// cannot be read is an `Error` result, not a Rust error: the engine records it like any other.
pub fn assess(plan: &Value, refresh_only: Option<&Value>, head_applied: bool) -> CheckResult {
    let drift = match Drift::from_plan(plan) {
        Ok(drift) => drift,
        Err(e) => {
            return CheckResult::Error {
                message: format!("drift plan: {e}"),
            };
        }
    };
    if drift.is_empty() {
        return CheckResult::InSync;
    }
    let outside = match refresh_only {
        Some(refresh_only) => match Drift::from_refresh_only(refresh_only) {
            Ok(outside) => Some(outside),
            Err(e) => {
                return CheckResult::Error {
                    message: format!("refresh-only plan: {e}"),
                };
            }
        },
        // Terraform 0.15.4 and later also list what changed outside terraform in a normal
        // plan's `resource_drift`; older versions leave it out, and then nothing is known.
        None => plan
            .get("resource_drift")
            .map(|_| Drift::from_resource_drift(plan)),
    };
    let changed_outside = outside.as_ref().is_some_and(|o| !o.is_empty());
    let cause = match (head_applied, changed_outside) {
        (true, _) => DriftCause::ChangedOutsideGit,
        (false, false) => DriftCause::NotYetApplied,
        (false, true) => DriftCause::Both,
    };
    CheckResult::Drifted {
        fingerprint: drift.fingerprint(),
        drift,
        cause,
        outside,
    }
}

/// Which message a transition calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The stack became drifted.
    Drifted,
    /// Still drifted, but the drift is a different one (its fingerprint changed).
    Changed,
    /// The stack is back in sync after drift people were told about.
    Resolved,
}

/// The drift a stack is in (or was in when a check last failed), kept across `error` checks
/// so an error between two identical drifts does not produce a second message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDrift {
    pub drift: Drift,
    pub fingerprint: String,
    pub cause: DriftCause,
    /// When this drift episode began (kept when the fingerprint changes).
    pub first_seen: DateTime<Utc>,
    /// When the current fingerprint was first seen.
    pub fingerprint_since: DateTime<Utc>,
    /// The last check that saw drift.
    pub last_seen: DateTime<Utc>,
}

/// A stack's drift record, as the store keeps it (one row per stack; the history of checks
/// is the engine's to append).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    pub state: DriftState,
    /// When the state last changed.
    pub since: DateTime<Utc>,
    pub checked_at: DateTime<Utc>,
    pub open: Option<OpenDrift>,
    /// Why the last check failed, when `state` is `error`.
    pub error: Option<String>,
}

/// The outcome of applying a check to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub record: DriftRecord,
    pub notify: Option<NotificationKind>,
    /// For `Resolved`: the drift that cleared (the new record no longer holds it).
    pub cleared: Option<OpenDrift>,
}

/// Applies a check's result at `now` to a stack's previous record (`None`: never checked).
///
/// Messages: one when drift appears, one when its fingerprint changes, one when the stack is
/// back in sync after drift; none for a repeat of the same state. An error never resolves
/// drift: the open drift is kept, so a later in-sync check sends "resolved" and a later check
/// with the same drift sends nothing.
pub fn transition(
    previous: Option<&DriftRecord>,
    result: &CheckResult,
    now: DateTime<Utc>,
) -> Transition {
    let previous_open = previous.and_then(|p| p.open.as_ref());
    let since = |state: DriftState| match previous {
        Some(p) if p.state == state => p.since,
        _ => now,
    };
    match result {
        CheckResult::InSync => Transition {
            record: DriftRecord {
                state: DriftState::InSync,
                since: since(DriftState::InSync),
                checked_at: now,
                open: None,
                error: None,
            },
            notify: previous_open.map(|_| NotificationKind::Resolved),
            cleared: previous_open.cloned(),
        },
        CheckResult::Error { message } => Transition {
            record: DriftRecord {
                state: DriftState::Error,
                since: since(DriftState::Error),
                checked_at: now,
                open: previous_open.cloned(),
                error: Some(message.clone()),
            },
            notify: None,
            cleared: None,
        },
        CheckResult::Drifted {
            drift,
            fingerprint,
            cause,
            ..
        } => {
            let (open, notify) = match previous_open {
                None => (
                    OpenDrift {
                        drift: drift.clone(),
                        fingerprint: fingerprint.clone(),
                        cause: *cause,
                        first_seen: now,
                        fingerprint_since: now,
                        last_seen: now,
                    },
                    Some(NotificationKind::Drifted),
                ),
                Some(open) if open.fingerprint == *fingerprint => (
                    OpenDrift {
                        cause: *cause,
                        last_seen: now,
                        ..open.clone()
                    },
                    None,
                ),
                Some(open) => (
                    OpenDrift {
                        drift: drift.clone(),
                        fingerprint: fingerprint.clone(),
                        cause: *cause,
                        first_seen: open.first_seen,
                        fingerprint_since: now,
                        last_seen: now,
                    },
                    Some(NotificationKind::Changed),
                ),
            };
            Transition {
                record: DriftRecord {
                    state: DriftState::Drifted,
                    // An error between two drifted checks does not restart "drifted since".
                    since: previous_open.map_or(now, |o| o.first_seen),
                    checked_at: now,
                    open: Some(open),
                    error: None,
                },
                notify,
                cleared: None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
