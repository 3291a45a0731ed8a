//! Drift end to end with real terraform 1.0.3: checks of an applied stack whose state another
//! copy changes out of band, assessed, carried through the state machine, rendered and posted
//! to a local Slack receiver. The first test plays the engine's part (running terraform
//! directly, keeping the record in memory) to pin the building blocks; the next ones go through
//! the wiring: drift runs in the store's queue, a worker stepped by hand, the outbox sender, and
//! the scheduler inside the service.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tidemark::crypto::PlanKey;
use tidemark::drift::{CheckResult, DriftRecord, DriftState, assess, transition};
use tidemark::engine::{OutboxSender, Worker, WorkerContext};
use tidemark::notify::{DriftAlert, OutboxPolicy, SlackNotifier, render};
use tidemark::runner::{Redactor, RunnerSet, RunnerSource, SandboxMode, redact_plan_json};
use tidemark::store::{NewRun, RunKind, RunStatus, StackRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::notify::{Answer, fast_policy, receiver};
use crate::support::{GitFixture, TestDb, Toolchain, eventually, null_stack};

/// Two working copies of one stack sharing a local state file: `ours` is what Tidemark
/// checks, `theirs` is someone applying from elsewhere.
struct Copies {
    dir: tempfile::TempDir,
}

pub(crate) const STACK: &str = r#"terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
  backend "local" { path = "../shared.tfstate" }
}

variable "v" {
  default = "one"
}

resource "null_resource" "this" {
  triggers = { value = var.v }
}

resource "null_resource" "other" {
  triggers = { value = "fixed" }
}

output "value" {
  value = null_resource.this.triggers.value
}
"#;

impl Copies {
    fn new() -> Self {
        let copies = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for name in ["ours", "theirs"] {
            std::fs::create_dir_all(copies.path(name)).expect("mkdir");
            std::fs::write(copies.path(name).join("main.tf"), STACK).expect("write main.tf");
            terraform(&copies.path(name), &["init", "-no-color", "-input=false"]);
        }
        copies
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One drift check of `ours`: the plan and a refresh-only plan, both redacted as the
    /// runner would, then assessed.
    fn check(&self) -> CheckResult {
        let ours = self.path("ours");
        let plan = plan_json(&ours, &[]);
        let refresh = plan_json(&ours, &["-refresh-only"]);
        assess(&plan, Some(&refresh), true)
    }
}

pub(crate) fn terraform(dir: &Path, args: &[&str]) -> Vec<u8> {
    Toolchain::get().run(dir, args)
}

fn plan_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "-no-color", "-input=false", "-out=drift.tfplan"];
    args.extend_from_slice(extra);
    terraform(dir, &args);
    let json = terraform(dir, &["show", "-json", "drift.tfplan"]);
    let mut plan: Value = serde_json::from_slice(&json).expect("plan JSON");
    redact_plan_json(&mut plan, &mut Redactor::default());
    plan
}

/// Plays the engine for one check: assess, transition, and post the message it calls for.
struct Engine {
    record: Option<DriftRecord>,
    notifier: SlackNotifier,
}

impl Engine {
    async fn check(&mut self, copies: &Copies) -> DriftState {
        let t = transition(self.record.as_ref(), &copies.check(), Utc::now());
        let alert = DriftAlert::for_transition(&t, "acme/infra", "ours", "0123456789abcdef", None);
        if let Some(alert) = alert {
            let payload = render(&alert, 10);
            self.notifier.send(&payload).await.expect("delivered");
        }
        let state = t.record.state;
        self.record = Some(t.record);
        state
    }
}

