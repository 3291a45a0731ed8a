//! Pull requests Tidemark follows: their last known state, what their plans were made from,
//! the one comment Tidemark keeps on each, and the runs queued for them.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Run, Store, on_pool};
use crate::forge::{PrState, PullRequest};

/// A pull request as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PrRow {
    pub repo_id: i64,
    pub number: i64,
    pub title: String,
    pub author: String,
    /// `open`, `closed` or `merged`.
    pub state: String,
    pub draft: bool,
    pub fork: bool,
    /// JSON list of label names.
    #[serde(skip)]
    pub labels: String,
    pub head_sha: String,
    pub base_ref: String,
    pub base_sha: String,
    pub planned_head: Option<String>,
    pub merge_base: Option<String>,
    pub planned_commit: Option<String>,
    pub skipped: Option<String>,
    pub merge_commit_sha: Option<String>,
    /// JSON list of `{login, permission, commit}`.
    #[serde(skip)]
    pub approvals: String,
    /// JSON object: stack -> what the merge did.
    #[serde(skip)]
    pub merge_result: String,
    pub merge_handled_at: Option<DateTime<Utc>>,
    pub comment_id: Option<i64>,
    #[serde(skip)]
    pub comment_sha256: Option<String>,
    #[serde(skip)]
    pub statuses: String,
    pub updated_at: DateTime<Utc>,
}

impl PrRow {
    pub fn labels(&self) -> Vec<String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
}

fn state_text(state: PrState) -> &'static str {
    match state {
        PrState::Open => "open",
        PrState::Closed => "closed",
        PrState::Merged => "merged",
    }
}

const PR_COLUMNS: &str = "repo_id, number, title, author, state, draft, fork, labels, head_sha, base_ref, \
     base_sha, planned_head, merge_base, planned_commit, skipped, merge_commit_sha, approvals, merge_result, merge_handled_at, \
     comment_id, comment_sha256, statuses, updated_at";

