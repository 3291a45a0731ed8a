//! The audit log: every request that acted over HTTP, who made it and how it ended.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, on_pool};

/// One audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub remote: String,
}

impl Store {
    pub async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        outcome: &str,
        remote: &str,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, outcome, remote) VALUES ($1, $2, $3, $4, $5)")
                .bind(Utc::now())
                .bind(actor)
                .bind(action)
                .bind(outcome)
                .bind(remote)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The newest `limit` records, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        self.audit_page(limit, None).await
    }

    /// The newest `limit` records older than record `before` (all, without it), newest first.
    pub async fn audit_page(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, AuditRecord>(
                "SELECT id, at, actor, action, outcome, remote FROM audit_log \
                 WHERE ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .bind(before)
            .fetch_all(pool)
            .await?
        }))
    }
}
