//! The GitHub REST client: one repository, reqwest over rustls, GitHub's headers and API
//! version, pagination by `Link`, conditional requests by ETag, and rate limits respected: a
//! limited answer (`Retry-After`, `X-RateLimit-Remaining: 0`, a secondary limit) blocks every
//! further call until the time GitHub names, without sending anything.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{self, Auth, CachedToken};
use super::payload;
use crate::forge::{
    Comment, CommitStatus, Conditional, Forge, ForgeError, ForgeFuture, Permission, PullRequest,
    Reaction, Review, StatusState,
};

/// Every request gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long to hold off after a secondary rate limit that names no time.
const SECONDARY_WAIT: Duration = Duration::from_secs(60);
/// At most this many pages of a list (100 items each).
const MAX_PAGES: usize = 50;

/// One repository on GitHub.
pub struct GitHub {
    api: String,
    repository: String,
    http: reqwest::Client,
    auth: Auth,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    blocked_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("repository", &self.repository)
            .field("auth", &self.auth)
            .finish()
    }
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitHub {
    /// A client for `repository` (`owner/name`) at `api_url` (`https://api.github.com`, or
    /// `https://HOST/api/v3` for GitHub Enterprise Server).
    pub fn new(api_url: &str, repository: &str, auth: Auth) -> Result<GitHub, ForgeError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent("tidemark")
            .build()
            .map_err(|err| ForgeError::Unavailable(format!("building the HTTP client: {err}")))?;
        Ok(GitHub {
            api: api_url.trim_end_matches('/').to_string(),
            repository: repository.to_string(),
            http,
            auth,
            token: tokio::sync::Mutex::new(None),
            blocked_until: Mutex::new(None),
        })
    }

    fn repo_url(&self, path: &str) -> String {
        format!("{}/repos/{}{path}", self.api, self.repository)
    }

    /// The bearer token: the configured one, or the App installation's (minted when missing
    /// or about to expire).
    async fn bearer(&self) -> Result<String, ForgeError> {
        let (app_id, key, installation) = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::App {
                app_id,
                private_key_pem,
                installation_id,
            } => (*app_id, private_key_pem, *installation_id),
        };
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && SystemTime::now() < token.renew_at
        {
            return Ok(token.token.clone());
        }
        let jwt = auth::app_jwt(app_id, key, SystemTime::now())?;
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            self.api
        );
        let answer = self.send_with(Method::POST, &url, None, None, &jwt).await?;
        let token: auth::InstallationToken = decode(&answer)?;
        let token = token.cached();
        let bearer = token.token.clone();
        *cached = Some(token);
        Ok(bearer)
    }

    /// Sends one request with the repository's credentials.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<Answer, ForgeError> {
        let bearer = self.bearer().await?;
        self.send_with(method, url, body, etag, &bearer).await
    }

    async fn send_with(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        etag: Option<&str>,
        bearer: &str,
    ) -> Result<Answer, ForgeError> {
        if let Some(until) = *self.blocked() {
            let now = Instant::now();
            if now < until {
                return Err(ForgeError::RateLimited {
                    retry_after: until - now,
                });
            }
        }
        let mut request = self
            .http
            .request(method.clone(), url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .bearer_auth(bearer);
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = format!("{method} {}", url.strip_prefix(&self.api).unwrap_or(url));
        let response = request
            .send()
            .await
            .map_err(|err| ForgeError::Unavailable(format!("{what}: {}", without_url(&err))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|err| ForgeError::Unavailable(format!("{what}: {}", without_url(&err))))?
            .to_vec();
        let answer = Answer {
            status,
            headers,
            body,
        };
        if let Some(wait) = rate_limited(&answer) {
            self.block_for(wait);
            if !status.is_success() && status != StatusCode::NOT_MODIFIED {
                return Err(ForgeError::RateLimited { retry_after: wait });
            }
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(answer);
        }
        let error: payload::ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
        let mut message = error.message;
        if !error.errors.is_empty() {
            message.push_str(&format!(" {}", Value::Array(error.errors)));
        }
        let message = format!("{what}: {}", message.trim());
        Err(match status {
            StatusCode::UNAUTHORIZED => ForgeError::Unauthorized(message),
            StatusCode::NOT_FOUND => ForgeError::NotFound(message),
            s if s.is_server_error() => ForgeError::Unavailable(format!("{message} ({s})")),
            s => ForgeError::Rejected {
                status: s.as_u16(),
                message,
            },
        })
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.blocked_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = self.blocked();
        if blocked.is_none_or(|b| b < until) {
            *blocked = Some(until);
        }
    }

    /// Every page of a list, following `Link: <...>; rel="next"` within the API's own URL.
    async fn list<T: DeserializeOwned>(&self, first: String) -> Result<Vec<T>, ForgeError> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            let answer = self.send(Method::GET, &url, None, None).await?;
            let page: Vec<T> = decode(&answer)?;
            items.extend(page);
            pages += 1;
            next = next_link(&answer.headers)
                .filter(|n| n.starts_with(&self.api) && pages < MAX_PAGES);
        }
        Ok(items)
    }
}