#[tokio::test]
async fn out_of_band_changes_send_one_message_each_way() {
    let copies = Copies::new();
    let (url, rx) = receiver(&[Answer::Ok]).await;
    let received = || -> Vec<Value> {
        let rx = rx.lock().expect("lock");
        rx.requests.iter().map(|r| r.0.clone()).collect()
    };
    let mut engine = Engine {
        record: None,
        notifier: SlackNotifier::new(&url, fast_policy()).expect("notifier"),
    };
    terraform(
        &copies.path("ours"),
        &["apply", "-auto-approve", "-no-color", "-input=false"],
    );
    assert_eq!(engine.check(&copies).await, DriftState::InSync);
    assert_eq!(received().len(), 0);

    // Someone applies another value from their own copy, sharing the state.
    let theirs = copies.path("theirs");
    let apply_theirs = |value: &str| {
        terraform(
            &theirs,
            &[
                "apply",
                "-auto-approve",
                "-no-color",
                "-input=false",
                &format!("-var=v={value}"),
            ],
        )
    };
    apply_theirs("two");
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    let messages = received();
    assert_eq!(messages.len(), 1);
    let text = messages[0].to_string();
    assert!(text.contains("Drift detected"), "{text}");
    assert!(text.contains("null_resource.this"), "{text}");
    assert!(text.contains("replace"), "{text}");
    assert!(text.contains("changed outside git"), "{text}");
    assert!(!text.contains("null_resource.other"), "{text}");

    // A second check with the same drift sends nothing.
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    assert_eq!(
        received().len(),
        1,
        "one message per drift, not one per check"
    );

    // Undoing it resolves the drift: one message.
    apply_theirs("one");
    assert_eq!(engine.check(&copies).await, DriftState::InSync);
    let messages = received();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("back in sync"))
    );

    // `terraform state rm` is drift too: the plan wants to create the resource again.
    terraform(
        &theirs,
        &["state", "rm", "-no-color", "null_resource.other"],
    );
    assert_eq!(engine.check(&copies).await, DriftState::Drifted);
    let messages = received();
    assert_eq!(messages.len(), 3);
    let text = messages[2].to_string();
    assert!(text.contains("`null_resource.other` create"), "{text}");
    assert!(text.contains("1 resource"), "{text}");
    let open = engine.record.and_then(|r| r.open).expect("open drift");
    assert_eq!(open.drift.resources.len(), 1);
}

/// A stack whose state lives outside the workspace, so it survives from one run to the next:
/// until Tidemark's own state backend and apply gate land, the test keeps the state in a local
/// backend at an absolute path (which is why the worker runs with `sandbox = "none"`: the
/// sandbox only lets a step write its own workspace).
pub(crate) fn shared_state_stack(state: &Path) -> String {
    STACK.replace("../shared.tfstate", &state.display().to_string())
}

/// Records an approval of a plan run's plan, as `tidemark approve` does.
pub(crate) async fn approve(store: &Store, plan: i64) {
    let digest = store
        .artifact(plan)
        .await
        .expect("artifact")
        .expect("a stored plan")
        .digest;
    store
        .add_approval(
            plan,
            &digest,
            tidemark::gate::ApprovalKind::Approve,
            "test",
            None,
        )
        .await
        .expect("approve");
}

