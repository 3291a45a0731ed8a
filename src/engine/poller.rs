//! The poller: one task per repository. Each poll fetches the tracked branch into the mirror,
//! and when its head moved, works out the affected stacks and queues their plans in
//! dependency order. A webhook or `tidemark poll` nudges it at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RepoConfig;
use crate::repo::Mirror;
use crate::stacks::{self, Index, ReasonKind};
use crate::store::{CommitBatch, NewRun, RunKind, StackRecord, Store};

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// The branch head is the commit already processed.
    Unchanged,
    /// A new head: this many plan runs were queued for it.
    Queued { commit: String, runs: usize },
}

/// Polls one repository.
pub struct Poller {
    pub repo: RepoConfig,
    pub repo_id: i64,
    pub mirror: Mirror,
    pub store: Store,
    /// Woken by webhooks and `tidemark poll` to poll before the interval ends.
    pub nudge: Arc<Notify>,
    /// Woken after runs are queued, so idle workers start at once.
    pub work: Arc<Notify>,
    /// The stack index, kept warm across polls; only changed subtrees are parsed again.
    pub index: Arc<Mutex<Index>>,
    /// Woken after the stacks table changed, so the drift scheduler reloads it.
    pub stacks_changed: Arc<Notify>,
    /// The repository's pull requests, when it has a forge: synced before a new head is
    /// planned, so a merge that applies its reviewed plans is handled first.
    pub pulls: Option<Arc<super::PullRequests>>,
}

