//! What a pull request shows: the one comment Tidemark keeps on it (found again by its hidden
//! marker, edited in place, never posted twice) and the commit statuses of its head and of its
//! merge commit, all rebuilt from the store whenever one of its runs changes.

use std::collections::BTreeMap;

use anyhow::Result;
use sha2::{Digest, Sha256};
use tracing::info;

use super::PullRequests;
use crate::forge::{ForgeError, StatusState};
use crate::notify::pr_comment::{self, PrComment, StackEntry, StackStatus};
use crate::plan::PlanSummary;
use crate::policy::{Blocking, Verdict};
use crate::store::{PrRow, Run, RunKind, RunStatus};

/// One stack's runs for the pull request's current plans.
struct StackRuns {
    plan: Run,
    summary: Option<PlanSummary>,
    verdict: Option<Verdict>,
    plan_text: Option<String>,
    apply: Option<String>,
}

impl PullRequests {
    /// Rebuilds the pull request's comment and statuses from the store, after acting on
    /// merge-time plans that finished. Sends only what changed.
    pub async fn refresh(&self, number: i64) -> Result<()> {
        self.finish_merge_replans(number).await?;
        let row = self.row(number).await?;
        let runs = self.store.pr_runs(self.repo_id, number).await?;
        let stacks = self.current(&row, &runs).await?;
        let merge_result: BTreeMap<String, String> =
            serde_json::from_str(&row.merge_result).unwrap_or_default();
        let mut notes = Vec::new();
        if let Some(skipped) = &row.skipped {
            notes.push(format!("Not planned: {skipped}."));
        }
        if row.state == "closed" {
            notes.push("The pull request was closed: its queued plans were cancelled.".into());
        }
        if row.state == "merged" && merge_result.is_empty() && row.merge_handled_at.is_some() {
            notes.push(
                "Merged: apply_on_merge is off, so the branch plans the merge commit.".into(),
            );
        }
        let entries: Vec<StackEntry> = stacks
            .iter()
            .map(|s| StackEntry {
                stack: &s.plan.stack,
                run_id: Some(s.plan.id),
                status: stack_status(&s.plan),
                summary: s.summary.as_ref(),
                verdict: s.verdict.as_ref(),
                error: s.plan.error.as_deref(),
                plan_text: s.plan_text.as_deref(),
                apply: s.apply.as_deref(),
            })
            .collect();
        let base_url = self.base_url.trim_end_matches('/').to_string();
        let body = pr_comment::render(&PrComment {
            repo: &self.repo.name,
            number: number as u64,
            head_sha: row.planned_head.as_deref().unwrap_or(&row.head_sha),
            base_url: Some(&base_url),
            stacks: entries,
            notes,
        });
        self.upsert_comment(&row, &body).await?;
        self.update_statuses(&row, &stacks).await
    }

    /// The latest plan run per stack at the pull request's planned commit, with what the
    /// comment shows of it.
    async fn current(&self, row: &PrRow, runs: &[Run]) -> Result<Vec<StackRuns>> {
        let Some(planned) = &row.planned_commit else {
            return Ok(Vec::new());
        };
        let merge_result: BTreeMap<String, String> =
            serde_json::from_str(&row.merge_result).unwrap_or_default();
        let mut latest: BTreeMap<&str, &Run> = BTreeMap::new();
        for run in runs.iter().filter(|r| {
            r.kind == RunKind::Plan && &r.commit == planned && r.reviewed_run_id.is_none()
        }) {
            latest.insert(&run.stack, run);
        }
        let mut stacks = Vec::with_capacity(latest.len());
        for (stack, plan) in latest {
            let summary = plan
                .summary_value()
                .and_then(|v| serde_json::from_value::<PlanSummary>(v).ok());
            let verdict = self.store.verdict(plan.id).await?.map(|(_, v)| v);
            let plan_text = if plan.status.is_final() {
                Some(self.plan_text(plan.id).await?)
            } else {
                None
            };
            let apply = self.apply_text(stack, runs, merge_result.get(stack));
            stacks.push(StackRuns {
                plan: plan.clone(),
                summary,
                verdict,
                plan_text,
                apply,
            });
        }
        Ok(stacks)
    }

