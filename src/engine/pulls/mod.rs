//! Pull requests: one task per repository with a forge. It finds open pull requests by polling
//! (conditional requests, so an unchanged list costs nothing) and on webhook nudges, plans the
//! stacks each new head affects, keeps one comment and the commit statuses current as those
//! runs finish, and, when a pull request merges, applies exactly the plans that were reviewed.
//!
//! A webhook only nudges: what is planned is read again from git and the forge's API.

mod command;
mod merge;
mod plan;
mod report;
mod view;

pub use view::{PrStackView, PrView, views};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{GitHubConfig, RepoConfig};
use crate::forge::{Forge, ForgeError, PrState, PullRequest};
use crate::repo::Mirror;
use crate::stacks::Index;
use crate::store::{PrRow, Store};

/// Asks a repository's pull-request task to bring a pull request's comment and statuses up to
/// date (a run of it finished).
pub type PrRefresh = mpsc::UnboundedSender<i64>;

/// The pull requests of one repository.
pub struct PullRequests {
    pub repo: RepoConfig,
    pub github: GitHubConfig,
    pub repo_id: i64,
    pub forge: Arc<dyn Forge>,
    pub store: Store,
    pub mirror: Mirror,
    pub index: Arc<Mutex<Index>>,
    /// Woken after runs are queued.
    pub work: Arc<Notify>,
    /// Woken by webhooks: list the pull requests now.
    pub nudge: Arc<Notify>,
    /// Links in comments and statuses point here.
    pub base_url: String,
    /// The open-list ETag of the last answer; also serialises syncs.
    sync: Mutex<Option<String>>,
}

