//! Delivering Slack messages to an incoming webhook: POST JSON, retry 429 and 5xx with backoff
//! honouring `Retry-After`, and a storage-agnostic [`Delivery`] the engine keeps in its outbox
//! so a message that still fails is retried later rather than lost.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How one [`SlackNotifier::send`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// HTTP requests per send, the first included.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub base_delay: Duration,
    /// The longest wait between two attempts. A `Retry-After` longer than this ends the send,
    /// and the delivery's next attempt honours it instead.
    pub max_delay: Duration,
    /// How long one request may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why a notifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("environment variable {var} (the Slack webhook URL) is not set")]
    MissingEnv { var: String },
    #[error("{source_name} does not hold an http(s) URL")]
    InvalidUrl { source_name: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// A message that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// HTTP requests it took.
    pub attempts: u32,
}

/// A message that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// Slack refused the message itself (400 `invalid_payload`, 403, 404 `no_service`, 410
    /// `channel_is_archived`...): sending it again will not help.
    #[error("slack rejected the message: {status} {body}")]
    Rejected {
        status: u16,
        body: String,
        attempts: u32,
    },
    /// Every attempt hit a 429, a 5xx or a network error; worth trying again later.
    #[error("slack delivery failed after {attempts} attempts: {last_error}")]
    Exhausted {
        attempts: u32,
        last_error: String,
        /// The last `Retry-After`, when Slack sent one.
        retry_after: Option<Duration>,
    },
}

impl SendFailure {
    /// HTTP requests made.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Rejected { attempts, .. } | Self::Exhausted { attempts, .. } => *attempts,
        }
    }
}

/// The webhook URL holds a token: its `Debug` never shows it.
#[derive(Clone)]
struct WebhookUrl(reqwest::Url);

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebhookUrl({}://{}/..)",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )
    }
}

/// Posts messages to one Slack incoming webhook.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    client: reqwest::Client,
    url: WebhookUrl,
    policy: RetryPolicy,
}

impl SlackNotifier {
    /// A notifier for the webhook URL in the environment variable `var` (the server config
    /// names the variable; the URL itself never appears in config, logs or errors).
    pub fn from_env(var: &str) -> Result<Self, NotifierError> {
        let value = std::env::var(var).unwrap_or_default();
        if value.trim().is_empty() {
            return Err(NotifierError::MissingEnv {
                var: var.to_string(),
            });
        }
        Self::new(value.trim(), RetryPolicy::default()).map_err(|e| match e {
            NotifierError::InvalidUrl { .. } => NotifierError::InvalidUrl {
                source_name: format!("environment variable {var}"),
            },
            other => other,
        })
    }

    /// A notifier for `url` (http or https).
    pub fn new(url: &str, policy: RetryPolicy) -> Result<Self, NotifierError> {
        let invalid = || NotifierError::InvalidUrl {
            source_name: "the Slack webhook URL".to_string(),
        };
        let url = reqwest::Url::parse(url).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid());
        }
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifierError::Client(e.without_url().to_string()))?;
        Ok(Self {
            client,
            url: WebhookUrl(url),
            policy,
        })
    }

    /// Posts `payload` (a rendered message), retrying a 429 after its `Retry-After` and a 5xx
    /// or network error after an exponential backoff, up to the policy's attempts.
    pub async fn send(&self, payload: &Value) -> Result<Sent, SendFailure> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (error, retry_after) = match self.attempt(payload).await {
                Attempt::Ok => return Ok(Sent { attempts }),
                Attempt::Rejected { status, body } => {
                    return Err(SendFailure::Rejected {
                        status,
                        body,
                        attempts,
                    });
                }
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            let wait = retry_after.unwrap_or_else(|| self.policy.backoff(attempts));
            if attempts >= self.policy.max_attempts || wait > self.policy.max_delay {
                tracing::warn!(attempts, %error, "slack delivery failed; it stays in the outbox");
                return Err(SendFailure::Exhausted {
                    attempts,
                    last_error: error,
                    retry_after,
                });
            }
            tracing::debug!(attempts, %error, ?wait, "slack delivery will be retried");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, payload: &Value) -> Attempt {
        let response = match self
            .client
            .post(self.url.0.clone())
            .json(payload)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Retry {
                    error: error_chain(e),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        if status.is_success() {
            Attempt::Ok
        } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retry {
                error: format!("{} {body}", status.as_u16()),
                retry_after,
            }
        } else {
            Attempt::Rejected {
                status: status.as_u16(),
                body,
            }
        }
    }

    /// Makes one send of an outbox delivery and records the outcome on it (as of the wall
    /// clock when the send ends). The engine stores the delivery afterwards, whatever it says.
    pub async fn deliver(&self, delivery: &mut Delivery, policy: &OutboxPolicy) {
        let result = self.send(&delivery.payload).await;
        delivery.record(&result, Utc::now(), policy);
    }
}

/// A reqwest error with its causes ("error sending request: client error (Connect): tcp
/// connect error: Connection refused"), without the URL: it holds the webhook's token.
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

enum Attempt {
    Ok,
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Rejected {
        status: u16,
        body: String,
    },
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet accepted; try again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up: Slack rejected it, or it kept failing past the outbox's patience.
    Dead,
}

/// How the outbox spaces out sends of a delivery that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPolicy {
    /// The wait after the first failed send; it doubles after each further one.
    pub base: Duration,
    pub max: Duration,
    /// A delivery still failing this long after it was created is given up.
    pub give_up_after: Duration,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(48 * 3600),
        }
    }
}