impl Store {
    /// Records what the forge says about a pull request (its plans and comment are kept).
    pub async fn upsert_pull_request(&self, repo_id: i64, pr: &PullRequest) -> Result<()> {
        let labels = serde_json::to_string(&pr.labels)?;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO pull_requests (repo_id, number, title, author, state, draft, fork, labels, \
                 head_sha, base_ref, base_sha, merge_commit_sha, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (repo_id, number) DO UPDATE SET title = excluded.title, \
                 author = excluded.author, state = excluded.state, draft = excluded.draft, \
                 fork = excluded.fork, labels = excluded.labels, head_sha = excluded.head_sha, \
                 base_ref = excluded.base_ref, base_sha = excluded.base_sha, \
                 merge_commit_sha = COALESCE(excluded.merge_commit_sha, pull_requests.merge_commit_sha), \
                 updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(pr.number as i64)
            .bind(&pr.title)
            .bind(&pr.author)
            .bind(state_text(pr.state))
            .bind(pr.draft)
            .bind(pr.fork)
            .bind(&labels)
            .bind(&pr.head_sha)
            .bind(&pr.base_ref)
            .bind(&pr.base_sha)
            .bind(&pr.merge_commit_sha)
            .bind(Utc::now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Pull requests, newest number first; `repo` and `state` filter when given.
    pub async fn pull_requests(
        &self,
        repo: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<(String, PrRow)>> {
        let sql = format!(
            "SELECT p.name, {} FROM pull_requests r JOIN repos p ON p.id = r.repo_id \
             WHERE ($1 IS NULL OR p.name = $1) AND ($2 IS NULL OR r.state = $2) \
             ORDER BY p.name, r.number DESC",
            PR_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows: Vec<PrNamed> = on_pool!(self, pool => {
            sqlx::query_as::<_, PrNamed>(sqlx::AssertSqlSafe(sql))
                .bind(repo)
                .bind(state)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|r| (r.name, r.pr)).collect())
    }

    /// One pull request by repository id and number.
    pub async fn pull_request(&self, repo_id: i64, number: i64) -> Result<Option<PrRow>> {
        let sql =
            format!("SELECT {PR_COLUMNS} FROM pull_requests WHERE repo_id = $1 AND number = $2");
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, PrRow>(sqlx::AssertSqlSafe(sql))
                .bind(repo_id)
                .bind(number)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records what a pull request's plans are made from (or why its head was not planned).
    pub async fn set_pr_planned(
        &self,
        repo_id: i64,
        number: i64,
        head: &str,
        merge_base: Option<&str>,
        planned_commit: Option<&str>,
        skipped: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE pull_requests SET planned_head = $1, merge_base = $2, planned_commit = $3, \
                 skipped = $4, updated_at = $5 WHERE repo_id = $6 AND number = $7",
            )
            .bind(head)
            .bind(merge_base)
            .bind(planned_commit)
            .bind(skipped)
            .bind(Utc::now())
            .bind(repo_id)
            .bind(number)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Supersedes a pull request's plans still queued for another commit than `keep` (a push
    /// replaced them); returns how many.
    pub async fn supersede_pr_plans(&self, repo_id: i64, number: i64, keep: &str) -> Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET status = 'superseded', finished_at = $1, error = $4 \
                 WHERE repo_id = $2 AND pr_number = $3 AND kind = 'plan' AND status = 'queued' \
                 AND commit_sha <> $5 AND reviewed_run_id IS NULL",
            )
            .bind(Utc::now())
            .bind(repo_id)
            .bind(number)
            .bind(format!("superseded by a push to pull request #{number}"))
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Cancels a closed pull request's queued runs; returns how many.
    pub async fn cancel_pr_runs(&self, repo_id: i64, number: i64) -> Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE runs SET status = 'cancelled', finished_at = $1, \
                 error = $4 WHERE repo_id = $2 AND pr_number = $3 AND kind = 'plan' AND status = 'queued'",
            )
            .bind(Utc::now())
            .bind(repo_id)
            .bind(number)
            .bind(format!("pull request #{number} was closed"))
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Every run queued for a pull request, oldest first.
    pub async fn pr_runs(&self, repo_id: i64, number: i64) -> Result<Vec<Run>> {
        let ids: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM runs WHERE repo_id = $1 AND pr_number = $2 ORDER BY id")
                .bind(repo_id)
                .bind(number)
                .fetch_all(pool)
                .await?
        });
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.push(self.run(id).await?);
        }
        Ok(runs)
    }

    /// Remembers the comment Tidemark keeps on the pull request and the digest of its body.
    pub async fn set_pr_comment(
        &self,
        repo_id: i64,
        number: i64,
        comment_id: i64,
        sha256: &str,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE pull_requests SET comment_id = $1, comment_sha256 = $2 WHERE repo_id = $3 AND number = $4")
                .bind(comment_id)
                .bind(sha256)
                .bind(repo_id)
                .bind(number)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records the approvals that count (JSON) as last read from the forge.
    pub async fn set_pr_approvals(&self, repo_id: i64, number: i64, approvals: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE pull_requests SET approvals = $1 WHERE repo_id = $2 AND number = $3")
                .bind(approvals)
                .bind(repo_id)
                .bind(number)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records what the merge did per stack (JSON object).
    pub async fn set_merge_result(&self, repo_id: i64, number: i64, result: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE pull_requests SET merge_result = $1 WHERE repo_id = $2 AND number = $3")
                .bind(result)
                .bind(repo_id)
                .bind(number)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Claims the posting of a pull request's first comment, so two instances never both post
    /// one: true for one caller. A claim older than a minute (its instance died before it
    /// recorded the comment) may be taken over.
    pub async fn claim_pr_comment(&self, repo_id: i64, number: i64) -> Result<bool> {
        let now = Utc::now();
        let stamp = |t: DateTime<Utc>| {
            format!(
                "creating:{}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        };
        let stale = stamp(now - chrono::Duration::seconds(60));
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE pull_requests SET comment_sha256 = $1 WHERE repo_id = $2 AND number = $3 \
                 AND comment_id IS NULL AND (comment_sha256 IS NULL OR comment_sha256 NOT LIKE 'creating:%' \
                 OR comment_sha256 < $4)",
            )
            .bind(stamp(now))
            .bind(repo_id)
            .bind(number)
            .bind(stale)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// Gives up a comment claim whose post failed.
    pub async fn release_pr_comment(&self, repo_id: i64, number: i64) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE pull_requests SET comment_sha256 = NULL WHERE repo_id = $1 AND number = $2 \
                 AND comment_id IS NULL AND comment_sha256 LIKE 'creating:%'",
            )
            .bind(repo_id)
            .bind(number)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Remembers the statuses last sent (`context=state:sha` lines).
    pub async fn set_pr_statuses(&self, repo_id: i64, number: i64, statuses: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE pull_requests SET statuses = $1 WHERE repo_id = $2 AND number = $3")
                .bind(statuses)
                .bind(repo_id)
                .bind(number)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Claims the handling of a merged pull request: true for exactly one caller, across
    /// instances.
    pub async fn claim_merge(&self, repo_id: i64, number: i64) -> Result<bool> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE pull_requests SET merge_handled_at = $1 WHERE repo_id = $2 AND number = $3 \
                 AND merge_handled_at IS NULL AND state = 'merged'",
            )
            .bind(Utc::now())
            .bind(repo_id)
            .bind(number)
            .execute(pool)
            .await?
            .rows_affected()
                == 1
        }))
    }

    /// The stacks a merge commit's pull request already applies (or re-plans for its review):
    /// the branch poller does not plan them a second time.
    pub async fn merge_handled_stacks(
        &self,
        repo_id: i64,
        merge_commit: &str,
    ) -> Result<Vec<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT r.stack_path FROM runs r JOIN pull_requests p ON p.repo_id = r.repo_id \
                 AND p.number = r.pr_number WHERE p.repo_id = $1 AND p.merge_commit_sha = $2 \
                 AND p.merge_handled_at IS NOT NULL AND (r.kind = 'apply' OR r.reviewed_run_id IS NOT NULL) \
                 ORDER BY r.stack_path",
            )
            .bind(repo_id)
            .bind(merge_commit)
            .fetch_all(pool)
            .await?
        }))
    }
}

#[derive(sqlx::FromRow)]
struct PrNamed {
    name: String,
    #[sqlx(flatten)]
    pr: PrRow,
}
