//! Webhooks: the fast path next to polling. A push nudges the repository's poller; a pull
//! request, review or comment event nudges its pull-request task (a comment may be a command).
//! What gets planned is always read from the configured remote and the forge's API, never
//! from the payload.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use tracing::warn;

use super::{ApiError, AppState};
use crate::forge::ForgeEvent;
use crate::forge::github::{parse_event, verify_signature};

/// `POST /webhooks/github`: GitHub's `push`, `pull_request`, `pull_request_review`,
/// `issue_comment` and `ping` events, signed with `X-Hub-Signature-256` when the config names
/// a webhook secret.
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let handled = handle(state, headers, body).await;
    let result = match &handled {
        Ok(Json(answer)) if answer.get("ignored").is_some() => "ignored",
        Ok(_) => "accepted",
        Err(ApiError::Unauthorized(_)) => "rejected",
        Err(_) => "invalid",
    };
    crate::telemetry::webhook(&event, result);
    handled
}

async fn handle(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    if let Some(secret) = &state.webhook_secret {
        let signature = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized("missing X-Hub-Signature-256"))?;
        if !verify_signature(secret.as_bytes(), &body, signature) {
            warn!(delivery, "webhook signature does not match: refused");
            return Err(ApiError::Unauthorized("webhook signature does not match"));
        }
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if event == "ping" {
        return Ok(Json(serde_json::json!({ "ok": true })));
    }
    // A delivery handled once is not handled again (a replay, or GitHub's "Redeliver": a
    // webhook only nudges, so the next poll covers anything a skipped one would have). Only
    // signed deliveries get here, so a forger cannot use up ids. When the database cannot
    // say, the delivery is handled: a nudge twice is harmless, a lost one is not.
    if delivery != "-" {
        match state.store.first_delivery(&delivery).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Json(
                    serde_json::json!({ "ignored": "replay", "delivery": delivery }),
                ));
            }
            Err(err) => {
                warn!(delivery, error = %format!("{err:#}"), "recording the webhook delivery failed: handling it anyway");
            }
        }
    }
    let parsed = parse_event(event, &body)
        .map_err(|err| ApiError::BadRequest(format!("delivery {delivery}: {err}")))?;
    match parsed {
        ForgeEvent::Push { urls, git_ref } => {
            let mut nudged = Vec::new();
            for repo in state.repos.iter() {
                let same_repo = urls.iter().any(|url| same_remote(url, &repo.url));
                if same_repo
                    && git_ref == format!("refs/heads/{}", repo.branch)
                    && let Some(nudge) = state.nudges.get(&repo.name)
                {
                    nudge.notify_one();
                    nudged.push(repo.name.clone());
                }
            }
            Ok(Json(serde_json::json!({ "polled": nudged })))
        }
        ForgeEvent::PullRequest {
            repository, number, ..
        }
        | ForgeEvent::Review { repository, number } => {
            let Some(pulls) = state.pulls.get(&repository.to_ascii_lowercase()) else {
                return Ok(Json(serde_json::json!({ "ignored": repository })));
            };
            pulls.nudge.notify_one();
            Ok(Json(
                serde_json::json!({ "pull_request": number, "synced": pulls.repo.name }),
            ))
        }
        ForgeEvent::Comment {
            repository,
            number,
            comment,
        } => {
            let Some(pulls) = state.pulls.get(&repository.to_ascii_lowercase()).cloned() else {
                return Ok(Json(serde_json::json!({ "ignored": repository })));
            };
            // Answer GitHub at once; the command runs in the background.
            let id = comment.id;
            tokio::spawn(async move {
                if let Err(err) = pulls.command(number as i64, &comment).await {
                    warn!(repo = %pulls.repo.name, pr = number, comment = comment.id, error = %format!("{err:#}"), "pull request command failed");
                }
            });
            Ok(Json(
                serde_json::json!({ "pull_request": number, "comment": id }),
            ))
        }
        ForgeEvent::Ignored { event } => Ok(Json(serde_json::json!({ "ignored": event }))),
    }
}

/// Whether two remote URLs name the same repository, ignoring scheme, credentials, a trailing
/// `.git` or `/`, and the scp-like `git@host:path` form.
fn same_remote(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

fn normalize(url: &str) -> String {
    let mut rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(url)
        .to_string();
    if let Some((_, host_path)) = rest.split_once('@') {
        rest = host_path.to_string();
    }
    if !url.contains("://") {
        rest = rest.replacen(':', "/", 1);
    }
    let rest = rest.trim_end_matches('/');
    rest.strip_suffix(".git")
        .unwrap_or(rest)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_match_across_url_forms() {
        let a = "https://github.com/acme/infra.git";
        for b in [
            "git@github.com:acme/infra.git",
            "ssh://git@github.com/acme/infra",
            "https://GitHub.com/acme/infra/",
        ] {
            assert!(same_remote(a, b), "{b}");
        }
        assert!(!same_remote(a, "https://github.com/acme/other.git"));
    }
}