    /// The plan's human output: the redacted stdout of its `plan` step.
    async fn plan_text(&self, run_id: i64) -> Result<String> {
        let logs = self.store.logs(run_id).await?;
        let mut text = String::new();
        for line in logs
            .iter()
            .filter(|l| l.step == "plan" && l.stream == "stdout")
        {
            text.push_str(&line.text);
            text.push('\n');
        }
        Ok(text)
    }

    /// What happened to the stack at the merge, in words.
    fn apply_text(&self, stack: &str, runs: &[Run], merge: Option<&String>) -> Option<String> {
        let apply = runs
            .iter()
            .rev()
            .find(|r| r.kind == RunKind::Apply && r.stack == stack);
        match (merge, apply) {
            (Some(text), Some(apply)) => {
                Some(format!("{text}; apply run {} {}", apply.id, apply.status))
            }
            (Some(text), None) => Some(text.clone()),
            (None, Some(apply)) => Some(format!("apply run {} {}", apply.id, apply.status)),
            (None, None) => None,
        }
    }

    /// Edits Tidemark's comment on the pull request, or posts it when there is none yet: the
    /// recorded id first, then a comment carrying the marker (an earlier instance may have
    /// posted it and died before recording it), then a new one.
    async fn upsert_comment(&self, row: &PrRow, body: &str) -> Result<()> {
        let written = self.write_comment(row, body).await;
        match &written {
            Ok(true) => crate::telemetry::notification("pr_comment", "sent"),
            Ok(false) => {}
            Err(_) => crate::telemetry::notification("pr_comment", "failed"),
        }
        written.map(|_| ())
    }

    /// [`Self::upsert_comment`]'s work: true when it posted or edited the comment, false when
    /// there was nothing to write (the same body, or another instance posting the first one).
    async fn write_comment(&self, row: &PrRow, body: &str) -> Result<bool> {
        let digest = hex::encode(Sha256::digest(body.as_bytes()));
        if row.comment_sha256.as_deref() == Some(digest.as_str()) {
            return Ok(false);
        }
        let number = row.number as u64;
        let mut target = row.comment_id.map(|id| id as u64);
        if target.is_none() {
            target = self
                .forge
                .comments(number)
                .await?
                .into_iter()
                .find(|c| pr_comment::is_tidemark_comment(&c.body))
                .map(|c| c.id);
        }
        let comment = match target {
            Some(id) => match self.forge.update_comment(id, body).await {
                Ok(comment) => comment,
                // Deleted by someone: post a new one.
                Err(ForgeError::NotFound(_)) => self.forge.create_comment(number, body).await?,
                Err(err) => return Err(err.into()),
            },
            None => {
                // Another instance may be posting the first comment right now: the one that
                // claims it posts; the others edit it on a later refresh.
                if !self
                    .store
                    .claim_pr_comment(self.repo_id, row.number)
                    .await?
                {
                    return Ok(false);
                }
                let comment = match self.forge.create_comment(number, body).await {
                    Ok(comment) => comment,
                    Err(err) => {
                        self.store
                            .release_pr_comment(self.repo_id, row.number)
                            .await?;
                        return Err(err.into());
                    }
                };
                info!(repo = %self.repo.name, pr = number, comment = comment.id, "pull request comment posted");
                comment
            }
        };
        self.store
            .set_pr_comment(self.repo_id, row.number, comment.id as i64, &digest)
            .await?;
        Ok(true)
    }

