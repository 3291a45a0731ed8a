//! The apply gate: whether a plan may be applied now, decided from facts the caller gathered
//! (pure: no IO, no clock).
//!
//! A plan is applied only when all three checks pass, and the decision records each:
//! 1. **policy**: its verdict passed, or only soft-mandatory rules failed and an override was
//!    recorded for this very plan (same run, same digest);
//! 2. **trigger**: the stack applies automatically (`auto_apply` on the tracked branch, or drift
//!    remediation set to `apply`), or someone approved this very plan;
//! 3. **binding**: the plan is the stack's newest, and the state serial it was made against is
//!    still the current one. A newer plan means a newer commit (or a re-plan) replaced it; a
//!    moved serial means the stack must be planned again, never applied stale.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{Blocking, Verdict};
use crate::run::{RunKind, RunStatus};

/// What asked for the apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// The engine, after a plan finished (auto-apply or drift remediation).
    Auto,
    /// `tidemark approve RUN` (or the API): records an approval, then asks.
    Approve { actor: String },
    /// `tidemark apply RUN` (or the API): asks without approving.
    Apply { actor: String },
    /// A worker about to execute a queued apply: the gate is checked once more.
    Execute,
}

/// An approval or an override as stored, bound to one plan digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub kind: ApprovalKind,
    pub plan_digest: String,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    Approve,
    Override,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Approve => "approve",
            ApprovalKind::Override => "override",
        }
    }
}

/// The plan run the gate is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanFacts {
    pub run_id: i64,
    pub kind: RunKind,
    pub status: RunStatus,
    /// The stored plan's digest; `None` when the run stored no plan.
    pub digest: Option<String>,
    pub has_changes: bool,
    /// The commit was seen on the repository's tracked branch.
    pub on_tracked_branch: bool,
    /// The stack's `auto_apply` setting.
    pub auto_apply: bool,
    /// For a drift check: the stack remediates drift by applying.
    pub remediate_by_apply: bool,
    /// The state serial the plan was made against, when known.
    pub state_serial: Option<i64>,
}

/// Everything the gate decides from.
#[derive(Debug, Clone, PartialEq)]
pub struct GateFacts {
    pub plan: PlanFacts,
    /// The verdict stored for the plan run and the digest it judged.
    pub verdict: Option<(String, Verdict)>,
    /// Approvals and overrides recorded for the plan run.
    pub approvals: Vec<Approval>,
    /// A newer plan run of the same stack: (run id, commit).
    pub newer_plan: Option<(i64, String)>,
    /// The apply run that already applied this plan, if one did.
    pub applied_by: Option<i64>,
    /// The stack's state serial now, when known.
    pub current_serial: Option<i64>,
    pub trigger: Trigger,
}

/// One of the gate's three checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// What to do about the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Every check passed: apply the stored plan.
    Apply,
    /// The plan changes nothing: there is nothing to apply.
    NothingToApply,
    /// A check failed: record why and do nothing else.
    Refuse,
    /// The state moved since the plan: plan the same commit again.
    Replan,
}

/// The gate's decision, stored on the apply run (and printed by `tidemark apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub plan_run: i64,
    pub plan_digest: Option<String>,
    pub allowed: bool,
    pub action: Action,
    pub trigger: Trigger,
    pub checks: Vec<Check>,
}

impl Decision {
    /// The failed checks as one line, for run errors and CLI messages.
    pub fn reasons(&self) -> String {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if failed.is_empty() && self.action == Action::NothingToApply {
            return format!(
                "plan run {} has no changes: nothing to apply",
                self.plan_run
            );
        }
        failed.join("; ")
    }
}

