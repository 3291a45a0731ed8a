//! What the apply gate reads and writes: policy verdicts per plan run, approvals and overrides
//! bound to a plan digest, the gate's decisions, stack settings, and applies queued behind
//! their plan.

use std::collections::HashMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::BeginWrite;
use super::runs::insert_run;
use super::{NewRun, RunKind, Store, on_pool};
use crate::gate::{Approval, ApprovalKind, Decision};
use crate::policy::{Blocking, Verdict};

/// A stack's settings the gate and the policy input read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackSettings {
    pub name: String,
    pub auto_apply: bool,
    pub tags: Vec<String>,
    /// `none`, `plan` or `apply`: what a drift check's plan may become.
    pub drift_remediation: String,
    /// The environment of an instance.
    pub environment: Option<String>,
}

impl Store {
    /// Stores the verdict about a plan run's stored plan (replacing an earlier one).
    pub async fn save_verdict(&self, run_id: i64, digest: &str, verdict: &Verdict) -> Result<()> {
        let blocking = match verdict.blocking {
            Blocking::None => "none",
            Blocking::Soft => "soft",
            Blocking::Hard => "hard",
        };
        let json = serde_json::to_string(verdict)?;
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM verdicts WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO verdicts (run_id, plan_digest, passed, blocking, verdict, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(digest)
            .bind(verdict.passed)
            .bind(blocking)
            .bind(json)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The verdict stored for a plan run, with the digest of the plan it judged.
    pub async fn verdict(&self, run_id: i64) -> Result<Option<(String, Verdict)>> {
        let row: Option<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT plan_digest, verdict FROM verdicts WHERE run_id = $1")
                .bind(run_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(digest, json)| {
            let verdict = serde_json::from_str(&json)
                .with_context(|| format!("reading the stored verdict of run {run_id}"))?;
            Ok((digest, verdict))
        })
        .transpose()
    }

    /// The stored verdicts of many plan runs in one query, by run id (runs without one are
    /// left out).
    pub async fn verdicts(&self, run_ids: &[i64]) -> Result<HashMap<i64, Verdict>> {
        let mut found = HashMap::with_capacity(run_ids.len());
        // Well under both databases' limits on bound parameters.
        for chunk in run_ids.chunks(1000) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT run_id, verdict FROM verdicts WHERE run_id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<(i64, String)> = on_pool!(self, pool => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await?
            });
            for (run_id, json) in rows {
                let verdict = serde_json::from_str(&json)
                    .with_context(|| format!("reading the stored verdict of run {run_id}"))?;
                found.insert(run_id, verdict);
            }
        }
        Ok(found)
    }

