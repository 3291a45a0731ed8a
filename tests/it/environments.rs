//! Environments end to end, on the real binary with real terraform: one stack directory with
//! `staging` and `prod` environments is two instances. One commit plans both, each with its
//! own variable file and variable sets; a change to `env/prod.tfvars` plans `@prod` only;
//! `@staging` auto-applies while `@prod` waits for approval; each keeps its own state, and a
//! change to prod's state outside git alerts Slack for `@prod` only. And a
//! database written by the release before environments migrates with its runs and state
//! versions intact.

use std::path::{Path, PathBuf};

use tidemark::store::{Run, RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, ServeProcess, TestDb, Toolchain, eventually};

const MAIN_TF: &str = r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
variable "size" {
  type = number
}
variable "region" {
  type    = string
  default = "default-region"
}
resource "null_resource" "this" {
  triggers = { size = var.size, region = var.region }
}
output "size" {
  value = var.size
}
"#;

const STACK_HCL: &str = r#"stack {
  name = "app"
}
environment "staging" {
  var_files  = ["env/staging.tfvars"]
  auto_apply = true
}
environment "prod" {
  var_files = ["env/prod.tfvars"]
  tags      = ["prod"]
}
"#;

fn config(dir: &Path, repo_url: &str) -> PathBuf {
    let text = format!(
        r#"listen   = "127.0.0.1:0"
data_dir = "{data}"
workers  = 2

{runner}
repo "infra" {{
  url           = "{repo_url}"
  poll_interval = "1s"
}}

variables "prod-region" {{
  environments = ["prod"]
  terraform    = {{ region = "eu-prod-1" }}
}}
"#,
        data = dir.join("data").display(),
        runner = Toolchain::get().runner_override(),
    );
    let path = dir.join("tidemark.hcl");
    std::fs::write(&path, text).expect("write config");
    path
}

fn triggers(store_artifact: &tidemark::store::StoredArtifact) -> (String, String) {
    let raw = tidemark::crypto::decompress(&store_artifact.plan_json).expect("gunzip");
    let plan: serde_json::Value = serde_json::from_slice(&raw).expect("plan json");
    let values = &plan["planned_values"]["root_module"]["resources"][0]["values"]["triggers"];
    let get = |k: &str| values[k].as_str().unwrap_or_default().to_string();
    (get("size"), get("region"))
}

