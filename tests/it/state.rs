//! Tidemark as the Terraform state backend: real terraform 1.0.3 with its `http` backend
//! pointed at Tidemark's API (SQLite and PostgreSQL), the lock protocol, credential scoping,
//! redaction, and a worker planning and applying a stack without a backend of its own under
//! bubblewrap with the network off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use tidemark::api::{AppState, router};
use tidemark::crypto::{PlanKey, REDACTED};
use tidemark::store::{NewRun, RunKind, RunStatus, StateCredential, Store};

use crate::support::{GitFixture, TestDb, Toolchain, eventually, null_stack};

const SECRET: &str = "hunter2-state-secret";

/// A stack keeping its state in an http backend configured from the environment, with a
/// sensitive output.
fn write_stack(dir: &Path, value: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("main.tf"), null_stack(value)).expect("main.tf");
    let extra = format!(
        "terraform {{\n  backend \"http\" {{}}\n}}\n\noutput \"secret\" {{\n  value     = \"{SECRET}\"\n  sensitive = true\n}}\n"
    );
    std::fs::write(dir.join("backend.tf"), extra).expect("backend.tf");
}

/// Tidemark's API on 127.0.0.1:0 over `db`, with the repository `infra`.
struct Server {
    addr: SocketAddr,
    store: Store,
    key: PlanKey,
    repo_id: i64,
}