/// One message in the outbox: what the engine stores so a failed delivery is retried, not
/// lost. The store owns `id`; everything else is plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Option<i64>,
    pub payload: Value,
    pub status: DeliveryStatus,
    /// HTTP requests made so far, over all sends.
    pub attempts: u32,
    /// Failed sends so far (each may have made several requests).
    pub failed_sends: u32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl Delivery {
    /// A new pending delivery of `payload`, due at once.
    pub fn new(payload: Value, now: DateTime<Utc>) -> Self {
        Self {
            id: None,
            payload,
            status: DeliveryStatus::Pending,
            attempts: 0,
            failed_sends: 0,
            created_at: now,
            next_attempt_at: now,
            last_error: None,
        }
    }

    /// True when it is pending and its next attempt is due.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == DeliveryStatus::Pending && self.next_attempt_at <= now
    }

    /// Records a send's outcome at `now`: delivered, dead (rejected, or failing for longer than
    /// the policy's patience), or pending until a backoff that honours `Retry-After`.
    pub fn record(
        &mut self,
        result: &Result<Sent, SendFailure>,
        now: DateTime<Utc>,
        policy: &OutboxPolicy,
    ) {
        match result {
            Ok(sent) => {
                self.attempts += sent.attempts;
                self.status = DeliveryStatus::Delivered;
                self.last_error = None;
            }
            Err(failure) => {
                self.attempts += failure.attempts();
                self.failed_sends += 1;
                self.last_error = Some(failure.to_string());
                let retry_after = match failure {
                    SendFailure::Rejected { .. } => {
                        self.status = DeliveryStatus::Dead;
                        return;
                    }
                    SendFailure::Exhausted { retry_after, .. } => *retry_after,
                };
                let factor = 2u32.saturating_pow(self.failed_sends.saturating_sub(1));
                let backoff = policy.base.saturating_mul(factor).min(policy.max);
                let wait = backoff.max(retry_after.unwrap_or_default());
                let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::TimeDelta::MAX);
                let give_up = chrono::Duration::from_std(policy.give_up_after)
                    .unwrap_or(chrono::TimeDelta::MAX);
                if now - self.created_at >= give_up {
                    self.status = DeliveryStatus::Dead;
                } else {
                    self.next_attempt_at = now.checked_add_signed(wait).unwrap_or(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minute: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_767_225_600 + minute * 60, 0).expect("time")
    }

    fn exhausted(retry_after: Option<u64>) -> Result<Sent, SendFailure> {
        Err(SendFailure::Exhausted {
            attempts: 4,
            last_error: "503 unavailable".to_string(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    #[test]
    fn failed_sends_back_off_honour_retry_after_and_eventually_give_up() {
        let policy = OutboxPolicy::default();
        let mut d = Delivery::new(serde_json::json!({"text": "x"}), t(0));
        assert!(d.is_due(t(0)));
        d.record(&exhausted(None), t(0), &policy);
        assert_eq!(
            (d.status, d.attempts, d.next_attempt_at),
            (DeliveryStatus::Pending, 4, t(1))
        );
        assert!(!d.is_due(t(0)) && d.is_due(t(1)));
        d.record(&exhausted(None), t(1), &policy);
        assert_eq!(d.next_attempt_at, t(3));
        d.record(&exhausted(Some(600)), t(3), &policy);
        assert_eq!(
            d.next_attempt_at,
            t(13),
            "Retry-After beats a shorter backoff"
        );
        for _ in 0..10 {
            d.record(&exhausted(None), t(13), &policy);
        }
        assert_eq!(d.next_attempt_at, t(73), "the backoff is capped at an hour");
        d.record(&exhausted(None), t(48 * 60), &policy);
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert_eq!(d.failed_sends, 14);
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains("503")));
    }

    #[test]
    fn a_rejected_message_is_dead_and_a_sent_one_delivered() {
        let policy = OutboxPolicy::default();
        let mut d = Delivery::new(serde_json::json!({"text": "x"}), t(0));
        let rejected = Err(SendFailure::Rejected {
            status: 404,
            body: "no_service".to_string(),
            attempts: 1,
        });
        d.record(&rejected, t(0), &policy);
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert!(!d.is_due(t(100)));

        let mut d = Delivery::new(serde_json::json!({"text": "x"}), t(0));
        d.record(&exhausted(None), t(0), &policy);
        d.record(&Ok(Sent { attempts: 2 }), t(1), &policy);
        assert_eq!(
            (d.status, d.attempts, d.last_error.clone()),
            (DeliveryStatus::Delivered, 6, None)
        );
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let got: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn from_env_names_the_variable_and_hides_the_url() {
        let var = "TIDEMARK_TEST_SLACK_URL_SURELY_UNSET";
        let err = SlackNotifier::from_env(var).expect_err("unset");
        assert_eq!(
            err.to_string(),
            format!("environment variable {var} (the Slack webhook URL) is not set")
        );
        let notifier = SlackNotifier::new(
            "https://hooks.slack.com/services/T000/B000/secret-token",
            RetryPolicy::default(),
        )
        .expect("notifier");
        let debug = format!("{notifier:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        // PATH is set but is no URL: the error names the variable, never its value.
        let err = SlackNotifier::from_env("PATH")
            .expect_err("not a url")
            .to_string();
        assert_eq!(
            err,
            "environment variable PATH does not hold an http(s) URL"
        );
        assert!(SlackNotifier::new("ftp://x/y", RetryPolicy::default()).is_err());
        assert!(SlackNotifier::new("not a url", RetryPolicy::default()).is_err());
    }
}
