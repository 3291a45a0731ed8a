//! Webhooks: the fast path next to polling. A push event only nudges the repository's poller;
//! what gets planned is always read from the configured remote, never from the payload.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{ApiError, AppState};

/// `POST /webhooks/github`: GitHub's `push` (and `ping`) events, signed with
/// `X-Hub-Signature-256` when the config names a webhook secret.
pub async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(secret) = &state.webhook_secret {
        let signature = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized("missing X-Hub-Signature-256"))?;
        if !verify_signature(secret.as_bytes(), &body, signature) {
            return Err(ApiError::Unauthorized("webhook signature does not match"));
        }
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match event {
        "ping" => return Ok(Json(serde_json::json!({ "ok": true }))),
        "push" => {}
        other => return Ok(Json(serde_json::json!({ "ignored": other }))),
    }
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("push payload is not JSON: {err}")))?;
    let git_ref = payload["ref"].as_str().unwrap_or("");
    let urls: Vec<&str> = ["clone_url", "ssh_url", "git_url", "html_url"]
        .iter()
        .filter_map(|key| payload["repository"][key].as_str())
        .collect();
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

/// Checks GitHub's `sha256=HEX` HMAC of the raw body, in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
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
    fn signatures_are_checked_against_the_raw_body() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, body, good));
        assert!(!verify_signature(secret, b"Hello, World?", good));
        assert!(!verify_signature(b"other", body, good));
        assert!(!verify_signature(secret, body, "sha1=abc"));
    }

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
