//! Apply on merge, of exactly the reviewed plan. For each stack the pull request planned: when
//! the requirements hold and the stack's inputs at the merge commit are the ones the reviewed
//! plan was made from (and its state has not moved), the reviewed artifact itself is applied;
//! otherwise the merge commit is planned, and applied only when its change set equals the
//! reviewed one. What happened is recorded per stack and shown on the pull request.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tracing::info;

use super::PullRequests;
use crate::engine::apply;
use crate::forge::PullRequest;
use crate::gate::{ApprovalKind, Trigger};
use crate::policy::Blocking;
use crate::review::{MergeAction, MergeFacts};
use crate::store::{NewRun, Run, RunKind, RunStatus};

/// The prefix of a stack's merge result while its merge-time plan runs.
const REPLANNING: &str = "re-planning the merge commit";

impl PullRequests {
    /// A merged pull request: handled once across instances.
    pub(super) async fn merged(&self, pr: &PullRequest) -> Result<()> {
        let number = pr.number as i64;
        if !self.store.claim_merge(self.repo_id, number).await? {
            return Ok(());
        }
        let row = self.row(number).await?;
        let (Some(merge_sha), Some(planned_commit), Some(planned_head)) = (
            pr.merge_commit_sha.clone(),
            row.planned_commit.clone(),
            row.planned_head.clone(),
        ) else {
            return self.refresh(number).await;
        };
        if !self.github.apply_on_merge {
            info!(repo = %self.repo.name, pr = number, "merged; apply_on_merge is off");
            return self.refresh(number).await;
        }
        let env = super::super::poller::credentials_env(&self.repo)?;
        self.mirror
            .fetch_with_env(&self.repo.branch, &env)
            .await
            .with_context(|| format!("repo {}", self.repo.name))?;
        let approvers = self.read_approvals(number, &planned_head).await?;
        let runs = self.store.pr_runs(self.repo_id, number).await?;
        let mut latest: BTreeMap<String, Run> = BTreeMap::new();
        for run in runs.into_iter().filter(|r| {
            r.kind == RunKind::Plan && r.commit == planned_commit && r.reviewed_run_id.is_none()
        }) {
            latest.insert(run.stack.clone(), run);
        }
        let mut result: BTreeMap<String, String> = BTreeMap::new();
        for (stack, plan) in &latest {
            let text = self
                .merge_stack(number, pr, &merge_sha, plan, &approvers)
                .await
                .unwrap_or_else(|err| format!("not applied: {err:#}"));
            info!(repo = %self.repo.name, pr = number, stack = %stack, "{text}");
            result.insert(stack.clone(), text);
        }
        self.store
            .set_merge_result(self.repo_id, number, &serde_json::to_string(&result)?)
            .await?;
        self.work.notify_waiters();
        self.refresh(number).await
    }

    /// Decides and acts for one stack; returns what happened, for the comment.
    async fn merge_stack(
        &self,
        number: i64,
        pr: &PullRequest,
        merge_sha: &str,
        plan: &Run,
        approvers: &[String],
    ) -> Result<String> {
        let artifact = self.store.artifact(plan.id).await?;
        let verdict = self.store.verdict(plan.id).await?;
        let policy_passed = match (&artifact, &verdict) {
            (Some(artifact), Some((digest, verdict))) => {
                *digest == artifact.digest && verdict.blocking == Blocking::None
            }
            _ => false,
        };
        let serial = self
            .store
            .latest_state_serial(&self.repo.name, &plan.stack)
            .await?;
        let inputs_unchanged = self
            .same_inputs(&plan.commit, merge_sha, &plan.stack)
            .await?;
        let facts = MergeFacts {
            requirements: self.github.apply_requirements.clone(),
            approvers: approvers.to_vec(),
            policy_passed,
            mergeable: pr.mergeable,
            plan_usable: plan.status == RunStatus::Succeeded && artifact.is_some(),
            inputs_unchanged,
            serial_unchanged: artifact.as_ref().is_some_and(|a| a.state_serial == serial),
        };
        match crate::review::merge_action(&facts) {
            MergeAction::ApplyReviewed => {
                let digest = artifact.map(|a| a.digest).unwrap_or_default();
                let text = self
                    .apply_reviewed(
                        number,
                        plan,
                        &digest,
                        approvers,
                        "inputs unchanged at the merge commit",
                    )
                    .await?;
                Ok(format!("reviewed plan (run {}): {text}", plan.id))
            }
            MergeAction::Replan { why } => {
                let reason = format!(
                    "merge of pull request #{number}: {why} (reviewed plan run {})",
                    plan.id
                );
                let run = NewRun {
                    repo_id: self.repo_id,
                    stack: plan.stack.clone(),
                    commit: merge_sha.to_string(),
                    kind: RunKind::Plan,
                    reason: Some(reason),
                    after: Vec::new(),
                    plan_run: None,
                    transitive: false,
                    pr_number: Some(number),
                    reviewed_run: Some(plan.id),
                };
                let ids = self.store.enqueue(&[run]).await?;
                Ok(format!(
                    "{REPLANNING} (run {}): {why}; it is applied only if its changes equal the reviewed plan's",
                    ids.first().copied().unwrap_or_default()
                ))
            }
            MergeAction::Refuse { reasons } => Ok(format!("not applied: {}", reasons.join("; "))),
        }
    }

