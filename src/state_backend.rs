//! Terraform's `http` state backend, served under `/state/{repo}/{stack...}`: GET (the current
//! state), POST (a new version, `?ID=` naming the lock the writer holds), DELETE, and the
//! backend's default lock methods LOCK and UNLOCK. Callers authenticate with Basic credentials
//! minted per run; a credential opens exactly one stack's state. Status codes are the ones
//! terraform's http backend client (`internal/backend/remote-state/http/client.go`) expects:
//! LOCK answers 200 or 423 with the holder's lock info, UNLOCK 200 (409 with the holder's info
//! for another lock ID), GET 200 or 204 when there is no state, POST and DELETE 200.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use tokio_util::sync::CancellationToken;

use crate::crypto::PlanKey;
use crate::store::{LockOutcome, StateError, StateGrant, StateLock, Store, UnlockOutcome};

/// The largest state file accepted.
const MAX_STATE_BYTES: usize = 256 << 20;

/// What the state routes need.
#[derive(Clone)]
pub struct StateApi {
    pub store: Store,
    /// Encrypts state files at rest.
    pub key: PlanKey,
    /// On a run's own socket: the one (repo, stack) served there; everything else is refused.
    pub only: Option<(String, String)>,
}

/// The state routes, ready to merge into a router or serve alone.
pub fn routes(api: StateApi) -> Router {
    Router::new()
        .route("/state/{repo}/{*stack}", any(handle))
        .layer(DefaultBodyLimit::max(MAX_STATE_BYTES))
        .with_state(api)
}

/// The URL path of a stack's state, each segment percent-encoded.
pub fn state_path(repo: &str, stack: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    let route = route(stack);
    let stack: Vec<String> = route.split('/').map(enc).collect();
    format!("/state/{}/{}", enc(repo), stack.join("/"))
}

/// Where under `/state/{repo}/` a stack's state is served: its path, and for an instance of
/// an environment `{stack}/{env}` (`stacks/app@prod` at `stacks/app/prod`). Which state a
/// request reaches is decided by its credentials, never by this path alone.
fn route(stack: &str) -> String {
    match crate::stacks::split_instance(stack) {
        (dir, Some(env)) => format!("{dir}/{env}"),
        (dir, None) => dir.to_string(),
    }
}