/// Decides whether the plan may be applied now.
pub fn decide(facts: &GateFacts) -> Decision {
    let plan = &facts.plan;
    let digest = plan.digest.clone();
    let checks = vec![
        policy_check(facts),
        trigger_check(facts),
        binding_check(facts),
    ];
    let stale_state = plan.state_serial != facts.current_serial
        && facts.newer_plan.is_none()
        && facts.applied_by.is_none();
    let usable = plan.status == RunStatus::Succeeded && digest.is_some();
    let action = if checks.iter().all(|c| c.passed) {
        if plan.has_changes {
            Action::Apply
        } else {
            Action::NothingToApply
        }
    } else if usable && stale_state {
        Action::Replan
    } else {
        Action::Refuse
    };
    Decision {
        plan_run: plan.run_id,
        plan_digest: digest,
        allowed: action == Action::Apply,
        action,
        trigger: facts.trigger.clone(),
        checks,
    }
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_string(),
        passed,
        detail,
    }
}

fn policy_check(facts: &GateFacts) -> Check {
    let plan = &facts.plan;
    let Some((judged, verdict)) = &facts.verdict else {
        return check(
            "policy",
            false,
            format!("plan run {} has no policy verdict", plan.run_id),
        );
    };
    if plan.digest.as_deref() != Some(judged.as_str()) {
        return check(
            "policy",
            false,
            format!(
                "the verdict judged plan {judged}, not the stored plan of run {}",
                plan.run_id
            ),
        );
    }
    let failures = || {
        let messages: Vec<String> = verdict
            .failures()
            .map(|r| format!("[{}] {}", r.level, r.message))
            .chain(verdict.errors.iter().map(|e| format!("[error] {e}")))
            .collect();
        messages.join("; ")
    };
    match verdict.blocking {
        Blocking::None => {
            let warnings = verdict.results.len();
            check(
                "policy",
                true,
                format!("passed ({warnings} message(s), none blocking)"),
            )
        }
        Blocking::Hard => check(
            "policy",
            false,
            format!("blocked (hard-mandatory, no override): {}", failures()),
        ),
        Blocking::Soft => {
            let override_ = facts
                .approvals
                .iter()
                .filter(|a| a.kind == ApprovalKind::Override)
                .find(|a| Some(&a.plan_digest) == plan.digest.as_ref());
            match override_ {
                Some(o) => check(
                    "policy",
                    true,
                    format!(
                        "soft-mandatory failures overridden by {} at {}: {}",
                        o.actor,
                        o.created_at.to_rfc3339(),
                        o.reason.as_deref().unwrap_or("")
                    ),
                ),
                None => check(
                    "policy",
                    false,
                    format!(
                        "blocked (soft-mandatory; `tidemark override {}` can let it through): {}",
                        plan.run_id,
                        failures()
                    ),
                ),
            }
        }
    }
}

fn trigger_check(facts: &GateFacts) -> Check {
    let plan = &facts.plan;
    let approval = facts
        .approvals
        .iter()
        .filter(|a| a.kind == ApprovalKind::Approve)
        .find(|a| Some(&a.plan_digest) == plan.digest.as_ref());
    if let Some(a) = approval {
        return check(
            "trigger",
            true,
            format!("approved by {} at {}", a.actor, a.created_at.to_rfc3339()),
        );
    }
    match plan.kind {
        RunKind::Plan if plan.auto_apply && plan.on_tracked_branch => check(
            "trigger",
            true,
            "auto_apply = true and the commit is on the tracked branch".into(),
        ),
        RunKind::Plan if plan.auto_apply => check(
            "trigger",
            false,
            "auto_apply applies only commits of the tracked branch; approve it".into(),
        ),
        RunKind::Drift if plan.remediate_by_apply => {
            check("trigger", true, "drift_remediation = \"apply\"".into())
        }
        _ => check(
            "trigger",
            false,
            format!(
                "not approved (`tidemark approve {}`) and the stack does not apply automatically",
                plan.run_id
            ),
        ),
    }
}

