//! GitHub on 127.0.0.1, for the pull-request tests: GitHub's published OpenAPI description
//! (`@octokit/openapi`) served by Stoplight Prism, which rejects every request the real API
//! would reject, behind a small recording proxy of our own that keeps the state Prism cannot
//! (pull requests, reviews, permissions, comments with ids, statuses, reactions, ETags, the
//! 65,536-character limit on comment bodies, rate limits).
//!
//! Every request is validated by Prism first; a request Prism refuses is recorded as a
//! violation and answered with Prism's refusal. Answers are Prism's own (examples from the
//! description, so they have GitHub's shape) with the fields the state decides patched in.
//! Prism starts once per test binary (about 20 s for the 13 MB description) and is killed
//! when the test process exits.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request Tidemark sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// A pull request as the mock serves it.
#[derive(Debug, Clone)]
pub struct MockPr {
    pub number: u64,
    pub title: String,
    pub author: String,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    pub base_sha: String,
    /// `open` or `closed`.
    pub state: String,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub fork: bool,
    pub labels: Vec<String>,
}

/// What the mock holds; tests set it up and read it back.
#[derive(Debug, Default)]
pub struct MockState {
    pub repository: String,
    pub pulls: BTreeMap<u64, MockPr>,
    /// Per pull request: (review id, user, state, commit).
    pub reviews: BTreeMap<u64, Vec<(u64, String, String, String)>>,
    pub permissions: BTreeMap<String, String>,
    /// Per pull request: (comment id, author, body).
    pub comments: BTreeMap<u64, Vec<(u64, String, String)>>,
    /// Per sha: every status posted, in order (the JSON body).
    pub statuses: BTreeMap<String, Vec<Value>>,
    /// (comment id, reaction).
    pub reactions: Vec<(u64, String)>,
    pub requests: Vec<Recorded>,
    pub violations: Vec<String>,
    /// Answer this many requests with a primary rate limit (403, remaining 0).
    pub rate_limit_next: usize,
    pub token_exchanges: usize,
    next_id: u64,
}

impl MockState {
    /// A fresh id for a comment or review.
    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A running mock for one test: the proxy's base URL is the `api_url` to configure.
pub struct GitHubMock {
    pub url: String,
    pub state: Arc<Mutex<MockState>>,
    _server: tokio::task::JoinHandle<()>,
}

impl GitHubMock {
    /// Starts the proxy (and Prism, once per process). `None` outside CI when the mock is not
    /// installed (`scripts/install-github-mock.sh`); in CI a missing install fails the test.
    pub async fn start(repository: &str) -> Option<GitHubMock> {
        // The proxy's and the tests' reqwest clients need the process-wide rustls provider.
        tidemark::install_crypto_provider();
        let prism = prism()?;
        let state = Arc::new(Mutex::new(MockState {
            repository: repository.to_string(),
            next_id: 1000,
            ..MockState::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((state.clone(), prism.to_string()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Some(GitHubMock {
            url,
            state,
            _server: server,
        })
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut MockState) -> T) -> T {
        f(&mut self.state.lock().expect("mock state"))
    }

    pub fn open_pr(&self, number: u64, author: &str, head: &str, base_sha: &str) {
        self.with(|s| {
            s.pulls.insert(
                number,
                MockPr {
                    number,
                    title: format!("Change {number}"),
                    author: author.into(),
                    head_sha: head.into(),
                    head_ref: format!("feature-{number}"),
                    base_ref: "main".into(),
                    base_sha: base_sha.into(),
                    state: "open".into(),
                    merged: false,
                    merge_commit_sha: None,
                    fork: false,
                    labels: Vec::new(),
                },
            );
        });
    }

    pub fn push_pr(&self, number: u64, head: &str) {
        self.with(|s| s.pulls.get_mut(&number).expect("pr").head_sha = head.into());
    }

    pub fn merge_pr(&self, number: u64, merge_commit: &str) {
        self.with(|s| {
            let pr = s.pulls.get_mut(&number).expect("pr");
            pr.state = "closed".into();
            pr.merged = true;
            pr.merge_commit_sha = Some(merge_commit.into());
        });
    }

    pub fn approve(&self, number: u64, user: &str, commit: &str) {
        self.with(|s| {
            let id = s.new_id();
            s.reviews.entry(number).or_default().push((
                id,
                user.into(),
                "APPROVED".into(),
                commit.into(),
            ));
        });
    }

    pub fn permit(&self, user: &str, permission: &str) {
        self.with(|s| {
            s.permissions.insert(user.into(), permission.into());
        });
    }

    pub fn comments(&self, number: u64) -> Vec<(u64, String, String)> {
        self.with(|s| s.comments.get(&number).cloned().unwrap_or_default())
    }

    pub fn statuses(&self, sha: &str) -> Vec<Value> {
        self.with(|s| s.statuses.get(sha).cloned().unwrap_or_default())
    }

    /// The last state posted for a context on a commit.
    pub fn status(&self, sha: &str, context: &str) -> Option<String> {
        self.statuses(sha)
            .iter()
            .rev()
            .find(|s| s["context"] == context)
            .and_then(|s| s["state"].as_str().map(String::from))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    /// Adds a comment by `user` (as a webhook would announce it); returns its id.
    pub fn add_comment(&self, number: u64, user: &str, body: &str) -> u64 {
        self.with(|s| {
            let id = s.new_id();
            s.comments
                .entry(number)
                .or_default()
                .push((id, user.into(), body.into()));
            id
        })
    }
}

/// The directory `install-github-mock.sh` installed into.
pub fn mock_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TIDEMARK_GITHUB_MOCK_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let tools = std::env::var_os("TIDEMARK_TOOLS_DIR")?;
            Some(PathBuf::from(tools).parent()?.join("github-mock"))
        })?;
    dir.join("node_modules/.bin/prism").exists().then_some(dir)
}

/// Prism's base URL, started once per process.
fn prism() -> Option<&'static str> {
    static PRISM: OnceLock<Option<String>> = OnceLock::new();
    PRISM
        .get_or_init(|| {
            let Some(dir) = mock_dir() else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but the GitHub mock is not installed: run scripts/install-github-mock.sh (scripts/test.sh does)"
                );
                eprintln!("skipping: the GitHub mock is not installed (scripts/install-github-mock.sh DIR, then TIDEMARK_GITHUB_MOCK_DIR=DIR)");
                return None;
            };
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let spec = dir.join("node_modules/@octokit/openapi/generated/api.github.com.json");
            let prism = dir.join("node_modules/.bin/prism");
            // A watchdog shell kills Prism when this test process is gone.
            let script = format!(
                "'{}' mock -h 127.0.0.1 -p {port} '{}' >'{}' 2>&1 & p=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $p",
                prism.display(),
                spec.display(),
                dir.join("prism.log").display(),
                std::process::id()
            );
            // Never waited for: the watchdog lives as long as this process and is reaped by
            // init after it (and Prism with it) exits.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prism");
            let url = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "prism did not start: see {}",
                    dir.join("prism.log").display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("prism ready in {:.1}s", started.elapsed().as_secs_f64());
            Some(url)
        })
        .as_deref()
}