/// Serves the state routes of `api` (normally scoped with `only`) on a run's Unix socket until
/// `shutdown`.
pub async fn serve_socket(
    listener: tokio::net::UnixListener,
    api: StateApi,
    shutdown: CancellationToken,
) {
    let server = axum::serve(listener, routes(api))
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(err) = server.await {
        tracing::warn!(error = %err, "state socket server stopped");
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// 423 or 409 with the lock info of the holder, which terraform shows in its lock error.
fn held(status: StatusCode, lock: &StateLock) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        lock.info.clone(),
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut response = json_error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"tidemark state\""),
    );
    response
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn internal(err: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{err:#}"), "state request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn state_error(err: StateError) -> Response {
    match err {
        StateError::Invalid { .. } => json_error(StatusCode::BAD_REQUEST, &err.to_string()),
        StateError::Stale { .. } => json_error(StatusCode::CONFLICT, &err.to_string()),
        StateError::UnknownRepo(_) => json_error(StatusCode::NOT_FOUND, &err.to_string()),
        StateError::Store(err) => internal(err),
    }
}

/// The `ID` of a lock info body.
fn lock_id(body: &[u8]) -> Option<String> {
    let info: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = info.get("ID")?.as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

async fn handle(
    State(api): State<StateApi>,
    method: Method,
    Path((repo, stack)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((user, password)) = basic_credentials(&headers) else {
        return unauthorized("state requests need the run's Basic credentials");
    };
    let grant = match api.store.authorize_state(&user, &password).await {
        Ok(Some(grant)) => grant,
        Ok(None) => return unauthorized("unknown, revoked or expired state credentials"),
        Err(err) => return internal(err),
    };
    let served = api
        .only
        .as_ref()
        .is_none_or(|(r, s)| *r == repo && route(s) == stack);
    if grant.repo != repo || route(&grant.stack) != stack || !served {
        return json_error(
            StatusCode::FORBIDDEN,
            &format!("these credentials are not valid for the state of {repo}/{stack}"),
        );
    }
    if matches!(method.as_str(), "POST" | "DELETE") && !grant.may_write() {
        tracing::warn!(run = grant.run_id, kind = %grant.kind, repo = %repo, stack = %stack, method = %method, "state write refused: only an apply may write state");
        return json_error(
            StatusCode::FORBIDDEN,
            &format!(
                "run {} ({}) may only read the state of {repo}/{stack}: only an apply run writes state",
                grant.run_id, grant.kind
            ),
        );
    }
    let result = match method.as_str() {
        "GET" => get(&api, &grant).await,
        "POST" => post(&api, &grant, query.get("ID"), &body).await,
        "DELETE" => delete(&api, &grant).await,
        "LOCK" => lock(&api, &grant, &body).await,
        "UNLOCK" => unlock(&api, &grant, &body).await,
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the state backend answers GET, POST, DELETE, LOCK and UNLOCK",
        )),
    };
    result.unwrap_or_else(internal)
}

async fn get(api: &StateApi, grant: &StateGrant) -> anyhow::Result<Response> {
    let blob = api
        .store
        .state_blob(&grant.repo, &grant.stack, None, &api.key)
        .await?;
    Ok(match blob {
        Some(raw) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            raw,
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn post(
    api: &StateApi,
    grant: &StateGrant,
    id: Option<&String>,
    body: &[u8],
) -> anyhow::Result<Response> {
    let lock = api.store.state_lock(&grant.repo, &grant.stack).await?;
    match (&lock, id) {
        (Some(held_lock), Some(id)) if held_lock.lock_id == *id => {}
        (Some(held_lock), Some(_)) => return Ok(held(StatusCode::CONFLICT, held_lock)),
        (Some(held_lock), None) => return Ok(held(StatusCode::LOCKED, held_lock)),
        (None, Some(id)) => {
            return Ok(json_error(
                StatusCode::CONFLICT,
                &format!("lock {id} is not held on the state of {}", grant.stack),
            ));
        }
        (None, None) => {}
    }
    let recorded = api
        .store
        .record_state(
            &grant.repo,
            &grant.stack,
            Some(grant.run_id),
            body,
            &api.key,
        )
        .await;
    Ok(match recorded {
        Ok(version) => {
            tracing::info!(repo = %grant.repo, stack = %grant.stack, run = grant.run_id, serial = version.serial, "state version stored");
            (StatusCode::OK, axum::Json(version)).into_response()
        }
        Err(err) => state_error(err),
    })
}

async fn delete(api: &StateApi, grant: &StateGrant) -> anyhow::Result<Response> {
    if let Some(held_lock) = api.store.state_lock(&grant.repo, &grant.stack).await? {
        return Ok(held(StatusCode::LOCKED, &held_lock));
    }
    let retired = api.store.discard_state(&grant.repo, &grant.stack).await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({ "retired": retired })),
    )
        .into_response())
}

async fn lock(api: &StateApi, grant: &StateGrant, body: &[u8]) -> anyhow::Result<Response> {
    let Some(id) = lock_id(body) else {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            "a LOCK body is terraform's lock info: JSON with an ID",
        ));
    };
    let info = String::from_utf8_lossy(body);
    let outcome = api
        .store
        .lock_state(&grant.repo, &grant.stack, &id, &info, grant.run_id)
        .await;
    Ok(match outcome {
        Ok(LockOutcome::Acquired) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            info.into_owned(),
        )
            .into_response(),
        Ok(LockOutcome::Held(holder)) => held(StatusCode::LOCKED, &holder),
        Err(err) => state_error(err),
    })
}

async fn unlock(api: &StateApi, grant: &StateGrant, body: &[u8]) -> anyhow::Result<Response> {
    let Some(id) = lock_id(body) else {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            "an UNLOCK body is terraform's lock info: JSON with an ID",
        ));
    };
    Ok(
        match api
            .store
            .unlock_state(&grant.repo, &grant.stack, &id)
            .await?
        {
            UnlockOutcome::Released | UnlockOutcome::NotLocked => StatusCode::OK.into_response(),
            UnlockOutcome::Held(holder) => held(StatusCode::CONFLICT, &holder),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_paths_encode_each_segment() {
        assert_eq!(state_path("infra", "stacks/app"), "/state/infra/stacks/app");
        assert_eq!(state_path("in fra", "."), "/state/in%20fra/.");
        assert_eq!(state_path("infra", "a b/c?d"), "/state/infra/a%20b/c%3Fd");
        assert_eq!(
            state_path("infra", "stacks/app@prod"),
            "/state/infra/stacks/app/prod"
        );
    }

    #[test]
    fn basic_credentials_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_static("Basic dTE6cDE6eA=="),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("u1".into(), "p1:x".into()))
        );
        assert_eq!(
            lock_id(br#"{"ID":"abc","Who":"x"}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(lock_id(br#"{"ID":""}"#), None);
    }
}