/// The engine's parts for one repository, driven by hand: a worker stepped one run at a time
/// and an outbox sender stepped one message at a time.
struct Rig {
    store: Store,
    repo_id: i64,
    worker: Worker,
    sender: OutboxSender,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(db: &TestDb, git: &GitFixture, head: &str, slack_url: &str) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&db.url).await.expect("store");
        let repo_id = store
            .upsert_repo("infra", &git.url(), "main", None)
            .await
            .expect("repo");
        store
            .sync_stacks(
                repo_id,
                head,
                &[StackRecord {
                    path: "stacks/app".into(),
                    name: "app".into(),
                    runner: None,
                    drift_schedule: None,
                    drift_remediation: Default::default(),
                    environment: None,
                    auto_apply: false,
                    tags: Vec::new(),
                    depends_on: Vec::new(),
                }],
            )
            .await
            .expect("sync stacks");
        let runners = RunnerSet::load(&[RunnerSource::new(
            "test.hcl",
            Toolchain::get().runner_override(),
        )])
        .expect("runners");
        let outbox = Arc::new(tokio::sync::Notify::new());
        let ctx = Arc::new(WorkerContext {
            provider_cache: None,
            store: store.clone(),
            runners,
            sandbox: SandboxMode::None,
            key: PlanKey::generate(),
            workspaces: dir.path().join("workspaces"),
            // The bare remote holds the commits: it stands in for the mirror.
            mirrors: HashMap::from([("infra".to_string(), git.remote())]),
            nudges: Default::default(),
            lease: Duration::from_secs(60),
            work: Arc::new(tokio::sync::Notify::new()),
            grace: Duration::from_secs(5),
            exe: env!("CARGO_BIN_EXE_tidemark").into(),
            policies: Default::default(),
            drift: Some(tidemark::engine::DriftHook {
                base_url: "http://tidemark.test".into(),
                notify: true,
                outbox: outbox.clone(),
                checked: Arc::new(tokio::sync::Notify::new()),
            }),
            variables: Vec::new(),
            indexes: Default::default(),
            pr_refresh: Default::default(),
        });
        let sender = OutboxSender {
            store: store.clone(),
            notifier: SlackNotifier::new(slack_url, fast_policy()).expect("notifier"),
            policy: OutboxPolicy::default(),
            name: "test#outbox".into(),
            wake: outbox,
            lease: Duration::from_secs(60),
        };
        Rig {
            store,
            repo_id,
            worker: Worker {
                name: "test#0".into(),
                ctx,
            },
            sender,
            shutdown: CancellationToken::new(),
            _dir: dir,
        }
    }

    /// Runs the one queued run to its end and returns its final status.
    async fn step(&self, id: i64) -> RunStatus {
        assert!(
            self.worker.step(&self.shutdown).await.expect("worker step"),
            "nothing to run"
        );
        let run = self.store.run(id).await.expect("run");
        assert!(run.status.is_final(), "{run:?}");
        run.status
    }

    async fn enqueue(&self, kind: RunKind, commit: &str, plan_run: Option<i64>) -> i64 {
        // An apply goes through the gate when it runs: approve the plan it applies.
        if let Some(plan) = plan_run {
            approve(&self.store, plan).await;
        }
        let run = NewRun {
            repo_id: self.repo_id,
            stack: "stacks/app".into(),
            commit: commit.into(),
            kind,
            reason: Some("test".into()),
            after: Vec::new(),
            plan_run,
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        };
        self.store.enqueue(&[run]).await.expect("enqueue")[0]
    }

    /// One drift check through the queue and a worker; returns the recorded state.
    async fn check(&self) -> DriftState {
        let id = self
            .store
            .enqueue_drift("infra", "stacks/app", Utc::now(), "test check")
            .await
            .expect("enqueue drift")
            .expect("a drift run was queued");
        let status = self.step(id).await;
        assert_eq!(
            status,
            RunStatus::Succeeded,
            "{:?}",
            self.store.logs(id).await
        );
        let record = self
            .store
            .drift_record("infra", "stacks/app")
            .await
            .expect("record")
            .expect("the check was recorded");
        record.state
    }

    /// Sends every due outbox message.
    async fn deliver(&self) -> usize {
        let mut sent = 0;
        while self.sender.step().await.expect("outbox step") {
            sent += 1;
        }
        sent
    }
}