impl Poller {
    /// Polls until shutdown. A failed fetch is recorded against the repo and retried with
    /// backoff (doubling up to ten intervals); other repositories are not affected.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let wait = match self.poll_once().await {
                Ok(_) => {
                    failures = 0;
                    self.repo.poll_interval
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(self.repo.poll_interval, failures);
                    warn!(repo = %self.repo.name, error = %format!("{err:#}"), retry_in = ?wait, "poll failed");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One poll: fetch, and queue plans when the head moved. Errors are also recorded on the
    /// repository's row, where `tidemark` and the API show them.
    pub async fn poll_once(&self) -> Result<PollOutcome> {
        let result = self.poll_inner().await;
        crate::telemetry::polled(match &result {
            Ok(PollOutcome::Unchanged) => "unchanged",
            Ok(PollOutcome::Queued { .. }) => "new_commit",
            Err(_) => "error",
        });
        if let Err(err) = &result {
            let message = format!("{err:#}");
            if let Err(store_err) = self.store.record_fetch(self.repo_id, Some(&message)).await {
                warn!(repo = %self.repo.name, error = %store_err, "recording a poll error failed");
            }
        }
        result
    }

    async fn poll_inner(&self) -> Result<PollOutcome> {
        let env = credentials_env(&self.repo)?;
        let head = self
            .mirror
            .fetch_with_env(&self.repo.branch, &env)
            .await
            .with_context(|| format!("repo {}", self.repo.name))?;
        self.store.record_fetch(self.repo_id, None).await?;
        let last = self
            .store
            .last_processed_commit(self.repo_id, &self.repo.branch)
            .await?;
        if last.as_deref() == Some(head.to_string().as_str()) {
            return Ok(PollOutcome::Unchanged);
        }
        let path = self.mirror.path.clone();
        let index = self.index.clone();
        let base = last.clone();
        let detection = tokio::task::spawn_blocking(move || -> Result<_> {
            let repo = crate::repo::open(&path)?;
            let base = match base.as_deref().map(git2::Oid::from_str) {
                // A base that is gone (force-push) falls back to planning every stack.
                Some(Ok(oid)) if repo.find_commit(oid).is_ok() => Some(oid),
                Some(_) => {
                    warn!(commit = %head, last = base.as_deref().unwrap_or(""), "the branch was rewritten and its last processed commit is gone: planning every stack");
                    None
                }
                None => None,
            };
            // A force-push that dropped the last processed commit: what differs between the
            // two trees is what changed, whatever the history says.
            if let Some(base) = base
                && !repo.graph_descendant_of(head, base).unwrap_or(true)
                && head != base
            {
                warn!(commit = %head, last = %base, "the branch was rewritten (force-push): its last processed commit is not in the new history; planning what differs between the two");
            }
            let mut index = index.blocking_lock();
            let discovery = stacks::discover(&repo, head, Some(&mut index))?;
            let affected = stacks::affected(&repo, base, head, Some(&mut index));
            if let Err(e) = index.save() {
                warn!("could not save the stack index: {e:#}");
            }
            drop(index);
            let info = crate::repo::commit_info(&repo, head)?;
            let parent = repo
                .find_commit(head)?
                .parent_id(0)
                .ok()
                .map(|p| p.to_string());
            Ok((discovery, affected, info, parent))
        })
        .await
        .context("stack detection panicked")??;
        let (discovery, affected, info, parent) = detection;
        let records: Vec<StackRecord> = discovery
            .stacks
            .iter()
            .map(|s| StackRecord {
                path: s.path.clone(),
                name: s.name.clone(),
                runner: s.runner.clone(),
                auto_apply: s.auto_apply,
                tags: s.tags.clone(),
                drift_schedule: s.drift_schedule.clone(),
                drift_remediation: s.drift_remediation,
                environment: s.environment.clone(),
                depends_on: s.depends_on.clone(),
            })
            .collect();
        self.store
            .sync_stacks(self.repo_id, &info.sha, &records)
            .await?;
        self.stacks_changed.notify_one();
        let (affected, cyclic) = match affected {
            Ok(affected) => (affected, Vec::new()),
            // A cycle: the stacks on it get failed runs naming it; the rest are planned.
            Err(stacks::AffectedError::Cycle { stacks, rest }) => (*rest, stacks),
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("repo {}: detecting affected stacks", self.repo.name)
                });
            }
        };
        for error in &affected.errors {
            warn!(repo = %self.repo.name, stack = %error.stack, file = %error.file, line = ?error.line, "{}", error.message);
        }
        let error = (!cyclic.is_empty())
            .then(|| format!("dependency cycle among stacks: {}", cyclic.join(", ")));
        if let Some(error) = &error {
            warn!(repo = %self.repo.name, commit = %info.sha, "{error}");
        }
        let mut affected = affected;
        // An atlantis.yaml project with `autoplan.enabled: false` is planned only on request.
        let manual: Vec<&str> = discovery
            .stacks
            .iter()
            .filter(|s| !s.autoplan)
            .map(|s| s.path.as_str())
            .collect();
        if !manual.is_empty() {
            affected.stacks.retain(|s| {
                let keep = !manual.contains(&s.path.as_str());
                if !keep {
                    info!(repo = %self.repo.name, stack = %s.path, "autoplan disabled: not planned");
                }
                keep
            });
        }
        if let Some(pulls) = &self.pulls {
            if let Err(err) = pulls.sync().await {
                warn!(repo = %self.repo.name, error = %format!("{err:#}"), "pull request sync before planning the branch failed");
            }
            if let Err(err) = pulls.merged_into(&info.sha).await {
                warn!(repo = %self.repo.name, error = %format!("{err:#}"), "checking the pull requests this head merged failed");
            }
            // Stacks whose merge applies (or re-plans) the reviewed plan are not planned twice.
            let handled = self
                .store
                .merge_handled_stacks(self.repo_id, &info.sha)
                .await?;
            if !handled.is_empty() {
                info!(repo = %self.repo.name, commit = %info.sha, stacks = ?handled, "handled by the merged pull request: not planned again");
                affected.stacks.retain(|s| !handled.contains(&s.path));
            }
        }
        let (runs, failed) = plan_runs(self.repo_id, &info.sha, &affected, &cyclic, None);
        let batch = CommitBatch {
            repo_id: self.repo_id,
            branch: &self.repo.branch,
            info: &info,
            parent: parent.as_deref(),
            error: error.as_deref(),
            runs,
            failed,
        };
        let Some(ids) = self.store.queue_commit(&batch).await? else {
            // Another instance recorded this commit first and queued its runs.
            return Ok(PollOutcome::Unchanged);
        };
        let queued = ids.len() - batch.failed.len();
        info!(repo = %self.repo.name, commit = %info.sha, runs = queued, "new commit");
        if queued > 0 {
            self.work.notify_waiters();
        }
        Ok(PollOutcome::Queued {
            commit: info.sha,
            runs: queued,
        })
    }
}