/// Waits until `done` holds of the runs, every run is final, and returns them.
async fn runs_until(
    store: &Store,
    log: &Path,
    what: &str,
    done: impl Fn(&[Run]) -> bool,
) -> Vec<Run> {
    let mut runs = Vec::new();
    for _ in 0..2400 {
        runs = store.runs(&RunFilter::default()).await.expect("runs");
        if done(&runs) && runs.iter().all(|r| r.status.is_final()) {
            return runs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: {runs:#?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn of<'a>(runs: &'a [Run], stack: &str, kind: RunKind) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| r.stack == stack && r.kind == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_environment_plans_applies_and_keeps_state_as_its_own_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", MAIN_TF)
        .write("stacks/app/stack.hcl", STACK_HCL)
        .write("stacks/app/env/staging.tfvars", "size = 1\n")
        .write("stacks/app/env/prod.tfvars", "size = 3\n");
    git.commit_and_push("app in two environments");
    let config = config(dir.path(), &git.url());
    let log = dir.path().join("serve.log");
    let serve = ServeProcess::start(&config, &[], &log);
    let db_url = format!("sqlite://{}", dir.path().join("data/tidemark.db").display());
    let store = eventually(60, "the database", || async {
        Store::open(&db_url).await.ok()
    })
    .await;

    // One commit: a plan of each instance; staging auto-applies, prod waits.
    let runs = runs_until(&store, &log, "two plans and the staging apply", |runs| {
        of(runs, "stacks/app@staging", RunKind::Apply).len() == 1
            && of(runs, "stacks/app@prod", RunKind::Plan).len() == 1
    })
    .await;
    let staging = of(&runs, "stacks/app@staging", RunKind::Plan)[0];
    let prod = of(&runs, "stacks/app@prod", RunKind::Plan)[0];
    for run in [staging, prod] {
        assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    }
    let artifact = |id: i64| {
        let store = store.clone();
        async move { store.artifact(id).await.expect("artifact").expect("stored") }
    };
    // Each plan read its own variable file; only prod got the prod variable set.
    assert_eq!(
        triggers(&artifact(staging.id).await),
        ("1".into(), "default-region".into())
    );
    assert_eq!(
        triggers(&artifact(prod.id).await),
        ("3".into(), "eu-prod-1".into())
    );
    assert_eq!(
        of(&runs, "stacks/app@staging", RunKind::Apply)[0].status,
        RunStatus::Succeeded
    );
    assert!(
        of(&runs, "stacks/app@prod", RunKind::Apply).is_empty(),
        "prod has no auto_apply: its plan waits for approval"
    );
    assert!(
        runs.iter().all(|r| r.stack != "stacks/app"),
        "a stack with environments has no default instance: {runs:#?}"
    );
    let staging_states = store
        .state_versions("infra", "stacks/app@staging")
        .await
        .expect("states");
    assert_eq!(staging_states.len(), 1, "staging's apply wrote its state");
    assert!(
        store
            .state_versions("infra", "stacks/app@prod")
            .await
            .expect("states")
            .is_empty()
    );
    let recorded = store.stacks(Some("infra")).await.expect("stacks");
    let envs: Vec<(&str, Option<&str>)> = recorded
        .iter()
        .map(|s| (s.path.as_str(), s.environment.as_deref()))
        .collect();
    assert_eq!(
        envs,
        [
            ("stacks/app@prod", Some("prod")),
            ("stacks/app@staging", Some("staging"))
        ]
    );

    // A change to prod's variable file plans prod only.
    git.write("stacks/app/env/prod.tfvars", "size = 5\n");
    git.commit_and_push("prod grows");
    let runs = runs_until(&store, &log, "the second prod plan", |runs| {
        of(runs, "stacks/app@prod", RunKind::Plan).len() == 2
    })
    .await;
    assert_eq!(of(&runs, "stacks/app@staging", RunKind::Plan).len(), 1);
    let newest = of(&runs, "stacks/app@prod", RunKind::Plan)
        .into_iter()
        .max_by_key(|r| r.id)
        .expect("a plan");
    assert_eq!(newest.status, RunStatus::Succeeded);
    assert_eq!(
        triggers(&artifact(newest.id).await),
        ("5".into(), "eu-prod-1".into())
    );

    // Approving prod's plan applies it into prod's own state.
    tidemark::engine::apply::approve(&store, newest.id, "test", None)
        .await
        .expect("approve");
    let runs = runs_until(&store, &log, "the prod apply", |runs| {
        of(runs, "stacks/app@prod", RunKind::Apply).len() == 1
    })
    .await;
    assert_eq!(
        of(&runs, "stacks/app@prod", RunKind::Apply)[0].status,
        RunStatus::Succeeded
    );
    let prod_states = store
        .state_versions("infra", "stacks/app@prod")
        .await
        .expect("states");
    assert_eq!(prod_states.len(), 1);
    let staging_after = store
        .state_versions("infra", "stacks/app@staging")
        .await
        .expect("states");
    assert_eq!(
        staging_after.len(),
        1,
        "prod's apply left staging's state alone"
    );
    assert_ne!(prod_states[0].lineage, staging_after[0].lineage);

    // Prod's state changes outside git, as an apply from elsewhere would leave it. With drift
    // checks every second and a Slack webhook, prod's drift alerts for `@prod` only.
    serve.terminate();
    let key =
        tidemark::crypto::PlanKey::load(None, &dir.path().join("data/plan.key")).expect("plan key");
    let raw = store
        .state_blob("infra", "stacks/app@prod", None, &key)
        .await
        .expect("state")
        .expect("prod has a state");
    let mut state: serde_json::Value = serde_json::from_slice(&raw).expect("state json");
    state["serial"] = (state["serial"].as_i64().expect("serial") + 1).into();
    state["resources"][0]["instances"][0]["attributes"]["triggers"]["size"] = "99".into();
    let changed = serde_json::to_vec(&state).expect("json");
    store
        .record_state("infra", "stacks/app@prod", None, &changed, &key)
        .await
        .expect("the changed state");
    let (slack, rx) = crate::notify::receiver(&[crate::notify::Answer::Ok; 8]).await;
    let text = std::fs::read_to_string(&config).expect("config");
    let text = format!("slack_webhook_env = \"TEST_SLACK_URL\"\n{text}").replace(
        "poll_interval = \"1s\"",
        "poll_interval = \"1s\"\n  drift_schedule = \"* * * * * *\"",
    );
    std::fs::write(&config, text).expect("write config");
    let _serve = ServeProcess::start(&config, &[("TEST_SLACK_URL", slack.as_str())], &log);
    let messages = || -> Vec<String> {
        let rx = rx.lock().expect("lock");
        rx.requests.iter().map(|r| r.0.to_string()).collect()
    };
    eventually(
        180,
        "prod's drift alert and staging checked in sync",
        || async {
            let statuses = store.drift_statuses().await.ok()?;
            let state_of = |stack: &str| {
                statuses
                    .iter()
                    .find(|s| s.stack == stack)
                    .map(|s| s.state.clone())
            };
            (state_of("stacks/app@prod").as_deref() == Some("drifted")
                && state_of("stacks/app@staging").as_deref() == Some("in_sync")
                && !messages().is_empty())
            .then_some(())
        },
    )
    .await;
    // A few more checks of both, then every message is prod's.
    let checks = |stack: &'static str| {
        let store = store.clone();
        async move {
            store
                .drift_checks("infra", stack)
                .await
                .expect("checks")
                .len()
        }
    };
    let staging_checks = checks("stacks/app@staging").await;
    eventually(60, "two more checks of staging", || async {
        (checks("stacks/app@staging").await >= staging_checks + 2).then_some(())
    })
    .await;
    let sent = messages();
    assert_eq!(sent.len(), 1, "one alert for one drift: {sent:#?}");
    assert!(sent[0].contains("stacks/app@prod"), "{}", sent[0]);
    assert!(!sent[0].contains("@staging"), "{}", sent[0]);
}

/// A database as the release before environments left it (migrations 1 to 9, rows written
/// with that schema) is migrated by the current binary, and its stack, run and state
/// version are still listed, as the stack's default instance.
async fn upgrade(db: &TestDb) {
    let old = Store::connect(&db.url).await.expect("connect");
    old.migrate_through(9).await.expect("old migrations");
    let repo_id = old
        .upsert_repo("infra", "file:///nowhere", "main", None)
        .await
        .expect("repo");
    // The stack row as the old `sync_stacks` wrote it (no environment column yet).
    let insert = "INSERT INTO stacks (repo_id, path, name, updated_at) \
                  VALUES ($1, 'stacks/app', 'app', $2)";
    let now = chrono::Utc::now();
    use sqlx::Connection;
    if db.url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("sqlite");
        sqlx::query(insert)
            .bind(repo_id)
            .bind(now)
            .execute(&mut conn)
            .await
            .expect("insert");
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url)
            .await
            .expect("postgres");
        sqlx::query(insert)
            .bind(repo_id)
            .bind(now)
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    let ids = old
        .enqueue(&[tidemark::store::NewRun {
            repo_id,
            stack: "stacks/app".into(),
            commit: "abc123".into(),
            kind: RunKind::Plan,
            reason: Some("added".into()),
            after: Vec::new(),
            plan_run: None,
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        }])
        .await
        .expect("enqueue");
    let key = tidemark::crypto::PlanKey::generate();
    let state = br#"{"version":4,"terraform_version":"1.0.3","serial":1,"lineage":"old-lineage","outputs":{},"resources":[]}"#;
    old.record_state("infra", "stacks/app", None, state, &key)
        .await
        .expect("old state version");
    drop(old);

    let store = Store::open(&db.url).await.expect("open migrates");
    let runs = store.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].id, runs[0].stack.as_str()), (ids[0], "stacks/app"));
    let stacks = store.stacks(Some("infra")).await.expect("stacks");
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].path, "stacks/app");
    assert_eq!(stacks[0].environment, None);
    let versions = store
        .state_versions("infra", "stacks/app")
        .await
        .expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].lineage, "old-lineage");
    let raw = store
        .state_blob("infra", "stacks/app", None, &key)
        .await
        .expect("blob")
        .expect("the old state");
    assert_eq!(raw, state.to_vec());
}

#[tokio::test]
async fn a_database_from_before_environments_migrates_on_sqlite() {
    upgrade(&TestDb::sqlite()).await;
}

#[tokio::test]
async fn a_database_from_before_environments_migrates_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        upgrade(&db).await;
    }
}