async fn drift_checks_through_the_engine(db: TestDb) {
    let state_dir = tempfile::tempdir().expect("tempdir");
    let state = state_dir.path().join("terraform.tfstate");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &shared_state_stack(&state));
    let head = git.commit_and_push("app with a shared state");
    let (url, rx) = receiver(&[Answer::Ok]).await;
    let received = || -> Vec<Value> {
        let rx = rx.lock().expect("lock");
        rx.requests.iter().map(|r| r.0.clone()).collect()
    };
    let rig = Rig::new(&db, &git, &head, &url).await;

    // Tidemark plans and applies the head, so it is applied.
    let plan = rig.enqueue(RunKind::Plan, &head, None).await;
    assert_eq!(rig.step(plan).await, RunStatus::Succeeded);
    let apply = rig.enqueue(RunKind::Apply, &head, Some(plan)).await;
    assert_eq!(
        rig.step(apply).await,
        RunStatus::Succeeded,
        "{:?}",
        rig.store.logs(apply).await
    );
    assert!(
        rig.store
            .head_applied("infra", "stacks/app", &head)
            .await
            .expect("applied")
    );

    assert_eq!(rig.check().await, DriftState::InSync);
    assert_eq!(rig.deliver().await, 0);

    // Someone applies another value from their own copy sharing the state file.
    let theirs = tempfile::tempdir().expect("tempdir");
    std::fs::write(theirs.path().join("main.tf"), shared_state_stack(&state)).expect("write");
    terraform(theirs.path(), &["init", "-no-color", "-input=false"]);
    let apply_theirs = |value: &str| {
        let var = format!("-var=v={value}");
        terraform(
            theirs.path(),
            &["apply", "-auto-approve", "-no-color", "-input=false", &var],
        )
    };
    apply_theirs("two");
    assert_eq!(rig.check().await, DriftState::Drifted);
    assert_eq!(rig.deliver().await, 1);
    let messages = received();
    assert_eq!(messages.len(), 1);
    let text = messages[0].to_string();
    assert!(text.contains("Drift detected"), "{text}");
    assert!(text.contains("`null_resource.this` replace"), "{text}");
    assert!(text.contains("changed outside git"), "{text}");
    assert!(text.contains(&head[..12]), "{text}");
    assert!(text.contains("http://tidemark.test/api/v1/runs/"), "{text}");
    assert!(!text.contains("null_resource.other"), "{text}");
    assert_eq!(messages[0]["blocks"][0]["type"], "header");

    // The same drift again: recorded, not sent.
    assert_eq!(rig.check().await, DriftState::Drifted);
    assert_eq!(rig.deliver().await, 0);
    assert_eq!(received().len(), 1, "one message per drift, not per check");

    // Undone: one "resolved" message.
    apply_theirs("one");
    assert_eq!(rig.check().await, DriftState::InSync);
    assert_eq!(rig.deliver().await, 1);
    let messages = received();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("back in sync")),
        "{}",
        messages[1]
    );

    let history = rig
        .store
        .drift_checks("infra", "stacks/app")
        .await
        .expect("history");
    let seen: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|c| (c.result.as_str(), c.notified.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("in_sync", None),
            ("drifted", Some("drifted")),
            ("drifted", None),
            ("in_sync", Some("resolved")),
        ]
    );
    assert!(history.iter().all(|c| c.commit == head));
    let outbox = rig.store.outbox().await.expect("outbox");
    let statuses: Vec<(&str, &str)> = outbox
        .iter()
        .map(|m| (m.kind.as_str(), m.status.as_str()))
        .collect();
    assert_eq!(statuses, [("drifted", "sent"), ("resolved", "sent")]);
    rig.store.close().await;
}

#[tokio::test]
async fn drift_checks_through_the_engine_on_sqlite() {
    drift_checks_through_the_engine(TestDb::sqlite()).await;
}

#[tokio::test]
async fn drift_checks_through_the_engine_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        drift_checks_through_the_engine(db).await;
    }
}

