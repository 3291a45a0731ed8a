//! What follows a finished run, in one place. The worker claims, executes and records; it
//! hands each executed run to [`FollowUps`], which decides and queues what comes next: the
//! policy verdict and an automatic apply after a plan, the downstream re-plans after an apply
//! that changed outputs, the drift assessment after a drift check. A new effect of a run
//! (a pull-request comment, a commit status) is added here, not threaded through the worker.
//!
//! Two moments, because the order matters:
//! - [`FollowUps::while_held`] runs before the outcome is recorded, while the worker still
//!   holds the run: an auto-apply queued then is in place before the downstream plans waiting
//!   for this run can start, so they wait for the apply too.
//! - [`FollowUps::after_finish`] runs once the outcome is stored (the drift assessment reads
//!   it back).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::DriftHook;
use super::apply::{self, CommitFacts, Policies, RepoPolicies};
use crate::gate::Trigger;
use crate::store::{Run, RunKind, RunOutcome, RunStatus, Store};

/// A run the worker executed, with what the follow-ups need to know about it.
#[derive(Debug)]
pub struct Executed {
    pub run: Run,
    pub outcome: RunOutcome,
    /// A plan or drift run that stored a plan: its digest and redacted plan JSON.
    pub plan: Option<(String, Value)>,
    /// An apply run: the plan run it applied and whether that plan changed outputs.
    pub applied: Option<Applied>,
}

/// What an apply run applied.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    pub plan_run: i64,
    pub outputs_changed: bool,
}

/// The parts of an instance the follow-ups act through.
pub struct FollowUps<'a> {
    pub store: &'a Store,
    pub policies: &'a Policies,
    pub mirrors: &'a HashMap<String, PathBuf>,
    /// Per repository, the poller's warm stack index.
    pub indexes: &'a HashMap<String, std::sync::Arc<tokio::sync::Mutex<crate::stacks::Index>>>,
    pub drift: Option<&'a DriftHook>,
    /// Woken when runs are queued.
    pub work: &'a Notify,
    /// Per repository with a forge: told which pull request's run finished.
    pub pr_refresh: &'a HashMap<String, super::PrRefresh>,
}