/// One plan per affected stack (removed ones are reported, never planned), each after the
/// plans of the stacks it depends on; `after` holds indexes into the returned list. Stacks
/// in `cyclic` get a run recorded as failed, so the history shows why they were not planned.
/// `pr_number` marks a pull request's speculative plans.
pub(super) fn plan_runs(
    repo_id: i64,
    commit: &str,
    affected: &stacks::Affected,
    cyclic: &[String],
    pr_number: Option<i64>,
) -> (Vec<NewRun>, Vec<(usize, String)>) {
    let plan_run = |stack: &str, reason: String, after: Vec<i64>| NewRun {
        repo_id,
        stack: stack.to_string(),
        commit: commit.to_string(),
        kind: RunKind::Plan,
        reason: Some(reason),
        after,
        plan_run: None,
        transitive: false,
        pr_number,
        reviewed_run: None,
    };
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut runs = Vec::new();
    // Stacks come in dependency order, so every upstream run is already listed.
    for stack in &affected.stacks {
        if stack.reasons.iter().any(|r| r.kind == ReasonKind::Removed) {
            info!(stack = %stack.path, "stack removed: reported, not planned");
            continue;
        }
        let after = stack
            .depends_on
            .iter()
            .filter_map(|up| index.get(up.as_str()))
            .map(|&i| i as i64)
            .collect();
        index.insert(stack.path.as_str(), runs.len());
        let mut run = plan_run(&stack.path, reason_text(stack), after);
        run.transitive = !stack.direct;
        runs.push(run);
    }
    let mut failed = Vec::new();
    for stack in cyclic {
        failed.push((
            runs.len(),
            format!(
                "stack {stack} is in a dependency cycle: {}",
                cyclic.join(" -> ")
            ),
        ));
        runs.push(plan_run(stack, "dependency cycle".into(), Vec::new()));
    }
    (runs, failed)
}

/// The reasons a stack was picked, for people: `file stacks/a/main.tf; dependency stacks/net`.
fn reason_text(stack: &stacks::AffectedStack) -> String {
    stack
        .reasons
        .iter()
        .map(|reason| {
            let detail = reason
                .file
                .as_deref()
                .or(reason.module.as_deref())
                .or(reason.stack.as_deref());
            let kind = serde_json::to_value(reason.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            match detail {
                Some(detail) => format!("{kind} {detail}"),
                None => kind,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The wait after `failures` failed polls in a row: the interval doubled per failure, at most
/// ten intervals (and at least the interval).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(4);
    (interval * factor).min(interval * 10).max(interval)
}

/// Credentials for `git fetch`, read from the environment variables the config names. They
/// go to git through its environment, never through the command line or a file.
pub(super) fn credentials_env(repo: &RepoConfig) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    if let Some(var) = &repo.token_env {
        let token = std::env::var(var).with_context(|| {
            format!(
                "repo {}: token_env names {var}, which is not set",
                repo.name
            )
        })?;
        let basic = BASE64_STANDARD.encode(format!("x-access-token:{token}"));
        env.push(("GIT_CONFIG_COUNT".into(), "1".into()));
        env.push(("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()));
        env.push((
            "GIT_CONFIG_VALUE_0".into(),
            format!("Authorization: Basic {basic}"),
        ));
    }
    if let Some(var) = &repo.ssh_key_env {
        let key = std::env::var(var).with_context(|| {
            format!(
                "repo {}: ssh_key_env names {var}, which is not set",
                repo.name
            )
        })?;
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!("ssh -i '{key}' -o IdentitiesOnly=yes -o BatchMode=yes"),
        ));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_intervals() {
        let s = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|f| backoff(s, f).as_secs()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 300, 300, 300]);
    }
}
