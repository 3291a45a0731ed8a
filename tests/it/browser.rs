//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's chromium and
//! chromedriver, from `scripts/install-browser.sh`): log in, open the runs, follow a plan to
//! its page, approve it and watch the apply's log stream in while it runs, lock and unlock the
//! stack; a viewer sees no approve button. No page logs a console error. Screenshots of each
//! page are kept in `$CARGO_TARGET_DIR/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::Digest;
use tidemark::app::App;
use tidemark::store::{RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, TestDb, eventually, free_port};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A plan of one resource whose apply prints a line a second for five seconds.
const SLOW_APPLY: &str = r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}

resource "null_resource" "this" {
  triggers = { value = "one" }
  provisioner "local-exec" {
    command = "for i in 1 2 3 4 5; do echo tick $i; sleep 1; done"
  }
}
"#;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browser's console messages so far (chromedriver's log endpoint).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

struct Page {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Page {
    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("goto");
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_string()
    }

    /// Fails on any console message at error level since the last call.
    async fn no_console_errors(&self, page: &str) {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("browser log");
        let errors: Vec<&serde_json::Value> = log
            .as_array()
            .map(|a| a.iter().filter(|e| e["level"] == "SEVERE").collect())
            .unwrap_or_default();
        assert!(errors.is_empty(), "{page}: console errors {errors:#?}");
    }

    async fn log_in(&self, token: &str) {
        self.open("/runs").await;
        assert_eq!(
            self.path().await,
            "/login",
            "a page without a session asks to log in"
        );
        let field = self
            .client
            .wait()
            .for_element(Locator::Css("input[name=token]"))
            .await
            .expect("token field");
        field.send_keys(token).await.expect("type");
        self.click("button[type=submit]").await;
        eventually(30, "leaving the login page", || async {
            (self.path().await != "/login").then_some(())
        })
        .await;
    }
}

async fn browser(base: &str, shots: &Path) -> (Page, Driver) {
    let port = free_port();
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut caps = Capabilities::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"],
        }),
    );
    caps.insert(
        "goog:loggingPrefs".into(),
        serde_json::json!({ "browser": "ALL" }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = eventually(30, "chromedriver", || {
        let caps = caps.clone();
        let url = url.clone();
        async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    let page = Page {
        client,
        base: base.to_string(),
        shots: shots.to_path_buf(),
    };
    (page, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if !Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {CHROMEDRIVER} is missing: scripts/install-browser.sh installs it"
        );
        eprintln!("no {CHROMEDRIVER}: run scripts/install-browser.sh for the browser test");
        return;
    }
    let shots = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
    )
    .join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", SLOW_APPLY)
        .write("stacks/app/stack.hcl", "stack {}\n");
    git.commit_and_push("a stack with a slow apply");
    let db = TestDb::sqlite();
    let viewer_sha = hex::encode(sha2::Sha256::digest(b"reader-token"));
    let config = crate::dashboard::config(dir.path(), &db.url, &git.url(), &viewer_sha);
    let app = App::start(config).await.expect("start");
    let store = Store::open(&db.url).await.expect("store");
    let plan = eventually(120, "the plan", || async {
        store
            .runs(&RunFilter::default())
            .await
            .ok()?
            .into_iter()
            .find(|r| r.kind == RunKind::Plan && r.status.is_final())
    })
    .await;
    assert_eq!(plan.status, RunStatus::Succeeded, "{plan:#?}");

    let base = format!("http://{}", app.addr);
    // A viewer sees the plan's page without the approve button an operator gets.
    let (viewer, _viewer_driver) = browser(&base, &shots).await;
    viewer.log_in("reader-token").await;
    viewer.open(&format!("/runs/{}", plan.id)).await;
    assert_eq!(viewer.path().await, format!("/runs/{}", plan.id));
    assert_eq!(
        viewer.text("#status").await,
        "succeeded",
        "the viewer sees the plan"
    );
    let buttons = viewer
        .client
        .find_all(Locator::Css("button[data-action]"))
        .await
        .expect("find");
    assert!(buttons.is_empty(), "a viewer has no action buttons");
    viewer.shot("run-as-viewer").await;
    viewer.no_console_errors("run page as viewer").await;
    // And the API refuses the viewer's approval.
    let refused = reqwest::Client::new()
        .post(format!("{base}/api/v1/runs/{}/approve", plan.id))
        .bearer_auth("reader-token")
        .send()
        .await
        .expect("approve as viewer");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    viewer.client.clone().close().await.expect("close");

    let (page, _driver) = browser(&base, &shots).await;
    page.open("/login").await;
    page.shot("login").await;
    let operator = std::env::var("PATH").expect("PATH");
    page.log_in(&operator).await;
    assert_eq!(page.path().await, "/runs");
    page.shot("runs").await;
    page.no_console_errors("runs").await;

    // Follow the plan to its page and approve it: the browser lands on the apply, whose log
    // streams in while it runs.
    page.click(&format!("a[href='/runs/{}']", plan.id)).await;
    assert_eq!(page.path().await, format!("/runs/{}", plan.id));
    page.shot("run-plan").await;
    page.no_console_errors("run page").await;
    page.click("button[data-action=approve]").await;
    page.client
        .accept_alert()
        .await
        .expect("confirm the approval");
    let plan_path = format!("/runs/{}", plan.id);
    eventually(60, "leaving the plan's page", || async {
        (page.path().await != plan_path).then_some(())
    })
    .await;
    let apply_path = page.path().await;
    let ticks = eventually(60, "the apply's log lines in the page", || async {
        let log = page.text("#log").await;
        log.contains("tick 3").then_some(log)
    })
    .await;
    assert!(ticks.contains("[apply]"), "{ticks}");
    page.shot("run-apply-live").await;
    eventually(60, "the status badge turning succeeded", || async {
        (page.text("#status").await == "succeeded").then_some(())
    })
    .await;
    assert!(page.text("#log").await.contains("tick 5"));
    page.shot("run-apply-done").await;
    page.no_console_errors("apply page").await;
    let apply_id: i64 = apply_path
        .trim_start_matches("/runs/")
        .parse()
        .expect("run id");
    let apply = store.find_run(apply_id).await.expect("run").expect("apply");
    assert_eq!(
        (apply.kind, apply.status),
        (RunKind::Apply, RunStatus::Succeeded)
    );

    // Lock and unlock the stack from its page.
    page.open("/stacks/infra/stacks/app").await;
    page.client
        .find(Locator::Css("input[name=reason]"))
        .await
        .expect("reason")
        .send_keys("change freeze")
        .await
        .expect("type");
    page.click("button[data-action=lock]").await;
    page.client.accept_alert().await.expect("confirm the lock");
    eventually(30, "the lock", || async {
        page.text("h1").await.contains("locked").then_some(())
    })
    .await;
    page.shot("stack-locked").await;
    page.click("button[data-action=unlock]").await;
    page.client
        .accept_alert()
        .await
        .expect("confirm the unlock");
    eventually(30, "the unlock", || async {
        page.text("h1").await.contains("in sync").then_some(())
    })
    .await;
    assert!(store.locks().await.expect("locks").is_empty());
    for (path, name) in [
        ("/stacks", "stacks"),
        ("/drift", "drift"),
        ("/locks", "locks"),
        ("/delivery", "delivery"),
    ] {
        page.open(path).await;
        page.shot(name).await;
        page.no_console_errors(path).await;
    }
    page.client.clone().close().await.expect("close");
}