impl PullRequests {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: RepoConfig,
        github: GitHubConfig,
        repo_id: i64,
        forge: Arc<dyn Forge>,
        store: Store,
        mirror: Mirror,
        index: Arc<Mutex<Index>>,
        work: Arc<Notify>,
        base_url: String,
    ) -> PullRequests {
        PullRequests {
            repo,
            github,
            repo_id,
            forge,
            store,
            mirror,
            index,
            work,
            nudge: Arc::new(Notify::new()),
            base_url,
            sync: Mutex::new(None),
        }
    }

    /// Runs until shutdown: syncs every `pr_poll_interval` and on nudges, and refreshes a pull
    /// request's comment when `refresh` names it. A rate limit waits as long as the forge asks.
    pub async fn run(
        self: Arc<Self>,
        mut refresh: mpsc::UnboundedReceiver<i64>,
        shutdown: CancellationToken,
    ) {
        let interval = self.github.pr_poll_interval;
        let mut wait = Duration::ZERO;
        loop {
            let sleep = interval.map(|i| i.max(wait));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudge.notified() => {}
                _ = async {
                    match sleep {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
                Some(number) = refresh.recv() => {
                    let mut numbers: HashSet<i64> = HashSet::from([number]);
                    while let Ok(more) = refresh.try_recv() {
                        numbers.insert(more);
                    }
                    for number in numbers {
                        if let Err(err) = self.refresh(number).await {
                            warn!(repo = %self.repo.name, pr = number, error = %format!("{err:#}"), "updating the pull request failed");
                        }
                    }
                    continue;
                }
            }
            wait = match self.sync().await {
                Ok(()) => Duration::ZERO,
                Err(err) => {
                    let retry = match err.downcast_ref::<ForgeError>() {
                        Some(ForgeError::RateLimited { retry_after }) => *retry_after,
                        _ => Duration::ZERO,
                    };
                    warn!(repo = %self.repo.name, error = %format!("{err:#}"), "pull request sync failed");
                    retry
                }
            };
        }
    }

    /// One sync: list the open pull requests (unchanged: nothing to do), plan new heads, and
    /// handle the ones that closed or merged since the last sync.
    pub async fn sync(&self) -> Result<()> {
        let mut etag = self.sync.lock().await;
        let listed = self
            .forge
            .open_pull_requests(etag.as_deref())
            .await
            .with_context(|| format!("repo {}: listing open pull requests", self.repo.name))?;
        let open = match listed {
            crate::forge::Conditional::Unchanged => {
                self.finish_merges().await?;
                return Ok(());
            }
            crate::forge::Conditional::Changed { value, etag: tag } => {
                *etag = tag;
                value
            }
        };
        let mut seen = HashSet::new();
        for pr in open.iter().filter(|pr| pr.base_ref == self.repo.branch) {
            seen.insert(pr.number as i64);
            if let Err(err) = self.open_pr(pr).await {
                warn!(repo = %self.repo.name, pr = pr.number, error = %format!("{err:#}"), "planning the pull request failed");
            }
        }
        // Recorded as open, no longer listed (or retargeted): closed or merged since.
        for (_, row) in self
            .store
            .pull_requests(Some(&self.repo.name), Some("open"))
            .await?
        {
            if seen.contains(&row.number) {
                continue;
            }
            let pr = self
                .forge
                .pull_request(row.number as u64)
                .await
                .with_context(|| format!("pull request #{}", row.number))?;
            self.store.upsert_pull_request(self.repo_id, &pr).await?;
            match pr.state {
                PrState::Merged if pr.base_ref == self.repo.branch => self.merged(&pr).await?,
                PrState::Open => {
                    // Retargeted to a branch Tidemark does not track.
                    self.store.cancel_pr_runs(self.repo_id, row.number).await?;
                }
                _ => {
                    let cancelled = self.store.cancel_pr_runs(self.repo_id, row.number).await?;
                    info!(repo = %self.repo.name, pr = row.number, cancelled, "pull request closed");
                    self.refresh(row.number).await?;
                }
            }
        }
        self.finish_merges().await
    }

    /// An open pull request: record it, read its approvals, and plan its head if it is new.
    async fn open_pr(&self, pr: &PullRequest) -> Result<()> {
        let before = self
            .store
            .pull_request(self.repo_id, pr.number as i64)
            .await?;
        self.store.upsert_pull_request(self.repo_id, pr).await?;
        self.read_approvals(pr.number as i64, &pr.head_sha).await?;
        let planned = before
            .as_ref()
            .and_then(|row| row.planned_head.as_deref())
            .is_some_and(|head| head == pr.head_sha);
        if !planned {
            self.plan(pr).await?;
        }
        self.refresh(pr.number as i64).await
    }

    /// Reads the reviews and the reviewers' permissions, and records the approvals that count
    /// for `head`.
    async fn read_approvals(&self, number: i64, head: &str) -> Result<Vec<String>> {
        let reviews = self.forge.reviews(number as u64).await?;
        let mut permissions = std::collections::HashMap::new();
        for user in reviews
            .iter()
            .map(|r| r.user.clone())
            .collect::<HashSet<_>>()
        {
            let permission = self.forge.permission(&user).await?;
            permissions.insert(user, permission);
        }
        let approvers = crate::review::approvers(&reviews, &permissions, head);
        let approvals: Vec<serde_json::Value> = approvers
            .iter()
            .map(|(login, permission)| {
                serde_json::json!({ "login": login, "permission": permission, "commit": head })
            })
            .collect();
        self.store
            .set_pr_approvals(self.repo_id, number, &serde_json::to_string(&approvals)?)
            .await?;
        Ok(approvers.into_iter().map(|(login, _)| login).collect())
    }

    /// Before the branch plans a new head: any open pull request whose planned head the new
    /// head contains was merged (or its branch pushed to the base). Its state is read from the
    /// forge at once, not from a list that may be cached, so its merge is handled (and its
    /// stacks left out of the branch's plans) before the branch plans the merge commit.
    pub async fn merged_into(&self, head: &str) -> Result<()> {
        let open = self
            .store
            .pull_requests(Some(&self.repo.name), Some("open"))
            .await?;
        let path = self.mirror.path.clone();
        let head = head.to_string();
        let planned: Vec<(i64, String)> = open
            .into_iter()
            .filter_map(|(_, row)| Some((row.number, row.planned_head?)))
            .collect();
        let contained = tokio::task::spawn_blocking(move || -> Result<Vec<i64>> {
            let repo = crate::repo::open(&path)?;
            let head = git2::Oid::from_str(&head)?;
            Ok(planned
                .into_iter()
                .filter(|(_, planned)| {
                    git2::Oid::from_str(planned).is_ok_and(|p| {
                        p == head || repo.graph_descendant_of(head, p).unwrap_or(false)
                    })
                })
                .map(|(number, _)| number)
                .collect())
        })
        .await
        .context("reading the branch history panicked")??;
        for number in contained {
            let pr = self.forge.pull_request(number as u64).await?;
            self.store.upsert_pull_request(self.repo_id, &pr).await?;
            if pr.state == PrState::Merged {
                self.merged(&pr).await?;
            }
        }
        Ok(())
    }

    /// Merged pull requests whose merge was recorded but not handled (an instance died in
    /// between): handle them now.
    async fn finish_merges(&self) -> Result<()> {
        for (_, row) in self
            .store
            .pull_requests(Some(&self.repo.name), Some("merged"))
            .await?
        {
            if row.merge_handled_at.is_none() && row.planned_commit.is_some() {
                let pr = self.forge.pull_request(row.number as u64).await?;
                self.merged(&pr).await?;
            }
        }
        Ok(())
    }

    async fn row(&self, number: i64) -> Result<PrRow> {
        self.store
            .pull_request(self.repo_id, number)
            .await?
            .with_context(|| format!("pull request #{number} is not recorded"))
    }
}