impl FollowUps<'_> {
    /// The effects that must be queued while the worker still holds the run. An error here
    /// fails the run, as an error while executing it would.
    pub async fn while_held(&self, executed: &Executed) -> Result<()> {
        let run = &executed.run;
        if executed.outcome.status != RunStatus::Succeeded {
            return Ok(());
        }
        match (run.kind, &executed.plan, executed.applied) {
            (RunKind::Plan | RunKind::Drift, Some((digest, plan_json)), _) => {
                self.judge_and_trigger(run, &executed.outcome, plan_json.clone(), digest)
                    .await
            }
            (RunKind::Apply, _, Some(applied)) if applied.outputs_changed => {
                self.replan_downstream(run, applied.plan_run).await
            }
            _ => Ok(()),
        }
    }

    /// The effects of a recorded outcome. Failures are logged: the run itself is recorded.
    pub async fn after_finish(&self, run: &Run, outcome: &RunOutcome) {
        if let (RunKind::Drift, Some(drift)) = (run.kind, self.drift)
            && let Err(err) = drift.after_check(self.store, run, outcome).await
        {
            error!(error = %format!("{err:#}"), "recording the drift check failed");
        }
        // A pull request's run: its comment and statuses change (and a merge may go on).
        if let (Some(number), Some(refresh)) = (run.pr_number, self.pr_refresh.get(&run.repo)) {
            let _ = refresh.send(number);
        }
    }

    /// Tells the pull request's task that one of its runs started, so the comment shows it.
    pub fn started(&self, run: &Run) {
        if let (Some(number), Some(refresh)) = (run.pr_number, self.pr_refresh.get(&run.repo)) {
            let _ = refresh.send(number);
        }
    }

    /// Judges a finished plan with the repository's policies, then, when the stack applies on
    /// its own, asks the gate.
    async fn judge_and_trigger(
        &self,
        run: &Run,
        outcome: &RunOutcome,
        plan_json: Value,
        digest: &str,
    ) -> Result<()> {
        let none = RepoPolicies::default();
        let policies = self.policies.get(&run.repo).unwrap_or(&none);
        let commit = self.commit_facts(run).await?;
        let settings = self.store.stack_settings(&run.repo, &run.stack).await?;
        let verdict = apply::judge(
            self.store, policies, run, &settings, commit, plan_json, digest,
        )
        .await?;
        let failures = verdict.failures().count() + verdict.errors.len();
        info!(passed = verdict.passed, failures, "policy verdict");
        let has_changes = outcome
            .summary
            .as_ref()
            .and_then(|s| s.get("has_changes")?.as_bool())
            .unwrap_or(false);
        // A pull request's plans never apply by themselves: its merge decides.
        let automatic = match run.kind {
            RunKind::Plan => settings.auto_apply && run.pr_number.is_none(),
            RunKind::Drift => settings.drift_remediation == "apply",
            RunKind::Apply => false,
        };
        if has_changes && automatic {
            let mut run = run.clone();
            run.summary_json = outcome.summary.as_ref().map(|s| s.to_string());
            let requested =
                apply::request_for(self.store, &run, Trigger::Auto, Some(RunStatus::Succeeded))
                    .await?;
            match requested.apply_run {
                Some(apply) => info!(apply, "auto-apply queued"),
                None => warn!("auto-apply refused: {}", requested.decision.reasons()),
            }
        }
        Ok(())
    }

    /// The branch, author and changed files of a run's commit, for the policy input; for a
    /// pull request's plan, the pull request (its author, labels, approvals) and the files it
    /// changes since its merge base.
    async fn commit_facts(&self, run: &Run) -> Result<CommitFacts> {
        let branch = self
            .store
            .repos()
            .await?
            .into_iter()
            .find(|r| r.name == run.repo)
            .map(|r| r.branch)
            .unwrap_or_default();
        let pr = match run.pr_number {
            Some(number) => self
                .store
                .pull_requests(Some(&run.repo), None)
                .await?
                .into_iter()
                .map(|(_, pr)| pr)
                .find(|pr| pr.number == number),
            None => None,
        };
        let Some(mirror) = self.mirrors.get(&run.repo).cloned() else {
            return Ok(CommitFacts {
                branch,
                ..CommitFacts::default()
            });
        };
        let commit = run.commit.clone();
        let range = pr
            .as_ref()
            .and_then(|pr| Some((pr.merge_base.clone()?, pr.planned_head.clone()?)));
        let (author, changed_files) = tokio::task::spawn_blocking(move || -> Result<_> {
            let repo = crate::repo::open(&mirror)?;
            let oid = git2::Oid::from_str(&commit)?;
            let info = crate::repo::commit_info(&repo, oid)?;
            let (old, new) = match &range {
                Some((base, head)) => {
                    (Some(git2::Oid::from_str(base)?), git2::Oid::from_str(head)?)
                }
                None => (repo.find_commit(oid)?.parent_id(0).ok(), oid),
            };
            let changed = match old {
                Some(old) => {
                    let old_tree = crate::repo::commit_tree(&repo, old)?;
                    let new_tree = crate::repo::commit_tree(&repo, new)?;
                    crate::repo::changed_paths(&repo, old_tree, new_tree)?
                }
                None => Vec::new(),
            };
            Ok((info.author, changed))
        })
        .await
        .context("reading the commit panicked")??;
        let pull_request = pr.map(|pr| {
            let approvals: Vec<crate::policy::ApprovalInput> =
                serde_json::from_str(&pr.approvals).unwrap_or_default();
            crate::policy::PullRequestInput {
                number: pr.number as u64,
                approvers: Vec::new(),
                approvals,
                author: pr.author.clone(),
                base: pr.base_ref.clone(),
                head: pr.planned_head.clone().unwrap_or_default(),
                labels: pr.labels(),
                draft: pr.draft,
            }
        });
        let author = match &pull_request {
            Some(pr) => pr.author.clone(),
            None => author,
        };
        Ok(CommitFacts {
            branch,
            author: Some(author),
            changed_files,
            pull_request,
        })
    }

    /// After an apply changed its stack's outputs: plans every stack that depends on it
    /// directly, at the same commit, unless a plan of it there is already waiting (a deferred
    /// plan queued behind this apply). Their own applies carry the change further down.
    async fn replan_downstream(&self, run: &Run, plan_run: i64) -> Result<()> {
        let Some(mirror) = self.mirrors.get(&run.repo).cloned() else {
            return Ok(());
        };
        let (commit, stack) = (run.commit.clone(), run.stack.clone());
        let index = self.indexes.get(&run.repo).cloned();
        let downstream = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let repo = crate::repo::open(&mirror)?;
            let oid = git2::Oid::from_str(&commit)?;
            // The poller's index has this commit resolved already: no analysis of its own.
            let mut index = index.as_ref().map(|i| i.blocking_lock());
            let discovery = crate::stacks::discover(&repo, oid, index.as_deref_mut())?;
            Ok(discovery
                .stacks
                .iter()
                .filter(|s| discovery.upstreams(&s.path).contains(&stack))
                .map(|s| s.path.clone())
                .collect())
        })
        .await
        .context("stack discovery panicked")??;
        let reason = format!(
            "upstream {} applied with changed outputs (apply run {}, plan run {plan_run})",
            run.stack, run.id
        );
        for stack in downstream {
            if let Some(id) = self
                .store
                .enqueue_replan(&run.repo, &stack, &run.commit, &reason, None)
                .await?
            {
                info!(downstream = %stack, run = id, "downstream re-plan queued");
            }
        }
        self.work.notify_waiters();
        Ok(())
    }
}