type Shared = (Arc<Mutex<MockState>>, String);

async fn handle(
    State((state, prism)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    // Tidemark's Accept header is GitHub's; Prism only negotiates plain JSON. Anything else
    // Tidemark sends would reach Prism as sent.
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut violations = Vec::new();
    if accept != "application/vnd.github+json" {
        violations.push(format!(
            "{method} {path}: Accept is {accept:?}, not application/vnd.github+json"
        ));
    }
    if headers.get("x-github-api-version").is_none() {
        violations.push(format!("{method} {path}: no X-GitHub-Api-Version"));
    }
    let client = reqwest::Client::new();
    let target = if query.is_empty() {
        format!("{prism}{path}")
    } else {
        format!("{prism}{path}?{query}")
    };
    let mut request = client
        .request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"),
            &target,
        )
        .header("accept", "application/json");
    for name in [
        "authorization",
        "content-type",
        "if-none-match",
        "x-github-api-version",
        "user-agent",
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request = request.header(name, value);
        }
    }
    let prism_answer = request.body(body.to_vec()).send().await;
    let (prism_status, prism_body) = match prism_answer {
        Ok(answer) => {
            let status = answer.status().as_u16();
            (
                status,
                answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            )
        }
        Err(err) => (599, err.to_string().into_bytes()),
    };
    let mut s = state.lock().expect("mock state");
    if prism_status >= 400 {
        violations.push(format!(
            "{method} {path}: Prism answered {prism_status}: {}",
            String::from_utf8_lossy(&prism_body)
        ));
    }
    if !violations.is_empty() {
        s.violations.extend(violations);
        s.requests.push(Recorded {
            method: method.to_string(),
            path,
            body: json_body,
            status: 422,
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, prism_body).into_response();
    }
    let example: Value = serde_json::from_slice(&prism_body).unwrap_or(Value::Null);
    let (status, answer_headers, answer) = if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        let reset = (std::time::SystemTime::now() + Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        (
            StatusCode::FORBIDDEN,
            vec![
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", reset.to_string()),
            ],
            json!({ "message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest" }),
        )
    } else {
        super::github_mock_routes::answer(
            &mut s,
            &method,
            &path,
            &query,
            &headers,
            json_body.as_ref(),
            example,
        )
    };
    s.requests.push(Recorded {
        method: method.to_string(),
        path,
        body: json_body,
        status: status.as_u16(),
    });
    drop(s);
    let mut response = if status == StatusCode::NOT_MODIFIED || answer.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(answer)).into_response()
    };
    for (name, value) in answer_headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}