async fn serve(db: &TestDb) -> Server {
    tidemark::install_crypto_provider();
    let store = Store::open(&db.url).await.expect("open store");
    let repo_id = store
        .upsert_repo("infra", "file:///infra.git", "main", None)
        .await
        .expect("repo");
    let key = PlanKey::generate();
    let state = AppState {
        store: store.clone(),
        nudges: Arc::new(HashMap::new()),
        repos: Arc::new(Vec::new()),
        webhook_secret: None,
        key: key.clone(),
        pulls: Default::default(),
        metrics_per_stack: 0,
        access: Default::default(),
        work: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Server {
        addr,
        store,
        key,
        repo_id,
    }
}

impl Server {
    /// A running run of `stack` (queued, then claimed) and its state credential.
    async fn running_run(&self, stack: &str) -> (i64, StateCredential) {
        let id = self
            .store
            .enqueue(&[NewRun {
                repo_id: self.repo_id,
                stack: stack.into(),
                commit: "0".repeat(40),
                kind: RunKind::Apply,
                reason: Some("test".into()),
                after: Vec::new(),
                plan_run: None,
                transitive: false,
                pr_number: None,
                reviewed_run: None,
            }])
            .await
            .expect("enqueue")[0];
        let claimed = self
            .store
            .claim(&format!("test-{stack}"), Duration::from_secs(600))
            .await
            .expect("claim")
            .expect("a run to claim");
        assert_eq!(claimed.id, id);
        let credential = self
            .store
            .mint_state_credential(id, "infra", stack)
            .await
            .expect("mint");
        (id, credential)
    }

    fn url(&self, stack: &str) -> String {
        format!("http://{}/state/infra/{stack}", self.addr)
    }

    /// Terraform's environment for the http backend of `stack` with `credential`.
    fn tf_env(&self, stack: &str, credential: &StateCredential) -> Vec<(String, String)> {
        let mut env = Toolchain::get().env();
        for var in [
            "TF_HTTP_ADDRESS",
            "TF_HTTP_LOCK_ADDRESS",
            "TF_HTTP_UNLOCK_ADDRESS",
        ] {
            env.push((var.into(), self.url(stack)));
        }
        env.push(("TF_HTTP_USERNAME".into(), credential.username.clone()));
        env.push((
            "TF_HTTP_PASSWORD".into(),
            credential.password.expose().to_string(),
        ));
        env
    }
}

fn terraform(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(Toolchain::get().terraform())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run terraform")
}

fn ok(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "terraform {what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn terraform_stores_versions_and_history(db: TestDb) {
    let server = serve(&db).await;
    let (run, credential) = server.running_run("stacks/app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = dir.path().join("app");
    write_stack(&stack, "v1");
    let env = server.tf_env("stacks/app", &credential);

    ok(
        terraform(&stack, &env, &["init", "-input=false", "-no-color"]),
        "init",
    );
    let plan = stack.join("p.tfplan");
    let plan_arg = format!("-out={}", plan.display());
    ok(
        terraform(
            &stack,
            &env,
            &["plan", "-input=false", "-no-color", &plan_arg],
        ),
        "plan",
    );
    assert!(
        server
            .store
            .latest_state("infra", "stacks/app")
            .await
            .expect("latest")
            .is_none(),
        "a plan stores no state"
    );
    let plan_path = plan.display().to_string();
    ok(
        terraform(
            &stack,
            &env,
            &["apply", "-input=false", "-no-color", &plan_path],
        ),
        "apply",
    );
    write_stack(&stack, "v2");
    ok(
        terraform(
            &stack,
            &env,
            &["apply", "-input=false", "-no-color", "-auto-approve"],
        ),
        "second apply",
    );

    let versions = server
        .store
        .state_versions("infra", "stacks/app")
        .await
        .expect("versions");
    assert_eq!(versions.len(), 2, "{versions:#?}");
    let (newest, first) = (&versions[0], &versions[1]);
    assert!(newest.serial > first.serial, "{versions:#?}");
    assert_eq!(newest.lineage, first.lineage);
    assert_eq!(newest.run_id, Some(run));
    assert_eq!(newest.resource_count, 1);
    assert_eq!(newest.resources, ["null_resource.this"]);
    assert_eq!(newest.outputs["value"]["value"], "v2");
    assert_eq!(newest.outputs["secret"]["value"], REDACTED);
    assert_eq!(newest.outputs["secret"]["sensitive"], true);
    assert_eq!(
        server
            .store
            .state_version("infra", "stacks/app", first.serial)
            .await
            .expect("version")
            .expect("first version")
            .outputs["value"]["value"],
        "v1"
    );

    // The whole state is kept, encrypted: it decrypts to what terraform wrote.
    let blob = server
        .store
        .state_blob("infra", "stacks/app", None, &server.key)
        .await
        .expect("blob")
        .expect("current state");
    assert!(String::from_utf8_lossy(&blob).contains(SECRET));
    assert!(
        server
            .store
            .state_blob("infra", "stacks/app", None, &PlanKey::generate())
            .await
            .is_err(),
        "another key cannot open it"
    );

    // The secret is in no clear-text column, nor in the stored (encrypted) bytes.
    let (dump, in_blobs) = table_text(&db, SECRET).await;
    assert!(dump.contains("null_resource.this"), "{dump}");
    assert!(!dump.contains(SECRET), "{dump}");
    assert!(!in_blobs, "the stored state files are encrypted");

    // `tidemark state show` and `state versions` print metadata and redacted outputs only.
    let config = dir.path().join("tidemark.hcl");
    std::fs::write(
        &config,
        format!(
            "database = \"{}\"\ndata_dir = \"{}\"\n",
            db.url,
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("tidemark");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = cli(&["state", "show", "stacks/app"]);
    assert!(shown.contains("null_resource.this"), "{shown}");
    assert!(
        shown.contains(REDACTED) && shown.contains("\"v2\""),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    let old = cli(&[
        "state",
        "show",
        "stacks/app",
        "--version",
        &first.serial.to_string(),
        "--format",
        "json",
    ]);
    let old: serde_json::Value = serde_json::from_str(&old).expect("json");
    assert_eq!(old["version"]["outputs"]["value"]["value"], "v1");
    assert_eq!(old["version"]["serial"], first.serial);
    let listed = cli(&["state", "versions", "stacks/app", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["versions"].as_array().map(Vec::len), Some(2));
    assert!(!listed.to_string().contains(SECRET));
}

/// The clear-text columns of `state_versions`, and whether `needle` appears in any stored
/// (encrypted) state file's bytes.
async fn table_text(db: &TestDb, needle: &str) -> (String, bool) {
    type Row = (String, String, String, String, Option<Vec<u8>>);
    let sql = "SELECT lineage, digest, outputs, resources, state_encrypted FROM state_versions";
    let rows: Vec<Row> = if db.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("pg");
        sqlx::query_as(sql).fetch_all(&pool).await.expect("dump")
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url).await.expect("sqlite");
        sqlx::query_as(sql).fetch_all(&pool).await.expect("dump")
    };
    let text = rows
        .iter()
        .map(|(a, b, c, d, _)| format!("{a} {b} {c} {d}"))
        .collect::<Vec<_>>()
        .join("\n");
    let in_blobs = rows.iter().any(|(.., blob)| {
        blob.as_deref()
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    });
    (text, in_blobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_stores_versions_and_history_sqlite() {
    terraform_stores_versions_and_history(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_stores_versions_and_history_postgres() {
    if let Some(db) = TestDb::postgres().await {
        terraform_stores_versions_and_history(db).await;
    }
}

async fn credentials_and_locks(db: TestDb) {
    let server = serve(&db).await;
    let (run_a, a) = server.running_run("stacks/a").await;
    let (_, b) = server.running_run("stacks/b").await;
    let client = reqwest::Client::new();
    let request = |method: &str, stack: &str, cred: Option<(&str, &str)>| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = client.request(method, server.url(stack));
        match cred {
            Some((user, pw)) => req.basic_auth(user, Some(pw)),
            None => req,
        }
    };
    let a_cred = (a.username.as_str(), a.password.expose());
    let status = |r: reqwest::Response| r.status().as_u16();

    // Scoping: a's credential is refused for b's state; a wrong password or none is 401.
    let send = |r: reqwest::RequestBuilder| async move { r.send().await.expect("send") };
    assert_eq!(
        status(send(request("GET", "stacks/a", Some(a_cred))).await),
        204
    );
    assert_eq!(
        status(send(request("GET", "stacks/b", Some(a_cred))).await),
        403
    );
    let b_cred = (b.username.as_str(), b.password.expose());
    assert_eq!(
        status(send(request("GET", "stacks/b", Some(b_cred))).await),
        204
    );
    let wrong = (a.username.as_str(), "not-the-password");
    assert_eq!(
        status(send(request("GET", "stacks/a", Some(wrong))).await),
        401
    );
    assert_eq!(status(send(request("GET", "stacks/a", None)).await), 401);

    // Locking: a second LOCK gets 423 and the holder's info; POSTs must name the held lock.
    let info =
        |id: &str| format!(r#"{{"ID":"{id}","Operation":"OperationTypeApply","Who":"test"}}"#);
    let lock = send(request("LOCK", "stacks/a", Some(a_cred)).body(info("first"))).await;
    assert_eq!(status(lock), 200);
    let again = send(request("LOCK", "stacks/a", Some(a_cred)).body(info("second"))).await;
    assert_eq!(again.status().as_u16(), 423);
    let holder: serde_json::Value = again.json().await.expect("lock info");
    assert_eq!(holder["ID"], "first");
    let state = r#"{"version": 4, "serial": 1, "lineage": "l1", "outputs": {}, "resources": []}"#;
    let post = |id: Option<&str>| {
        let query = id.map(|id| format!("?ID={id}")).unwrap_or_default();
        client
            .post(format!("{}{query}", server.url("stacks/a")))
            .basic_auth(a_cred.0, Some(a_cred.1))
            .body(state)
    };
    assert_eq!(status(send(post(Some("second"))).await), 409);
    assert_eq!(status(send(post(None)).await), 423);
    assert!(
        server
            .store
            .latest_state("infra", "stacks/a")
            .await
            .expect("latest")
            .is_none(),
        "refused POSTs store nothing"
    );
    assert_eq!(status(send(post(Some("first"))).await), 200);
    let unlock = send(request("UNLOCK", "stacks/a", Some(a_cred)).body(info("second"))).await;
    assert_eq!(status(unlock), 409, "only the holder's ID unlocks");
    let unlock = send(request("UNLOCK", "stacks/a", Some(a_cred)).body(info("first"))).await;
    assert_eq!(status(unlock), 200);
    let got = send(request("GET", "stacks/a", Some(a_cred))).await;
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.text().await.expect("body"), state);
    // An older serial of the same lineage is refused.
    let stale = r#"{"version": 4, "serial": 0, "lineage": "l1"}"#;
    let refused = send(request("POST", "stacks/a", Some(a_cred)).body(stale)).await;
    assert_eq!(status(refused), 409);

    // A lock left by a run survives nothing: revoking the run's credentials releases it and
    // the credential stops working.
    let lock = send(request("LOCK", "stacks/a", Some(a_cred)).body(info("third"))).await;
    assert_eq!(status(lock), 200);
    assert_eq!(
        server
            .store
            .revoke_state_credentials(run_a)
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(
        status(send(request("GET", "stacks/a", Some(a_cred))).await),
        401
    );
    assert!(
        server
            .store
            .state_lock("infra", "stacks/a")
            .await
            .expect("lock")
            .is_none()
    );
}

#[tokio::test]
async fn credentials_are_scoped_and_locks_checked_sqlite() {
    credentials_and_locks(TestDb::sqlite()).await;
}

#[tokio::test]
async fn credentials_are_scoped_and_locks_checked_postgres() {
    if let Some(db) = TestDb::postgres().await {
        credentials_and_locks(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_is_refused_while_another_holds_the_lock() {
    let db = TestDb::sqlite();
    let server = serve(&db).await;
    let (_, credential) = server.running_run("stacks/app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = dir.path().join("app");
    write_stack(&stack, "v1");
    let env = server.tf_env("stacks/app", &credential);
    ok(
        terraform(&stack, &env, &["init", "-input=false", "-no-color"]),
        "init",
    );

    // Another apply holds the state's lock (taken the way terraform takes it).
    let holder =
        r#"{"ID":"other-apply","Operation":"OperationTypeApply","Who":"someone@elsewhere"}"#;
    let client = reqwest::Client::new();
    let lock_request = |method: &str, body: &str| {
        client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                server.url("stacks/app"),
            )
            .basic_auth(&credential.username, Some(credential.password.expose()))
            .body(body.to_string())
    };
    let taken = lock_request("LOCK", holder).send().await.expect("lock");
    assert_eq!(taken.status().as_u16(), 200);

    let apply = ["apply", "-input=false", "-no-color", "-auto-approve"];
    let refused = terraform(&stack, &env, &[&apply[..], &["-lock-timeout=0s"]].concat());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Error acquiring the state lock")
            && stderr.contains("HTTP remote state already locked: ID=other-apply"),
        "{stderr}"
    );

    // Terraform 1.0.x's http backend client turns a 423 into a plain error, not a lock error,
    // so `-lock-timeout` does not make it wait (hashicorp/terraform#31256 fixed that in 1.2.x):
    // until the holder lets go, every apply is refused and nothing is written.
    assert!(
        server
            .store
            .latest_state("infra", "stacks/app")
            .await
            .expect("latest")
            .is_none()
    );
    let released = lock_request("UNLOCK", holder).send().await.expect("unlock");
    assert_eq!(released.status().as_u16(), 200);
    let done = ok(
        terraform(&stack, &env, &[&apply[..], &["-lock-timeout=60s"]].concat()),
        "apply after the unlock",
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("Apply complete!"));
    let latest = server
        .store
        .latest_state("infra", "stacks/app")
        .await
        .expect("latest")
        .expect("state after the apply");
    assert_eq!(latest.resource_count, 1);
    assert!(
        server
            .store
            .state_lock("infra", "stacks/app")
            .await
            .expect("lock")
            .is_none(),
        "the apply unlocked when done"
    );
}

/// The service end to end: a stack without a backend is planned and applied by a worker under
/// bubblewrap with the network off; its state reaches Tidemark through the run's socket and
/// proxy, and a second plan of the same commit reads it back and shows no changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_a_stacks_state_in_tidemark() {
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db_url = format!("sqlite://{}", data.join("tidemark.db").display());
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{db_url}\"\ndata_dir = \"{}\"\nworkers = 1\n\n{}\nrepo \"infra\" {{\n  url = \"{}\"\n  poll_interval = \"1s\"\n}}\n",
        data.display(),
        Toolchain::get().runner_override(),
        git.url(),
    );
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, &text).expect("config");
    let mut config = tidemark::config::Config::parse(&file, &text, dir.path()).expect("config");
    assert_eq!(config.sandbox, "bubblewrap");
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = tidemark::app::App::start(config).await.expect("start");
    let store = app.store.clone();

    let settled = |id: i64| {
        let store = store.clone();
        async move {
            eventually(180, &format!("run {id} to finish"), || async {
                let run = store.run(id).await.ok()?;
                run.status.is_final().then_some(run)
            })
            .await
        }
    };
    let plan = eventually(60, "the first plan run", || async {
        let runs = store.runs(&Default::default()).await.ok()?;
        runs.into_iter().next()
    })
    .await;
    let plan = settled(plan.id).await;
    let logs = |id: i64| {
        let store = store.clone();
        async move { format!("{:#?}", store.logs(id).await.expect("logs")) }
    };
    assert_eq!(
        plan.status,
        RunStatus::Succeeded,
        "{plan:#?} {}",
        logs(plan.id).await
    );
    let repo_id = store.repos().await.expect("repos")[0].id;
    let enqueue = |kind: RunKind, plan_run: Option<i64>| NewRun {
        repo_id,
        stack: plan.stack.clone(),
        commit: plan.commit.clone(),
        kind,
        reason: Some("test".into()),
        after: Vec::new(),
        plan_run,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    };
    crate::drift::approve(&store, plan.id).await;
    let apply = store
        .enqueue(&[enqueue(RunKind::Apply, Some(plan.id))])
        .await
        .expect("enqueue apply")[0];
    let applied = settled(apply).await;
    assert_eq!(
        applied.status,
        RunStatus::Succeeded,
        "{applied:#?} {}",
        logs(apply).await
    );
    let state = store
        .latest_state("infra", "stacks/app")
        .await
        .expect("latest")
        .expect("a state version from the apply");
    assert_eq!(state.run_id, Some(apply));
    assert_eq!(state.resources, ["null_resource.this"]);
    assert_eq!(state.outputs["value"]["value"], "v1");
    // The run is over: the worker revoked its credential already.
    assert_eq!(
        store.revoke_state_credentials(apply).await.expect("revoke"),
        0
    );

    let replan = store
        .enqueue(&[enqueue(RunKind::Plan, None)])
        .await
        .expect("enqueue plan")[0];
    let replanned = settled(replan).await;
    assert_eq!(
        replanned.status,
        RunStatus::Succeeded,
        "{}",
        logs(replan).await
    );
    let summary = replanned.change_summary().expect("summary");
    assert_eq!(
        (summary.add, summary.change, summary.destroy),
        (0, 0, 0),
        "the second plan read the state back: {}",
        logs(replan).await
    );
    let log = logs(replan).await;
    assert!(!log.contains("TF_HTTP_PASSWORD="), "{log}");
    app.stop().await;
}
