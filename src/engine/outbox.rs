//! The outbox sender: delivers queued notifications to Slack. A message is claimed with a lease
//! (one instance sends it), posted with the notifier's retries, and its outcome stored: sent,
//! failed for good, or pending until its next attempt. Messages survive restarts because they
//! are rows, not tasks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::notify::{DeliveryStatus, OutboxPolicy, SlackNotifier};
use crate::store::Store;

/// How long a claimed message is this sender's. Longer than the longest send the default
/// retry policy allows (four attempts of at most ten seconds, waits of at most thirty).
pub const OUTBOX_LEASE: Duration = Duration::from_secs(300);

/// Delivers outbox messages through one Slack webhook.
pub struct OutboxSender {
    pub store: Store,
    pub notifier: SlackNotifier,
    pub policy: OutboxPolicy,
    /// The claimer's name (instance-unique).
    pub name: String,
    /// Woken when a message is queued.
    pub wake: Arc<Notify>,
    pub lease: Duration,
}

impl OutboxSender {
    /// Claims one due message, sends it and stores the outcome. Returns false when nothing
    /// was due.
    pub async fn step(&self) -> Result<bool> {
        let Some(mut delivery) = self
            .store
            .outbox_claim(&self.name, Utc::now(), self.lease)
            .await?
        else {
            return Ok(false);
        };
        let id = delivery.id.unwrap_or_default();
        self.notifier.deliver(&mut delivery, &self.policy).await;
        crate::telemetry::notification(
            "slack",
            match delivery.status {
                DeliveryStatus::Delivered => "sent",
                DeliveryStatus::Pending => "retry",
                DeliveryStatus::Dead => "failed",
            },
        );
        match delivery.status {
            DeliveryStatus::Delivered => info!(message = id, "slack message sent"),
            DeliveryStatus::Pending => warn!(
                message = id,
                next_attempt = %delivery.next_attempt_at,
                error = delivery.last_error.as_deref().unwrap_or(""),
                "slack message not delivered; it stays in the outbox"
            ),
            DeliveryStatus::Dead => error!(
                message = id,
                error = delivery.last_error.as_deref().unwrap_or(""),
                "slack message given up"
            ),
        }
        if !self.store.outbox_record(&delivery, &self.name).await? {
            warn!(
                message = id,
                "outbox claim expired during the send; another sender owns the message now"
            );
        }
        Ok(true)
    }

    /// Sends due messages until shutdown, sleeping until the next one is due or a new one is
    /// queued. A send in progress finishes before shutdown (it is bounded by the retry
    /// policy), so a delivered message is not left claimed and sent again.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let worked = match self.step().await {
                Ok(worked) => worked,
                Err(err) => {
                    warn!(error = %format!("{err:#}"), "outbox step failed");
                    false
                }
            };
            if worked {
                continue;
            }
            let wait = match self.store.outbox_next_due().await {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .clamp(Duration::from_millis(100), Duration::from_secs(60)),
                _ => Duration::from_secs(60),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