    /// `tidemark/plan` on the planned head, `tidemark/apply` on the merge commit.
    async fn update_statuses(&self, row: &PrRow, stacks: &[StackRuns]) -> Result<()> {
        let mut wanted: Vec<(String, String, StatusState, String, Option<String>)> = Vec::new();
        let pr_url = format!(
            "{}/api/v1/prs/{}/{}",
            self.base_url.trim_end_matches('/'),
            self.repo.name,
            row.number
        );
        if let (Some(head), None) = (&row.planned_head, &row.skipped) {
            let (state, description) = plan_status(stacks);
            let url = match stacks {
                [one] => format!(
                    "{}/api/v1/runs/{}",
                    self.base_url.trim_end_matches('/'),
                    one.plan.id
                ),
                _ => pr_url.clone(),
            };
            wanted.push((
                head.clone(),
                self.github.plan_context.clone(),
                state,
                description,
                Some(url),
            ));
        }
        if let Some(merge) = &row.merge_commit_sha {
            let runs = self.store.pr_runs(self.repo_id, row.number).await?;
            let applies: Vec<&Run> = runs.iter().filter(|r| r.kind == RunKind::Apply).collect();
            if !applies.is_empty() {
                let failed = applies
                    .iter()
                    .filter(|r| r.status.is_final() && r.status != RunStatus::Succeeded)
                    .count();
                let live = applies.iter().filter(|r| !r.status.is_final()).count();
                let (state, description) = if live > 0 {
                    (
                        StatusState::Pending,
                        format!("applying {} stack(s)", applies.len()),
                    )
                } else if failed > 0 {
                    (
                        StatusState::Failure,
                        format!("{failed} of {} apply run(s) failed", applies.len()),
                    )
                } else {
                    (
                        StatusState::Success,
                        format!("applied {} stack(s)", applies.len()),
                    )
                };
                wanted.push((
                    merge.clone(),
                    self.github.apply_context.clone(),
                    state,
                    description,
                    Some(pr_url.clone()),
                ));
            }
        }
        let mut sent: Vec<String> = row.statuses.lines().map(String::from).collect();
        let mut changed = false;
        for (sha, context, state, description, url) in wanted {
            let key = format!("{context}={state:?}:{sha}:{description}");
            if sent.contains(&key) {
                continue;
            }
            self.status(&sha, &context, state, &description, url).await;
            sent.retain(|line| !line.starts_with(&format!("{context}=")) || !line.contains(&sha));
            sent.push(key);
            changed = true;
        }
        if changed {
            self.store
                .set_pr_statuses(self.repo_id, row.number, &sent.join("\n"))
                .await?;
        }
        Ok(())
    }
}

/// A plan run's status for the comment.
fn stack_status(run: &Run) -> StackStatus {
    match run.status {
        RunStatus::Queued => StackStatus::Queued,
        RunStatus::Running => StackStatus::Running,
        RunStatus::Succeeded => StackStatus::Planned {
            changes: run
                .summary_value()
                .and_then(|s| s.get("has_changes")?.as_bool())
                .unwrap_or(false),
        },
        RunStatus::Cancelled => StackStatus::Cancelled,
        RunStatus::Superseded => StackStatus::Superseded,
        _ => StackStatus::Failed,
    }
}

/// `tidemark/plan`: pending while any plan runs, failure on a failed plan or a blocking
/// verdict, success otherwise.
fn plan_status(stacks: &[StackRuns]) -> (StatusState, String) {
    if stacks.is_empty() {
        return (StatusState::Success, "no stack is affected".into());
    }
    let live = stacks.iter().filter(|s| !s.plan.status.is_final()).count();
    if live > 0 {
        return (
            StatusState::Pending,
            format!("planning {} of {} stack(s)", live, stacks.len()),
        );
    }
    let failed = stacks
        .iter()
        .filter(|s| {
            !matches!(
                s.plan.status,
                RunStatus::Succeeded | RunStatus::Cancelled | RunStatus::Superseded
            )
        })
        .count();
    let blocked = stacks
        .iter()
        .filter(|s| {
            s.verdict
                .as_ref()
                .is_some_and(|v| v.blocking != Blocking::None)
        })
        .count();
    let (mut add, mut change, mut destroy, mut replace) = (0, 0, 0, 0);
    for summary in stacks.iter().filter_map(|s| s.summary.as_ref()) {
        add += summary.summary.add;
        change += summary.summary.change;
        destroy += summary.summary.destroy;
        replace += summary.summary.replace;
    }
    let counts = format!("+{add} ~{change} -{destroy} ±{replace}");
    if failed > 0 {
        (
            StatusState::Failure,
            format!("{failed} of {} plan(s) failed; {counts}", stacks.len()),
        )
    } else if blocked > 0 {
        (
            StatusState::Failure,
            format!("policy blocks {blocked} plan(s); {counts}"),
        )
    } else {
        (
            StatusState::Success,
            format!("{} stack(s) planned: {counts}", stacks.len()),
        )
    }
}
