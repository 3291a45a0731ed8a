//! The apply flow around the gate: judging a finished plan with its repository's policies,
//! asking the gate for an apply (the engine after a plan, `tidemark approve`/`override`/`apply`
//! and the API), checking once more before a worker applies, and re-planning downstream stacks
//! whose upstream's outputs an apply changed.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

use crate::gate::{self, Action, ApprovalKind, Decision, GateFacts, PlanFacts, Trigger};
use crate::policy::{self, Blocking, PolicySet, StackInput, TidemarkInput, Verdict};
use crate::store::{Run, RunKind, RunStatus, StackSettings, Store};

/// The policy sets that judge one repository's plans, and the parameters they read
/// (`input.tidemark.config`). Both come from the server config, never from the repository.
#[derive(Clone, Default)]
pub struct RepoPolicies {
    pub sets: Vec<PolicySet>,
    pub params: BTreeMap<String, Value>,
}

/// Policies by repository name.
pub type Policies = HashMap<String, RepoPolicies>;

/// What the repository says about a run's commit, for the policy input.
#[derive(Debug, Clone, Default)]
pub struct CommitFacts {
    pub branch: String,
    pub author: Option<String>,
    pub changed_files: Vec<String>,
    /// The pull request the run plans, when it plans one.
    pub pull_request: Option<policy::PullRequestInput>,
}

/// Evaluates the repository's policies over a plan run's (redacted) plan JSON and stores the
/// verdict against the plan's digest. A repository with no policies configured is judged by
/// nothing and passes; the server config decides that, not the repository.
pub async fn judge(
    store: &Store,
    policies: &RepoPolicies,
    run: &Run,
    settings: &StackSettings,
    commit: CommitFacts,
    plan_json: Value,
    digest: &str,
) -> Result<Verdict> {
    // A drift check whose plan may be applied is judged as the remediation it would be.
    let kind = match run.kind {
        RunKind::Drift if settings.drift_remediation != "none" => policy::run_kind::REMEDIATION,
        RunKind::Drift => policy::run_kind::DRIFT,
        _ => policy::run_kind::PLAN,
    };
    let mut input = TidemarkInput::new(
        &run.repo,
        &run.commit,
        commit.branch,
        StackInput::new(&run.stack, &settings.name, settings.tags.iter().cloned()),
        kind,
    )
    .changed_files(commit.changed_files);
    if let Some(author) = commit.author {
        input = input.author(author);
    }
    if let Some(pr) = commit.pull_request {
        input = input.pull_request_input(pr);
    }
    for (name, value) in &policies.params {
        input = input.config(name, value.clone());
    }
    let sets = policies.sets.clone();
    let verdict = tokio::task::spawn_blocking(move || policy::evaluate(&sets, &plan_json, &input))
        .await
        .context("policy evaluation panicked")?;
    crate::telemetry::policy_evaluated(match (verdict.passed, verdict.errors.is_empty()) {
        (_, false) => "error",
        (true, true) => "passed",
        (false, true) => "failed",
    });
    store
        .save_verdict(run.id, digest, &verdict)
        .await
        .with_context(|| format!("storing the verdict of run {}", run.id))?;
    Ok(verdict)
}

/// Gathers what the gate decides from. `finished` stands for the plan run's status while its
/// worker still holds it (the engine asks before it records the outcome).
pub async fn facts(
    store: &Store,
    plan: &Run,
    trigger: Trigger,
    finished: Option<RunStatus>,
) -> Result<GateFacts> {
    let artifact = store.artifact(plan.id).await?;
    let settings = store.stack_settings(&plan.repo, &plan.stack).await?;
    let has_changes = plan
        .summary_value()
        .and_then(|s| s.get("has_changes").and_then(Value::as_bool))
        .unwrap_or(false);
    Ok(GateFacts {
        plan: PlanFacts {
            run_id: plan.id,
            kind: plan.kind,
            status: finished.unwrap_or(plan.status),
            digest: artifact.as_ref().map(|a| a.digest.clone()),
            has_changes,
            on_tracked_branch: store.on_tracked_branch(&plan.repo, &plan.commit).await?,
            auto_apply: settings.auto_apply,
            remediate_by_apply: plan.kind == RunKind::Drift
                && settings.drift_remediation == "apply",
            state_serial: artifact.as_ref().and_then(|a| a.state_serial),
        },
        verdict: store.verdict(plan.id).await?,
        approvals: store.approvals(plan.id).await?,
        newer_plan: store.newer_plan(plan.id).await?,
        applied_by: store.applied_by(plan.id).await?,
        current_serial: store.latest_state_serial(&plan.repo, &plan.stack).await?,
        trigger,
    })
}