    /// Approves a plan on behalf of the merge and asks the gate, which checks it once more
    /// (and again when a worker is about to apply it).
    pub(super) async fn apply_reviewed(
        &self,
        number: i64,
        plan: &Run,
        digest: &str,
        approvers: &[String],
        why: &str,
    ) -> Result<String> {
        let actor = if approvers.is_empty() {
            format!("merge of pull request #{number}")
        } else {
            format!(
                "merge of pull request #{number} (approved by {})",
                approvers.join(", ")
            )
        };
        self.store
            .add_approval(plan.id, digest, ApprovalKind::Approve, &actor, Some(why))
            .await?;
        let requested = apply::request(&self.store, plan.id, Trigger::Approve { actor }).await?;
        Ok(match requested.apply_run {
            Some(apply) => format!("{why}: applying it (apply run {apply})"),
            None => match requested.decision.action {
                crate::gate::Action::NothingToApply => "no changes: nothing to apply".into(),
                _ => format!("not applied: {}", requested.decision.reasons()),
            },
        })
    }

    /// Acts on merge-time plans that finished: applies one whose change set equals the
    /// reviewed plan's, and says so when it differs.
    pub(super) async fn finish_merge_replans(&self, number: i64) -> Result<()> {
        let row = self.row(number).await?;
        let mut result: BTreeMap<String, String> =
            serde_json::from_str(&row.merge_result).unwrap_or_default();
        let pending: Vec<String> = result
            .iter()
            .filter(|(_, text)| text.starts_with(REPLANNING))
            .map(|(stack, _)| stack.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let runs = self.store.pr_runs(self.repo_id, number).await?;
        let approvers: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&row.approvals)
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.get("login")?.as_str().map(String::from))
            .collect();
        let mut changed = false;
        for stack in pending {
            let Some(replan) = runs
                .iter()
                .rev()
                .find(|r| r.stack == stack && r.reviewed_run_id.is_some())
            else {
                continue;
            };
            if !replan.status.is_final() {
                continue;
            }
            let reviewed = self
                .store
                .run(replan.reviewed_run_id.unwrap_or_default())
                .await?;
            let text = if replan.status != RunStatus::Succeeded {
                format!(
                    "not applied: the merge-commit plan (run {}) {}",
                    replan.id, replan.status
                )
            } else {
                let same = match (reviewed.summary_value(), replan.summary_value()) {
                    (Some(a), Some(b)) => {
                        crate::review::change_set(&a) == crate::review::change_set(&b)
                    }
                    _ => false,
                };
                if same {
                    let digest = self
                        .store
                        .artifact(replan.id)
                        .await?
                        .map(|a| a.digest)
                        .unwrap_or_default();
                    let text = self
                        .apply_reviewed(
                            number,
                            replan,
                            &digest,
                            &approvers,
                            "the merge-commit plan has the reviewed change set",
                        )
                        .await?;
                    format!("re-planned at the merge commit (run {}): {text}", replan.id)
                } else {
                    format!(
                        "not applied: the merge-commit plan (run {}) differs from the reviewed plan (run {}); approve run {} to apply it",
                        replan.id, reviewed.id, replan.id
                    )
                }
            };
            info!(repo = %self.repo.name, pr = number, stack = %stack, "{text}");
            result.insert(stack, text);
            changed = true;
        }
        if changed {
            self.store
                .set_merge_result(self.repo_id, number, &serde_json::to_string(&result)?)
                .await?;
            self.work.notify_waiters();
        }
        Ok(())
    }

    /// Whether the stack reads the same files at both commits: the same closure, with the
    /// same tree and blob ids.
    async fn same_inputs(&self, planned: &str, merge: &str, stack: &str) -> Result<bool> {
        let path = self.mirror.path.clone();
        let index = self.index.clone();
        let (planned, merge, stack) = (planned.to_string(), merge.to_string(), stack.to_string());
        tokio::task::spawn_blocking(move || -> Result<bool> {
            let repo = crate::repo::open(&path)?;
            let a = git2::Oid::from_str(&planned)?;
            let b = git2::Oid::from_str(&merge)?;
            let mut index = index.blocking_lock();
            let before = crate::stacks::export_of(&repo, a, &stack, Some(&mut index))?;
            let after = crate::stacks::export_of(&repo, b, &stack, Some(&mut index))?;
            match (before, after) {
                (Some(before), Some(after)) if before == after => {
                    crate::repo::same_content(&repo, a, b, &before)
                }
                _ => Ok(false),
            }
        })
        .await
        .context("comparing stack inputs panicked")?
    }
}