/// How long GitHub asks to wait, if the answer is a rate limit (or used up the last call).
fn rate_limited(answer: &Answer) -> Option<Duration> {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let limited_status = matches!(
        answer.status,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    );
    if limited_status && let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs.max(1)));
    }
    if header("x-ratelimit-remaining") == Some("0") {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    if limited_status {
        let text = String::from_utf8_lossy(&answer.body).to_ascii_lowercase();
        if text.contains("secondary rate limit") || text.contains("rate limit exceeded") {
            return Some(SECONDARY_WAIT);
        }
    }
    None
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, ForgeError> {
    serde_json::from_slice(&answer.body)
        .map_err(|err| ForgeError::Unavailable(format!("unreadable answer from GitHub: {err}")))
}

/// reqwest's error text without the URL (which is ours, but keeps messages short).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "");
    }
    text.trim().to_string()
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(String::from)
}

impl Forge for GitHub {
    fn open_pull_requests<'a>(
        &'a self,
        etag: Option<&'a str>,
    ) -> ForgeFuture<'a, Conditional<Vec<PullRequest>>> {
        Box::pin(async move {
            let url = self.repo_url("/pulls?state=open&per_page=100");
            let answer = self.send(Method::GET, &url, None, etag).await?;
            if answer.status == StatusCode::NOT_MODIFIED {
                return Ok(Conditional::Unchanged);
            }
            let tag = header_text(&answer.headers, "etag");
            let mut pulls: Vec<payload::Pull> = decode(&answer)?;
            if let Some(next) = next_link(&answer.headers).filter(|n| n.starts_with(&self.api)) {
                pulls.extend(self.list::<payload::Pull>(next).await?);
            }
            Ok(Conditional::Changed {
                value: pulls.into_iter().map(payload::Pull::into_neutral).collect(),
                etag: tag,
            })
        })
    }

    fn pull_request(&self, number: u64) -> ForgeFuture<'_, PullRequest> {
        Box::pin(async move {
            let answer = self
                .send(
                    Method::GET,
                    &self.repo_url(&format!("/pulls/{number}")),
                    None,
                    None,
                )
                .await?;
            Ok(decode::<payload::Pull>(&answer)?.into_neutral())
        })
    }

    fn pull_request_files(&self, number: u64) -> ForgeFuture<'_, Vec<String>> {
        Box::pin(async move {
            let files: Vec<payload::PullFile> = self
                .list(self.repo_url(&format!("/pulls/{number}/files?per_page=100")))
                .await?;
            let mut paths = Vec::new();
            for file in files {
                paths.extend(file.previous_filename);
                paths.push(file.filename);
            }
            paths.sort();
            paths.dedup();
            Ok(paths)
        })
    }

    fn reviews(&self, number: u64) -> ForgeFuture<'_, Vec<Review>> {
        Box::pin(async move {
            let reviews: Vec<payload::ReviewPayload> = self
                .list(self.repo_url(&format!("/pulls/{number}/reviews?per_page=100")))
                .await?;
            Ok(reviews
                .into_iter()
                .map(payload::ReviewPayload::into_neutral)
                .collect())
        })
    }

    fn permission<'a>(&'a self, user: &'a str) -> ForgeFuture<'a, Permission> {
        Box::pin(async move {
            let url = self.repo_url(&format!("/collaborators/{user}/permission"));
            let answer = match self.send(Method::GET, &url, None, None).await {
                Ok(answer) => answer,
                Err(ForgeError::NotFound(_)) => return Ok(Permission::None),
                Err(err) => return Err(err),
            };
            let payload: payload::PermissionPayload = decode(&answer)?;
            let name = payload.role_name.unwrap_or(payload.permission);
            Ok(match name.as_str() {
                "admin" => Permission::Admin,
                "maintain" => Permission::Maintain,
                "write" => Permission::Write,
                "triage" => Permission::Triage,
                "read" => Permission::Read,
                _ => Permission::None,
            })
        })
    }

    fn comments(&self, number: u64) -> ForgeFuture<'_, Vec<Comment>> {
        Box::pin(async move {
            let comments: Vec<payload::CommentPayload> = self
                .list(self.repo_url(&format!("/issues/{number}/comments?per_page=100")))
                .await?;
            Ok(comments
                .into_iter()
                .map(payload::CommentPayload::into_neutral)
                .collect())
        })
    }

    fn create_comment<'a>(&'a self, number: u64, body: &'a str) -> ForgeFuture<'a, Comment> {
        Box::pin(async move {
            let url = self.repo_url(&format!("/issues/{number}/comments"));
            let answer = self
                .send(Method::POST, &url, Some(&json!({ "body": body })), None)
                .await?;
            Ok(decode::<payload::CommentPayload>(&answer)?.into_neutral())
        })
    }

    fn update_comment<'a>(&'a self, comment_id: u64, body: &'a str) -> ForgeFuture<'a, Comment> {
        Box::pin(async move {
            let url = self.repo_url(&format!("/issues/comments/{comment_id}"));
            let answer = self
                .send(Method::PATCH, &url, Some(&json!({ "body": body })), None)
                .await?;
            Ok(decode::<payload::CommentPayload>(&answer)?.into_neutral())
        })
    }

    fn set_status<'a>(&'a self, sha: &'a str, status: &'a CommitStatus) -> ForgeFuture<'a, ()> {
        Box::pin(async move {
            let state = match status.state {
                StatusState::Pending => "pending",
                StatusState::Success => "success",
                StatusState::Failure => "failure",
                StatusState::Error => "error",
            };
            let mut body = json!({
                "state": state,
                "context": status.context,
                "description": cut(&status.description, 140),
            });
            if let Some(url) = &status.target_url {
                body["target_url"] = json!(url);
            }
            let url = self.repo_url(&format!("/statuses/{sha}"));
            self.send(Method::POST, &url, Some(&body), None).await?;
            Ok(())
        })
    }

    fn react(&self, comment_id: u64, reaction: Reaction) -> ForgeFuture<'_, ()> {
        Box::pin(async move {
            let content = match reaction {
                Reaction::Eyes => "eyes",
                Reaction::Confused => "confused",
            };
            let url = self.repo_url(&format!("/issues/comments/{comment_id}/reactions"));
            self.send(
                Method::POST,
                &url,
                Some(&json!({ "content": content })),
                None,
            )
            .await?;
            Ok(())
        })
    }
}

/// At most `max` characters, cut on a character boundary.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn rate_limits_are_read_from_every_form_github_uses() {
        assert_eq!(
            rate_limited(&answer(429, &[("retry-after", "30")], "")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            rate_limited(&answer(
                403,
                &[],
                r#"{"message":"You have exceeded a secondary rate limit"}"#
            )),
            Some(SECONDARY_WAIT)
        );
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 120;
        let wait = rate_limited(&answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset.to_string()),
            ],
            "",
        ))
        .expect("limited");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(
            rate_limited(&answer(
                403,
                &[],
                r#"{"message":"Resource not accessible"}"#
            )),
            None
        );
        assert_eq!(
            rate_limited(&answer(200, &[("x-ratelimit-remaining", "41")], "")),
            None
        );
    }

    #[test]
    fn next_links_and_cuts() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/pulls?page=2>; rel=\"next\", <https://api.github.com/repositories/1/pulls?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
        assert_eq!(cut("ééé", 2), "éé");
        assert_eq!(cut("ab", 140), "ab");
    }
}