/// What asking the gate did.
#[derive(Debug, Clone, Serialize)]
pub struct Requested {
    pub decision: Decision,
    /// The apply queued (or already live) when the gate passed.
    pub apply_run: Option<i64>,
    /// The plan queued when the state had moved since the plan.
    pub replan_run: Option<i64>,
}

/// Asks the gate to apply a plan run's plan and acts on the decision: queues the apply, or a
/// re-plan when the state moved, or records the refusal on the plan run.
pub async fn request(store: &Store, plan_run: i64, trigger: Trigger) -> Result<Requested> {
    let plan = store.run(plan_run).await?;
    request_for(store, &plan, trigger, None).await
}

/// [`request`] for a plan run the caller holds; `finished` as in [`facts`].
pub async fn request_for(
    store: &Store,
    plan: &Run,
    trigger: Trigger,
    finished: Option<RunStatus>,
) -> Result<Requested> {
    let decision = gate::decide(&facts(store, plan, trigger, finished).await?);
    let mut requested = Requested {
        decision,
        apply_run: None,
        replan_run: None,
    };
    match requested.decision.action {
        Action::Apply => {
            let reason = format!("apply of plan run {}", plan.id);
            let id = store.enqueue_apply(plan, &reason).await?;
            store.set_gate(id, &requested.decision).await?;
            requested.apply_run = Some(id);
        }
        Action::Replan => requested.replan_run = replan(store, plan, &requested.decision).await?,
        Action::Refuse | Action::NothingToApply => {}
    }
    store.set_gate(plan.id, &requested.decision).await?;
    Ok(requested)
}

/// Checks the gate once more just before a worker applies: the plan may have been replaced,
/// or the state moved, while the apply waited in the queue. Records the decision on the apply
/// run and queues the re-plan a moved state calls for.
pub async fn recheck(store: &Store, apply_run: i64, plan: &Run) -> Result<Decision> {
    let decision = gate::decide(&facts(store, plan, Trigger::Execute, None).await?);
    store.set_gate(apply_run, &decision).await?;
    if decision.action == Action::Replan {
        replan(store, plan, &decision).await?;
    }
    Ok(decision)
}

/// Queues a plan of the same commit because the state moved since `plan` (unless one is live).
async fn replan(store: &Store, plan: &Run, decision: &Decision) -> Result<Option<i64>> {
    let reason = format!(
        "re-plan: the state changed since plan run {} ({})",
        plan.id,
        decision.reasons()
    );
    store
        .enqueue_replan(
            &plan.repo,
            &plan.stack,
            &plan.commit,
            &reason,
            plan.pr_number,
        )
        .await
}

/// The plan run an approval, override or apply names: a plan or drift check with a stored plan.
async fn plan_run(store: &Store, id: i64) -> Result<(Run, String)> {
    let run = store.run(id).await?;
    if run.kind == RunKind::Apply {
        bail!(
            "run {id} is an apply; name the plan run it applies ({})",
            run.plan_run_id
                .map_or_else(|| "none".to_string(), |p| p.to_string())
        );
    }
    if let Some(number) = run.pr_number {
        let merged = store
            .pull_requests(Some(&run.repo), Some("merged"))
            .await?
            .iter()
            .any(|(_, pr)| pr.number == number);
        if !merged {
            bail!(
                "run {id} plans pull request #{number}, which is not merged: its plans are applied when it merges"
            );
        }
    }
    let artifact = store
        .artifact(id)
        .await?
        .with_context(|| format!("run {id} ({}) stored no plan", run.status))?;
    Ok((run, artifact.digest))
}