    /// Records an approval or an override of one plan run's plan (by digest).
    pub async fn add_approval(
        &self,
        run_id: i64,
        digest: &str,
        kind: ApprovalKind,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO approvals (run_id, plan_digest, kind, actor, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(digest)
            .bind(kind.as_str())
            .bind(actor)
            .bind(reason)
            .bind(Utc::now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Approvals and overrides of a plan run, oldest first.
    pub async fn approvals(&self, run_id: i64) -> Result<Vec<Approval>> {
        type Row = (String, String, String, Option<String>, DateTime<Utc>);
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT kind, plan_digest, actor, reason, created_at FROM approvals \
                 WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(kind, plan_digest, actor, reason, created_at)| Approval {
                kind: if kind == "override" {
                    ApprovalKind::Override
                } else {
                    ApprovalKind::Approve
                },
                plan_digest,
                actor,
                reason,
                created_at,
            })
            .collect())
    }

    /// Records the gate's decision on a run.
    pub async fn set_gate(&self, run_id: i64, decision: &Decision) -> Result<()> {
        let json = serde_json::to_string(decision)?;
        on_pool!(self, pool => {
            sqlx::query("UPDATE runs SET gate = $1 WHERE id = $2")
                .bind(json)
                .bind(run_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The newest plan run of the stack queued after `run_id`: (id, commit).
    pub async fn newer_plan(&self, run_id: i64) -> Result<Option<(i64, String)>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT n.id, n.commit_sha FROM runs n JOIN runs r ON r.repo_id = n.repo_id \
                 AND r.stack_path = n.stack_path WHERE r.id = $1 AND n.kind = 'plan' AND n.id > r.id \
                 AND (n.pr_number IS NULL OR n.pr_number = r.pr_number) \
                 ORDER BY n.id DESC LIMIT 1",
            )
            .bind(run_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Whether the commit was seen on the repository's tracked branch.
    pub async fn on_tracked_branch(&self, repo: &str, commit: &str) -> Result<bool> {
        let found: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT c.id FROM commits c JOIN repos p ON p.id = c.repo_id \
                 WHERE p.name = $1 AND c.sha = $2 AND c.branch = p.branch LIMIT 1",
            )
            .bind(repo)
            .bind(commit)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// The stack's settings as last discovered; defaults when the stack is not recorded.
    pub async fn stack_settings(&self, repo: &str, stack: &str) -> Result<StackSettings> {
        let row: Option<(String, bool, String, String, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s.name, s.auto_apply, s.tags, s.drift_remediation, s.environment FROM stacks s \
                 JOIN repos p ON p.id = s.repo_id \
                 WHERE p.name = $1 AND s.path = $2",
            )
            .bind(repo)
            .bind(stack)
            .fetch_optional(pool)
            .await?
        });
        Ok(match row {
            Some((name, auto_apply, tags, drift_remediation, environment)) => StackSettings {
                name,
                auto_apply,
                tags: serde_json::from_str(&tags).unwrap_or_default(),
                drift_remediation,
                environment,
            },
            None => StackSettings {
                drift_remediation: "none".into(),
                ..StackSettings::default()
            },
        })
    }

    /// The newest state serial recorded for the stack, if any.
    pub async fn latest_state_serial(&self, repo: &str, stack: &str) -> Result<Option<i64>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT MAX(v.serial) FROM state_versions v JOIN repos p ON p.id = v.repo_id \
                 WHERE p.name = $1 AND v.stack_path = $2",
            )
            .bind(repo)
            .bind(stack)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The apply run that applied the plan run's plan, if one succeeded.
    pub async fn applied_by(&self, plan_run: i64) -> Result<Option<i64>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM runs WHERE plan_run_id = $1 AND kind = 'apply' \
                 AND status = 'succeeded' ORDER BY id LIMIT 1",
            )
            .bind(plan_run)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Queues an apply of a plan run. The runs waiting for the plan run (its downstream plans)
    /// wait for the apply too, so they are planned against the applied outputs. Call this while
    /// the plan run is still running, or the downstream plans may start first. Returns the
    /// apply's id, or the live apply's id when one exists already.
    pub async fn enqueue_apply(&self, plan: &super::Run, reason: &str) -> Result<i64> {
        let now = Utc::now();
        let run = NewRun {
            repo_id: 0,
            stack: plan.stack.clone(),
            commit: plan.commit.clone(),
            kind: RunKind::Apply,
            reason: Some(reason.to_string()),
            after: Vec::new(),
            plan_run: Some(plan.id),
            transitive: false,
            pr_number: plan.pr_number,
            reviewed_run: None,
        };
        let id = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE plan_run_id = $1 AND kind = 'apply' \
                 AND status IN ('queued', 'running') ORDER BY id LIMIT 1",
            )
            .bind(plan.id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(live) = live {
                live
            } else {
                let repo_id: i64 = sqlx::query_scalar("SELECT repo_id FROM runs WHERE id = $1")
                    .bind(plan.id)
                    .fetch_one(&mut *tx)
                    .await?;
                let run = NewRun { repo_id, ..run };
                let id = insert_run!(tx, &run, now);
                sqlx::query(
                    "INSERT INTO run_deps (run_id, upstream_id) SELECT d.run_id, $1 FROM run_deps d \
                     JOIN runs w ON w.id = d.run_id WHERE d.upstream_id = $2 AND w.status = 'queued'",
                )
                .bind(id)
                .bind(plan.id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                id
            }
        });
        Ok(id)
    }

    /// Queues a plan of the stack at `commit` unless a live plan of it at that commit exists.
    /// Returns the new run's id, or `None` when one was live already.
    pub async fn enqueue_replan(
        &self,
        repo: &str,
        stack: &str,
        commit: &str,
        reason: &str,
        pr_number: Option<i64>,
    ) -> Result<Option<i64>> {
        let now = Utc::now();
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let repo_id: i64 = sqlx::query_scalar("SELECT id FROM repos WHERE name = $1")
                .bind(repo)
                .fetch_one(&mut *tx)
                .await
                .with_context(|| format!("repo {repo} is not recorded"))?;
            let live: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM runs WHERE repo_id = $1 AND stack_path = $2 AND commit_sha = $3 \
                 AND kind = 'plan' AND status IN ('queued', 'running') \
                 AND pr_number IS NOT DISTINCT FROM $4 LIMIT 1",
            )
            .bind(repo_id)
            .bind(stack)
            .bind(commit)
            .bind(pr_number)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_some() {
                None
            } else {
                let run = NewRun {
                    repo_id,
                    stack: stack.to_string(),
                    commit: commit.to_string(),
                    kind: RunKind::Plan,
                    reason: Some(reason.to_string()),
                    after: Vec::new(),
                    plan_run: None,
                    transitive: false,
                    pr_number,
                    reviewed_run: None,
                };
                let id = insert_run!(tx, &run, now);
                tx.commit().await?;
                Some(id)
            }
        }))
    }

    /// The upstream runs a run waits for: (kind, status, summary JSON).
    pub async fn upstream_runs(&self, run_id: i64) -> Result<Vec<super::Run>> {
        let ids: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT upstream_id FROM run_deps WHERE run_id = $1 ORDER BY upstream_id")
                .bind(run_id)
                .fetch_all(pool)
                .await?
        });
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.push(self.run(id).await?);
        }
        Ok(runs)
    }
}