fn binding_check(facts: &GateFacts) -> Check {
    let plan = &facts.plan;
    if plan.kind == RunKind::Apply {
        return check(
            "binding",
            false,
            format!("run {} is an apply, not a plan", plan.run_id),
        );
    }
    if plan.status != RunStatus::Succeeded {
        return check(
            "binding",
            false,
            format!("plan run {} is {}, not succeeded", plan.run_id, plan.status),
        );
    }
    if plan.digest.is_none() {
        return check(
            "binding",
            false,
            format!("plan run {} stored no plan", plan.run_id),
        );
    }
    if let Some(apply) = facts.applied_by {
        return check(
            "binding",
            false,
            format!(
                "plan run {} was already applied by run {apply}",
                plan.run_id
            ),
        );
    }
    if let Some((newer, commit)) = &facts.newer_plan {
        return check(
            "binding",
            false,
            format!(
                "stale: plan run {newer} (commit {}) replaced this plan; apply that one",
                short(commit)
            ),
        );
    }
    if plan.state_serial != facts.current_serial {
        return check(
            "binding",
            false,
            format!(
                "stale: the state serial moved from {} to {} since the plan; re-planning",
                serial(plan.state_serial),
                serial(facts.current_serial)
            ),
        );
    }
    check(
        "binding",
        true,
        format!(
            "the stack's newest plan, made at state serial {}",
            serial(plan.state_serial)
        ),
    )
}

