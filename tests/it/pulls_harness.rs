//! The harness of the pull-request tests: a server config with a `github` block pointed at
//! the GitHub mock, the real `tidemark serve` with its database and log, signed webhook
//! deliveries, and pull-request heads published at `refs/pull/N/head` as GitHub does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidemark::store::{Run, RunFilter, Store};

use crate::github_mock::GitHubMock;
use crate::support::{GitFixture, ServeProcess, Toolchain, eventually, git};

pub const REPO: &str = "acme/infra";
pub const TOKEN_VAR: &str = "TIDEMARK_TEST_GITHUB_TOKEN";
pub const SECRET_VAR: &str = "TIDEMARK_TEST_WEBHOOK_SECRET";
pub const SECRET: &str = "webhook-secret-for-tests";
pub const MARKER: &str = "<!-- tidemark:pr-comment -->";

pub fn config(dir: &Path, repo_url: &str, api: &str, poll: &str) -> PathBuf {
    config_with(dir, repo_url, api, poll, "")
}

pub fn config_with(dir: &Path, repo_url: &str, api: &str, poll: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"listen   = "127.0.0.1:0"
data_dir = "{data}"
workers  = 2
webhook_secret_env = "{SECRET_VAR}"

{runner}

repo "infra" {{
  url           = "{repo_url}"
  poll_interval = "1s"
  github {{
    repository       = "{REPO}"
    api_url          = "{api}"
    token_env        = "{TOKEN_VAR}"
    pr_poll_interval = "{poll}"
    apply_on_merge   = true
    {extra}
  }}
}}
"#,
        data = dir.join("data").display(),
        runner = Toolchain::get().runner_override(),
    );
    let path = dir.join("tidemark.hcl");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The service, its database and its log.
pub struct Service {
    _serve: ServeProcess,
    pub store: Store,
    pub log: PathBuf,
    pub addr: String,
}

impl Service {
    pub async fn start(dir: &Path, config: &Path) -> Service {
        let log = dir.join("serve.log");
        let serve = ServeProcess::start(
            config,
            &[(TOKEN_VAR, "ghp_test_token"), (SECRET_VAR, SECRET)],
            &log,
        );
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        let addr: String = eventually(60, "the service to listen", || async {
            let text = text();
            let rest = text.split("listening on http://").nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .await;
        let db = format!("sqlite://{}", dir.join("data/tidemark.db").display());
        let store = eventually(60, "the database", || async { Store::open(&db).await.ok() }).await;
        Service {
            _serve: serve,
            store,
            log,
            addr,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn runs(&self) -> Vec<Run> {
        self.store
            .runs(&RunFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("runs")
    }

    /// Waits up to `secs` for `check` to hold, failing with the runs and the log.
    pub async fn wait<T, F, Fut>(&self, secs: u64, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nruns: {:#?}\nlog:\n{}",
                    self.runs().await,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a webhook delivery signed as GitHub signs it, with a delivery id of its own (as
    /// GitHub gives each delivery; a repeated id is a replay, which Tidemark ignores).
    pub async fn webhook(&self, event: &str, body: &serde_json::Value) -> u16 {
        static DELIVERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = DELIVERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delivery = format!("72d3162e-cc78-11e3-81ab-{n:012x}");
        self.delivery(event, body, &delivery).await.0
    }

    /// Sends one delivery with the given id; the status and the body of the answer.
    pub async fn delivery(
        &self,
        event: &str,
        body: &serde_json::Value,
        delivery: &str,
    ) -> (u16, String) {
        let body = serde_json::to_vec(body).expect("json");
        let signature = hmac_sha256(SECRET.as_bytes(), &body);
        let response = reqwest::Client::new()
            .post(format!("http://{}/webhooks/github", self.addr))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", format!("sha256={signature}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook");
        let status = response.status().as_u16();
        (status, response.text().await.expect("answer"))
    }
}

pub fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Commits on a branch and publishes it as the forge does, at `refs/pull/N/head`.
pub fn push_pr(git_fixture: &GitFixture, number: u64, message: &str) -> String {
    let sha = git_fixture.commit(message);
    git(
        &git_fixture.work(),
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("HEAD:refs/pull/{number}/head"),
        ],
    );
    sha
}

pub fn posts_and_patches(mock: &GitHubMock, number: u64) -> (usize, Vec<String>) {
    let requests = mock.requests();
    let posts = requests
        .iter()
        .filter(|r| {
            r.method == "POST" && r.path == format!("/repos/{REPO}/issues/{number}/comments")
        })
        .count();
    let patches = requests
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path.clone())
        .collect();
    (posts, patches)
}

/// Sends `body` as a comment of `user` on pull request `number`, as GitHub's webhook would.
pub async fn command(
    service: &Service,
    mock: &GitHubMock,
    number: u64,
    user: &str,
    body: &str,
) -> u64 {
    let id = mock.add_comment(number, user, body);
    let payload = serde_json::json!({
        "action": "created",
        "issue": { "number": number, "pull_request": { "url": "x" } },
        "comment": { "id": id, "user": { "login": user }, "body": body },
        "repository": { "full_name": REPO }
    });
    assert_eq!(service.webhook("issue_comment", &payload).await, 200);
    id
}