#[tokio::test]
async fn a_failed_drift_plan_is_an_error_that_keeps_the_open_drift() {
    let db = TestDb::sqlite();
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("a"));
    let head = git.commit_and_push("app");
    let (url, _rx) = receiver(&[Answer::Ok]).await;
    let rig = Rig::new(&db, &git, &head, &url).await;

    // Never applied: the plan creates the resource, so the head is "not yet applied".
    assert_eq!(rig.check().await, DriftState::Drifted);
    let status = &rig.store.drift_statuses().await.expect("status")[0];
    assert_eq!(status.cause.as_deref(), Some("not_yet_applied"));
    assert_eq!(status.resources.len(), 1);

    // A broken commit at the head: the check fails, the drift stays open, nothing is sent.
    git.write("stacks/app/main.tf", "resource \"null_resource\" {\n");
    let broken = git.commit_and_push("broken");
    rig.store
        .sync_stacks(
            rig.repo_id,
            &broken,
            &[StackRecord {
                path: "stacks/app".into(),
                name: "app".into(),
                runner: None,
                drift_schedule: None,
                drift_remediation: Default::default(),
                environment: None,
                auto_apply: false,
                tags: Vec::new(),
                depends_on: Vec::new(),
            }],
        )
        .await
        .expect("sync");
    let id = rig
        .store
        .enqueue_drift("infra", "stacks/app", Utc::now(), "test")
        .await
        .expect("enqueue")
        .expect("queued");
    assert_eq!(rig.step(id).await, RunStatus::Failed);
    let record = rig
        .store
        .drift_record("infra", "stacks/app")
        .await
        .expect("record")
        .expect("recorded");
    assert_eq!(record.state, DriftState::Error);
    assert!(record.open.is_some(), "the open drift is kept");
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("drift plan failed: step init failed")),
        "{:?}",
        record.error
    );
    assert_eq!(rig.deliver().await, 1, "only the first drift was announced");
}

#[tokio::test]
async fn the_scheduler_in_the_service_queues_drift_checks() {
    let git = GitFixture::new();
    git.write("stacks/a/main.tf", &null_stack("a1"))
        .write("stacks/a/stack.hcl", "stack {}\n")
        .write(
            "stacks/b/stack.hcl",
            "stack {\n  drift_schedule = \"0 0 0 1 1 *\"\n}\n",
        )
        .write("stacks/b/main.tf", &null_stack("b1"));
    git.commit_and_push("two stacks");
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("tempdir");
    // Every second for the repository; stack b keeps its own yearly schedule.
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{}\"\ndata_dir = \"{}\"\nworkers = 2\n\n{}\n\
         repo \"infra\" {{\n  url = \"{}\"\n  poll_interval = \"1s\"\n  drift_schedule = \"* * * * * *\"\n}}\n",
        db.url,
        dir.path().join("data").display(),
        Toolchain::get().runner_override(),
        git.url()
    );
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, &text).expect("write config");
    let mut config = tidemark::config::Config::parse(&file, &text, dir.path()).expect("config");
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = tidemark::app::App::start(config).await.expect("start");

    // The first commit's plans, then drift checks of stack a, recorded as drifted (never
    // applied) without anyone to tell.
    let status = eventually(120, "a recorded drift check of stacks/a", || async {
        let statuses = app.store.drift_statuses().await.expect("statuses");
        statuses.into_iter().find(|s| s.stack == "stacks/a")
    })
    .await;
    assert_eq!(status.state, "drifted");
    assert_eq!(status.cause.as_deref(), Some("not_yet_applied"));
    let filter = tidemark::store::RunFilter {
        kind: Some(RunKind::Drift),
        ..Default::default()
    };
    let drift_runs = app.store.runs(&filter).await.expect("runs");
    assert!(
        drift_runs.iter().all(|r| r.stack == "stacks/a"),
        "{drift_runs:#?}"
    );
    let live = drift_runs.iter().filter(|r| !r.status.is_final()).count();
    assert!(
        live <= 1,
        "at most one drift check of a stack in flight: {drift_runs:#?}"
    );
    assert!(
        drift_runs.iter().all(|r| r
            .reason
            .as_deref()
            .is_some_and(|t| t.starts_with("drift schedule"))),
        "{drift_runs:#?}"
    );
    assert!(app.store.outbox().await.expect("outbox").is_empty());
    app.stop().await;
}
