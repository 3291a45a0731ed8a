//! Controls that span stacks: the global apply freeze, and the webhook deliveries already
//! handled (so a replayed delivery is ignored).

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, on_pool};

/// The global apply freeze while it holds: no apply starts, queued applies wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Freeze {
    pub reason: String,
    pub actor: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Freezes every apply. Returns false when a freeze holds already (it and its reason stay).
    pub async fn freeze(&self, reason: &str, actor: &str) -> Result<bool> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO apply_freeze (id, reason, actor, created_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(reason)
            .bind(actor)
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Lifts the freeze. Returns false when there was none.
    pub async fn thaw(&self) -> Result<bool> {
        let rows = on_pool!(self, pool => {
            sqlx::query("DELETE FROM apply_freeze").execute(pool).await?.rows_affected()
        });
        Ok(rows > 0)
    }

    /// The freeze, while one holds.
    pub async fn frozen(&self) -> Result<Option<Freeze>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, Freeze>("SELECT reason, actor, created_at FROM apply_freeze")
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records a webhook delivery id; false when it was recorded before (a replay).
    pub async fn first_delivery(&self, delivery_id: &str) -> Result<bool> {
        let rows = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES ($1, $2) \
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(delivery_id)
            .bind(Utc::now())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }
}