fn serial(serial: Option<i64>) -> String {
    serial.map_or_else(|| "none".to_string(), |s| s.to_string())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Level, PolicyResult, Rule};

    fn plan() -> PlanFacts {
        PlanFacts {
            run_id: 7,
            kind: RunKind::Plan,
            status: RunStatus::Succeeded,
            digest: Some("d1".into()),
            has_changes: true,
            on_tracked_branch: true,
            auto_apply: false,
            remediate_by_apply: false,
            state_serial: Some(3),
        }
    }

    fn verdict(blocking: Option<Level>) -> Verdict {
        let results = blocking
            .map(|level| PolicyResult {
                set: "shipped".into(),
                policy: "deny_delete.rego".into(),
                rule: Rule::Deny,
                level,
                message: "null_resource.a would be deleted".into(),
            })
            .into_iter()
            .collect();
        Verdict::new(results, Vec::new())
    }

    fn approval(kind: ApprovalKind, digest: &str) -> Approval {
        Approval {
            kind,
            plan_digest: digest.into(),
            actor: "alice".into(),
            reason: Some("planned maintenance".into()),
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    fn facts() -> GateFacts {
        GateFacts {
            plan: plan(),
            verdict: Some(("d1".into(), verdict(None))),
            approvals: vec![approval(ApprovalKind::Approve, "d1")],
            newer_plan: None,
            applied_by: None,
            current_serial: Some(3),
            trigger: Trigger::Execute,
        }
    }

    fn failed(decision: &Decision) -> Vec<&str> {
        decision
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn an_approved_passing_fresh_plan_is_applied() {
        let decision = decide(&facts());
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.action, Action::Apply);
        assert_eq!(decision.checks.len(), 3);
    }

    #[test]
    fn every_check_blocks_on_its_own() {
        let mut f = facts();
        f.verdict = None;
        assert_eq!(failed(&decide(&f)), ["policy"]);

        let mut f = facts();
        f.approvals.clear();
        assert_eq!(failed(&decide(&f)), ["trigger"]);

        let mut f = facts();
        f.newer_plan = Some((9, "abcdef0123456789".into()));
        let d = decide(&f);
        assert_eq!(failed(&d), ["binding"]);
        assert_eq!(d.action, Action::Refuse);
        assert!(
            d.reasons().contains("plan run 9 (commit abcdef012345)"),
            "{}",
            d.reasons()
        );
    }

    #[test]
    fn a_moved_state_serial_means_plan_again() {
        let mut f = facts();
        f.current_serial = Some(4);
        let d = decide(&f);
        assert_eq!(failed(&d), ["binding"]);
        assert_eq!(d.action, Action::Replan);
        assert!(!d.allowed);
        // A newer plan already exists: nothing to re-plan, the newer plan is the one to apply.
        f.newer_plan = Some((9, "c".into()));
        assert_eq!(decide(&f).action, Action::Refuse);
    }

    #[test]
    fn overrides_count_only_for_soft_failures_of_the_same_plan() {
        let mut f = facts();
        f.verdict = Some(("d1".into(), verdict(Some(Level::SoftMandatory))));
        assert_eq!(failed(&decide(&f)), ["policy"]);
        // An override of another plan (digest d0) does not carry over.
        f.approvals.push(approval(ApprovalKind::Override, "d0"));
        assert_eq!(failed(&decide(&f)), ["policy"]);
        f.approvals.push(approval(ApprovalKind::Override, "d1"));
        let d = decide(&f);
        assert!(d.allowed, "{d:?}");
        assert!(d.checks[0].detail.contains("overridden by alice"));
        // Hard-mandatory failures cannot be overridden.
        f.verdict = Some(("d1".into(), verdict(Some(Level::HardMandatory))));
        assert_eq!(failed(&decide(&f)), ["policy"]);
        // A verdict that cannot be evaluated blocks hard.
        f.verdict = Some((
            "d1".into(),
            Verdict::new(Vec::new(), vec!["p.rego: 1: bad".into()]),
        ));
        assert_eq!(failed(&decide(&f)), ["policy"]);
    }

    #[test]
    fn an_approval_of_another_plan_is_not_an_approval() {
        let mut f = facts();
        f.approvals = vec![approval(ApprovalKind::Approve, "d0")];
        assert_eq!(failed(&decide(&f)), ["trigger"]);
        // A verdict about another digest judges nothing here.
        let mut f = facts();
        f.verdict = Some(("d0".into(), verdict(None)));
        assert_eq!(failed(&decide(&f)), ["policy"]);
    }

    #[test]
    fn automatic_triggers() {
        let mut f = facts();
        f.approvals.clear();
        f.plan.auto_apply = true;
        assert!(decide(&f).allowed);
        f.plan.on_tracked_branch = false;
        assert_eq!(failed(&decide(&f)), ["trigger"]);
        let mut f = facts();
        f.approvals.clear();
        f.plan.kind = RunKind::Drift;
        f.plan.auto_apply = true;
        assert_eq!(failed(&decide(&f)), ["trigger"]);
        f.plan.remediate_by_apply = true;
        assert!(decide(&f).allowed);
    }

    #[test]
    fn unusable_plans_are_refused_and_empty_plans_need_nothing() {
        let mut f = facts();
        f.plan.has_changes = false;
        let d = decide(&f);
        assert_eq!(d.action, Action::NothingToApply);
        assert!(!d.allowed);
        assert!(d.reasons().contains("nothing to apply"));
        for status in [RunStatus::Failed, RunStatus::Running, RunStatus::Superseded] {
            let mut f = facts();
            f.plan.status = status;
            f.current_serial = Some(5);
            let d = decide(&f);
            assert_eq!(d.action, Action::Refuse, "{status}");
            assert!(failed(&d).contains(&"binding"));
        }
        let mut f = facts();
        f.plan.digest = None;
        assert_eq!(decide(&f).action, Action::Refuse);
        let mut f = facts();
        f.plan.kind = RunKind::Apply;
        assert_eq!(decide(&f).action, Action::Refuse);
        // A plan is applied once: after that its state serial is behind, but it is refused,
        // not re-planned.
        let mut f = facts();
        f.applied_by = Some(8);
        f.current_serial = Some(4);
        let d = decide(&f);
        assert_eq!((d.action, failed(&d)), (Action::Refuse, vec!["binding"]));
        assert!(
            d.reasons().contains("already applied by run 8"),
            "{}",
            d.reasons()
        );
    }

    #[test]
    fn decisions_serialize_for_the_run_record() {
        let d = decide(&facts());
        let json = serde_json::to_value(&d).expect("json");
        assert_eq!(json["action"], "apply");
        assert_eq!(json["trigger"]["kind"], "execute");
        assert_eq!(json["checks"][2]["name"], "binding");
        let back: Decision = serde_json::from_value(json).expect("decision");
        assert_eq!(back, d);
    }
}
