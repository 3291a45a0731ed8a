//! Access control over HTTP: who a request comes from (a bearer token with a role) and what
//! it may do. Reads need a viewer's token unless they are open (the config says so, or there
//! is no `access` block and Tidemark listens on loopback only); anything that acts needs an
//! operator's. The health check, webhooks and the state backend keep their own authentication.
//! Every request that acts is written to the audit log with who, what, from where and how it
//! ended.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::{ApiError, AppState};
use crate::config::Role;

/// A token Tidemark accepts: its name, role and the SHA-256 of its value.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// A person who logs in to the dashboard: name, role and the argon2id hash of the password.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
}

/// What the server config allows.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Reads need no token.
    pub open_read: bool,
    pub tokens: Vec<Token>,
    /// Password logins (browser sessions only: the API takes tokens).
    pub users: Vec<User>,
    /// The SHA-256 of the token `GET /metrics` needs, if it needs one.
    pub metrics_token: Option<[u8; 32]>,
}

/// Who a request comes from, for handlers (in the request's extensions).
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Came with a browser session cookie (not a bearer token): it may read the API and act
    /// only through the dashboard's forms, which carry a CSRF token.
    pub session: bool,
}

impl Access {
    /// Whether a request may read `/metrics`: always without a metrics token, else only with it.
    pub fn may_scrape(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(want) = self.metrics_token else {
            return true;
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest == want
    }

    /// The principal a request's `Authorization: Bearer` token names, if any.
    fn identify(&self, request: &Request) -> Option<Principal> {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        // Digests compare in time independent of where the token differs.
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.tokens
            .iter()
            .find(|t| t.sha256 == digest)
            .map(|t| Principal {
                name: t.name.clone(),
                role: t.role,
                session: false,
            })
    }

    /// The token a bearer value names, if any (the login form exchanges it for a session).
    pub fn token_named_by(&self, value: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        self.tokens.iter().find(|t| t.sha256 == digest)
    }

    /// The user `name` with its role when `password` is theirs. An unknown name is checked
    /// against a decoy hash, so it takes as long to refuse as a wrong password; at most two
    /// checks run at once (each is argon2's 19 MiB and tens of milliseconds of a core), so a
    /// flood of logins queues instead of exhausting the machine.
    pub async fn password_login(&self, name: &str, password: &str) -> Option<(String, Role)> {
        static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or_else(
            || crate::crypto::password::decoy().to_string(),
            |u| u.password_hash.clone(),
        );
        let password = password.to_string();
        let _permit = CHECKS.acquire().await.ok()?;
        let matches =
            tokio::task::spawn_blocking(move || crate::crypto::password::verify(&hash, &password))
                .await
                .unwrap_or(false);
        let user = user.filter(|_| matches)?;
        Some((user.name.clone(), user.role))
    }

    /// The principal a session cookie names, while its token or user still exists with that
    /// role (names are unique across both).
    fn identify_session(
        &self,
        key: &crate::crypto::PlanKey,
        request: &Request,
    ) -> Option<Principal> {
        let session = super::pages::session_of(request.headers(), key)?;
        let token = self.tokens.iter().map(|t| (&t.name, t.role));
        let user = self.users.iter().map(|u| (&u.name, u.role));
        token
            .chain(user)
            .find(|(name, role)| **name == session.name && *role == session.role)
            .map(|(name, role)| Principal {
                name: name.clone(),
                role,
                session: true,
            })
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Authenticated elsewhere (health, webhooks, state backend).
    Own,
    Read,
    Act,
    Admin,
}

fn need(method: &Method, path: &str) -> Need {
    if path == "/healthz"
        || path == "/metrics"
        || path.starts_with("/webhooks/")
        || path.starts_with("/state/")
    {
        return Need::Own;
    }
    if path == "/login" || path == "/logout" {
        return Need::Own;
    }
    if path.starts_with("/api/v1/audit") || path == "/audit" {
        return Need::Admin;
    }
    let nudge = path.starts_with("/api/v1/repos/") && path.ends_with("/poll");
    if *method == Method::GET || *method == Method::HEAD || nudge {
        Need::Read
    } else {
        Need::Act
    }
}

/// The middleware: identifies the caller, refuses what its role does not allow, and audits
/// every request that acts.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let need = need(&method, &path);
    if need == Need::Own {
        return next.run(request).await;
    }
    let has_token = request
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    let principal = if has_token {
        state.access.identify(&request)
    } else {
        state.access.identify_session(&state.key, &request)
    };
    let api = path.starts_with("/api/");
    let refusal = match (need, &principal) {
        // A cookie rides along with any request the browser makes: over the API it reads,
        // and acts only through a form that carries the page's CSRF token.
        (Need::Act | Need::Admin, Some(p)) if p.session && api && method != Method::GET => {
            Some(ApiError::Forbidden(
                "API actions need a bearer token; in a browser, use the dashboard's buttons",
            ))
        }
        (_, None) if has_token => Some(ApiError::Unauthorized("the bearer token is not valid")),
        (Need::Read, None) if state.access.open_read => None,
        (Need::Read, None) => Some(ApiError::Unauthorized(
            "this Tidemark needs a bearer token to read (an access token of role viewer or more)",
        )),
        (Need::Act, None) if state.access.tokens.is_empty() => Some(ApiError::Forbidden(
            "actions over HTTP are off: set api_token_env or an access token in the server config",
        )),
        (Need::Act | Need::Admin, None) => {
            Some(ApiError::Unauthorized("a bearer token is required"))
        }
        (Need::Act, Some(p)) if p.role < Role::Operator => Some(ApiError::Forbidden(
            "this needs a token of role operator or admin",
        )),
        (Need::Admin, Some(p)) if p.role < Role::Admin => {
            Some(ApiError::Forbidden("this needs a token of role admin"))
        }
        _ => None,
    };
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let actor = principal
        .as_ref()
        .map(|p| format!("{} ({})", p.name, p.role.as_str()))
        .unwrap_or_else(|| "anonymous".into());
    let response = match refusal {
        // A browser asking for a page is sent to log in, and back afterwards.
        Some(ApiError::Unauthorized(_)) if !api && method == Method::GET && !has_token => {
            let next = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            axum::response::Redirect::to(&format!(
                "/login?next={}",
                super::pages::url_encode(&next)
            ))
            .into_response()
        }
        Some(err) => err.into_response(),
        None => {
            if let Some(p) = principal {
                request.extensions_mut().insert(p);
            }
            next.run(request).await
        }
    };
    if need != Need::Read {
        let status = response.status();
        let outcome = if status.is_success() || status.is_redirection() {
            "ok".to_string()
        } else {
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
        };
        let action = format!("{method} {path}");
        if let Err(err) = state
            .store
            .record_audit(&actor, &action, &outcome, &remote)
            .await
        {
            warn!(error = %format!("{err:#}"), action, "writing the audit record failed");
        }
    }
    response
}

/// `GET /api/v1/audit`: the newest audit records (admin only).
pub async fn audit(
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let records = state.store.audit(200).await?;
    Ok(axum::Json(serde_json::json!({ "audit": records })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_they_do() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Own);
        assert_eq!(need(&Method::GET, "/metrics"), Need::Own);
        assert_eq!(need(&Method::POST, "/webhooks/github"), Need::Own);
        assert_eq!(need(&Method::POST, "/state/infra/stacks/a"), Need::Own);
        assert_eq!(need(&Method::GET, "/api/v1/runs"), Need::Read);
        assert_eq!(need(&Method::GET, "/"), Need::Read);
        assert_eq!(need(&Method::POST, "/api/v1/repos/infra/poll"), Need::Read);
        assert_eq!(need(&Method::POST, "/api/v1/runs/3/approve"), Need::Act);
        assert_eq!(need(&Method::GET, "/api/v1/audit"), Need::Admin);
    }
}