/// `tidemark approve RUN`: records an approval of the run's plan (by digest), then asks the gate.
pub async fn approve(
    store: &Store,
    id: i64,
    actor: &str,
    reason: Option<&str>,
) -> Result<Requested> {
    let (run, digest) = plan_run(store, id).await?;
    if run.kind == RunKind::Drift {
        let settings = store.stack_settings(&run.repo, &run.stack).await?;
        if settings.drift_remediation == "none" {
            bail!(
                "run {id} is a drift check of {}, whose drift_remediation is \"none\": its plan is not applied (set \"plan\" or \"apply\" in stack.hcl)",
                run.stack
            );
        }
    }
    store
        .add_approval(id, &digest, ApprovalKind::Approve, actor, reason)
        .await?;
    request_for(
        store,
        &run,
        Trigger::Approve {
            actor: actor.to_string(),
        },
        None,
    )
    .await
}

/// `tidemark override RUN --reason TEXT`: records an override of the soft-mandatory failures of
/// the run's plan (by digest), then asks the gate. Refused when nothing soft blocks.
pub async fn override_verdict(
    store: &Store,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<Requested> {
    let (run, digest) = plan_run(store, id).await?;
    if reason.trim().is_empty() {
        bail!("an override needs a reason");
    }
    let (judged, verdict) = store
        .verdict(id)
        .await?
        .with_context(|| format!("run {id} has no policy verdict to override"))?;
    if judged != digest {
        bail!("the verdict of run {id} judged another plan; nothing to override");
    }
    match verdict.blocking {
        Blocking::Soft => {}
        Blocking::None => bail!("the verdict of run {id} passed: nothing to override"),
        Blocking::Hard => bail!(
            "the verdict of run {id} fails hard-mandatory policies (or could not be evaluated): it cannot be overridden"
        ),
    }
    store
        .add_approval(id, &digest, ApprovalKind::Override, actor, Some(reason))
        .await?;
    request_for(
        store,
        &run,
        Trigger::Apply {
            actor: actor.to_string(),
        },
        None,
    )
    .await
}

/// `tidemark apply RUN`: asks the gate without approving anything.
pub async fn apply(store: &Store, id: i64, actor: &str) -> Result<Requested> {
    let (run, _) = plan_run(store, id).await?;
    request_for(
        store,
        &run,
        Trigger::Apply {
            actor: actor.to_string(),
        },
        None,
    )
    .await
}

/// Whether a plan run's stored summary says its root outputs change.
pub fn outputs_change(run: &Run) -> bool {
    run.summary_value()
        .and_then(|s| {
            s.get("outputs")
                .and_then(Value::as_array)
                .map(|o| !o.is_empty())
        })
        .unwrap_or(false)
}

/// A plan queued only because upstream stacks changed is skipped when every upstream stack it
/// waits for was applied (or refused) and no apply changed an output: its plan would be the
/// one it had. Returns why, when it should be skipped.
pub fn skip_transitive(run: &Run, upstream: &[Run]) -> Option<String> {
    if !run.transitive {
        return None;
    }
    let applies: Vec<&Run> = upstream
        .iter()
        .filter(|u| u.kind == RunKind::Apply)
        .collect();
    if applies.is_empty() {
        return None;
    }
    // An upstream stack whose plan it waits for has no apply here: its outputs may change
    // later, but the plan it waited for is what this stack is planned against.
    let unapplied = upstream
        .iter()
        .filter(|u| u.kind != RunKind::Apply)
        .any(|u| !applies.iter().any(|a| a.stack == u.stack));
    if unapplied {
        return None;
    }
    let changed = applies.iter().any(|a| {
        a.status == RunStatus::Succeeded
            && a.summary_value()
                .and_then(|s| s.get("outputs_changed").and_then(Value::as_bool))
                .unwrap_or(true)
    });
    (!changed).then(|| {
        let ids: Vec<String> = applies.iter().map(|a| a.id.to_string()).collect();
        format!(
            "deferred plan not needed: the upstream apply runs {} changed no outputs",
            ids.join(", ")
        )
    })
}
