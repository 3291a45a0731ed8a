//! Speculative plans of a pull request's head: the affected set between the merge base and
//! the head (base-branch changes since the branch point are not the pull request's), each
//! stack planned on the head merged into the current base, or on the head alone.

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::PullRequests;
use crate::config::Checkout;
use crate::forge::{CommitStatus, PullRequest, StatusState};
use crate::stacks;

/// What a head is planned on.
struct Planned {
    /// Stacks planned only on request.
    manual: Vec<String>,
    merge_base: String,
    commit: String,
    affected: stacks::Affected,
    cyclic: Vec<String>,
}

impl PullRequests {
    /// Plans a pull request's head (or records why it is not planned).
    pub(super) async fn plan(&self, pr: &PullRequest) -> Result<()> {
        self.plan_only(pr, &[]).await
    }

    /// [`Self::plan`], of only the affected stacks in `only` when it names any.
    pub(super) async fn plan_only(&self, pr: &PullRequest, only: &[String]) -> Result<()> {
        let number = pr.number as i64;
        if pr.fork && !self.github.allow_fork_prs {
            info!(repo = %self.repo.name, pr = pr.number, "fork pull request: not planned");
            self.skip(
                pr,
                "pull requests from forks are not planned here (allow_fork_prs = false): a plan runs the pull request's code",
            )
            .await?;
            return Ok(());
        }
        let env = super::super::poller::credentials_env(&self.repo)?;
        let base = self
            .mirror
            .fetch_with_env(&self.repo.branch, &env)
            .await
            .with_context(|| format!("repo {}", self.repo.name))?;
        let head = self
            .mirror
            .fetch_pull_head(pr.number, &env)
            .await
            .with_context(|| format!("repo {}: pull request #{}", self.repo.name, pr.number))?;
        if head.to_string() != pr.head_sha {
            // The forge moved on since it answered; the next sync plans the new head.
            warn!(repo = %self.repo.name, pr = pr.number, fetched = %head, listed = %pr.head_sha, "pull request head moved while fetching");
        }
        let path = self.mirror.path.clone();
        let index = self.index.clone();
        let checkout = self.github.checkout;
        let number_u = pr.number;
        let planned = tokio::task::spawn_blocking(move || -> Result<Option<Planned>> {
            let repo = crate::repo::open(&path)?;
            let merge_base = crate::repo::merge_base(&repo, base, head)?;
            let commit = match checkout {
                Checkout::Head => head,
                Checkout::Merge => {
                    let reference = format!("refs/tidemark/pull/{number_u}/merge");
                    let message = format!("Merge pull request #{number_u} into its base");
                    match crate::repo::merge_commit(&repo, base, head, &reference, &message)? {
                        Some(commit) => commit,
                        None => return Ok(None),
                    }
                }
            };
            let mut index = index.blocking_lock();
            let (affected, cyclic) =
                match stacks::affected(&repo, Some(merge_base), head, Some(&mut index)) {
                    Ok(affected) => (affected, Vec::new()),
                    Err(stacks::AffectedError::Cycle { stacks, rest }) => (*rest, stacks),
                    Err(err) => return Err(err.into()),
                };
            // Stacks that are never planned automatically (`autoplan.enabled: false` in
            // atlantis.yaml) are planned only when a command names them.
            let manual: Vec<String> = stacks::discover(&repo, head, Some(&mut index))?
                .stacks
                .into_iter()
                .filter(|s| !s.autoplan)
                .map(|s| s.path)
                .collect();
            Ok(Some(Planned {
                manual,
                merge_base: merge_base.to_string(),
                commit: commit.to_string(),
                affected,
                cyclic,
            }))
        })
        .await
        .context("pull request detection panicked")??;
        let Some(planned) = planned else {
            let reason = format!(
                "the head conflicts with {}: merge or rebase it, then push",
                self.repo.branch
            );
            self.skip(pr, &reason).await?;
            self.status(
                &pr.head_sha,
                &self.github.plan_context,
                StatusState::Failure,
                "merge conflict with the base branch: not planned",
                None,
            )
            .await;
            return Ok(());
        };
        let mut planned = planned;
        if only.is_empty() {
            let manual = std::mem::take(&mut planned.manual);
            planned
                .affected
                .stacks
                .retain(|s| !manual.contains(&s.path));
        } else {
            planned.affected.stacks.retain(|s| only.contains(&s.path));
        }
        for error in &planned.affected.errors {
            warn!(repo = %self.repo.name, pr = pr.number, stack = %error.stack, file = %error.file, "{}", error.message);
        }
        let (runs, failed) = super::super::poller::plan_runs(
            self.repo_id,
            &planned.commit,
            &planned.affected,
            &planned.cyclic,
            Some(number),
        );
        self.store
            .supersede_pr_plans(self.repo_id, number, &planned.commit)
            .await?;
        let ids = self.store.enqueue_indexed(&runs).await?;
        for (index, error) in &failed {
            if let Some(id) = ids.get(*index) {
                self.store.fail_queued(*id, error).await?;
            }
        }
        self.store
            .set_pr_planned(
                self.repo_id,
                number,
                &pr.head_sha,
                Some(&planned.merge_base),
                Some(&planned.commit),
                None,
            )
            .await?;
        info!(repo = %self.repo.name, pr = pr.number, head = %pr.head_sha, commit = %planned.commit, runs = ids.len(), "pull request planned");
        if !ids.is_empty() {
            self.work.notify_waiters();
        }
        Ok(())
    }

    /// Records that a head is not planned, and why (shown in the comment).
    async fn skip(&self, pr: &PullRequest, reason: &str) -> Result<()> {
        let number = pr.number as i64;
        self.store.cancel_pr_runs(self.repo_id, number).await?;
        self.store
            .set_pr_planned(self.repo_id, number, &pr.head_sha, None, None, Some(reason))
            .await?;
        Ok(())
    }

    /// Sets a commit status unless the same one was the last sent; failures are logged (a
    /// status is a courtesy, the runs are recorded).
    pub(super) async fn status(
        &self,
        sha: &str,
        context: &str,
        state: StatusState,
        description: &str,
        target_url: Option<String>,
    ) {
        let status = CommitStatus {
            context: context.to_string(),
            state,
            description: description.to_string(),
            target_url,
        };
        if let Err(err) = self.forge.set_status(sha, &status).await {
            warn!(repo = %self.repo.name, sha, context, error = %err, "setting a commit status failed");
        }
    }
}
