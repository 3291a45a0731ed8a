//! Dispatch throughput and orchestration overhead.
//!
//! 1. The queue alone: runs claimed and finished per second by 4 concurrent claimers, on SQLite
//!    and (when `TIDEMARK_TEST_POSTGRES_URL` is set) on PostgreSQL.
//! 2. A whole run through a worker with a no-op runner (a script that answers each step at
//!    once): claim, workspace export, the steps, log streaming, artifact, finish. The time per
//!    run is Tidemark's orchestration overhead, without and with the bubblewrap sandbox.
//!
//! Run: `cargo bench --bench dispatch` (BENCH_RUNS sets the queue size, default 2000).

#[path = "../tests/it/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::crypto::PlanKey;
use tidemark::engine::{Worker, WorkerContext};
use tidemark::runner::SandboxMode;
use tidemark::store::{NewRun, RunKind, RunOutcome, RunStatus, Store};
use tokio_util::sync::CancellationToken;

use support::{GitFixture, TestDb};

const LEASE: Duration = Duration::from_secs(60);

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sqlite = TestDb::sqlite();
        queue_throughput("sqlite", &sqlite.url, runs).await;
        match TestDb::postgres().await {
            Some(pg) => queue_throughput("postgres", &pg.url, runs).await,
            None => println!("queue postgres: skipped (TIDEMARK_TEST_POSTGRES_URL is unset)"),
        }
        orchestration(SandboxMode::None, 40).await;
        orchestration(SandboxMode::Bubblewrap, 40).await;
    });
}

fn plan(repo_id: i64, stack: String) -> NewRun {
    NewRun {
        repo_id,
        stack,
        commit: "c".repeat(40),
        kind: RunKind::Plan,
        reason: None,
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    }
}

async fn queue_throughput(backend: &str, url: &str, runs: usize) {
    let store = Store::open(url).await.expect("open store");
    let repo = store
        .upsert_repo("bench", "file:///bench", "main", None)
        .await
        .expect("repo");
    let batch: Vec<NewRun> = (0..runs)
        .map(|i| plan(repo, format!("stacks/s{:03}", i % 200)))
        .collect();
    let started = Instant::now();
    // Distinct commits per stack would supersede; one commit keeps every run queued.
    store.enqueue(&batch).await.expect("enqueue");
    let enqueue = started.elapsed();
    let started = Instant::now();
    let mut claimers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let done = RunOutcome {
                status: RunStatus::Succeeded,
                exit_code: Some(0),
                error: None,
                summary: None,
            };
            let name = format!("bench#{w}");
            let mut count = 0usize;
            let mut idle = 0;
            while idle < 3 {
                match store.claim(&name, LEASE).await.expect("claim") {
                    Some(run) => {
                        store.finish(run.id, &name, &done).await.expect("finish");
                        count += 1;
                        idle = 0;
                    }
                    None => idle += 1,
                }
            }
            count
        }));
    }
    let mut total = 0;
    for claimer in claimers {
        total += claimer.await.expect("join");
    }
    let elapsed = started.elapsed();
    assert_eq!(total, runs, "every run dispatched exactly once");
    println!(
        "queue {backend}: {runs} runs enqueued in {:.0} ms; claimed+finished by 4 workers in {:.2} s = {:.0} runs/s",
        enqueue.as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        runs as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}

async fn orchestration(sandbox: SandboxMode, runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let runners = support::noop_runners(dir.path());
    let git = GitFixture::new();
    for i in 0..runs {
        git.write(
            &format!("stacks/a{i}/main.tf"),
            "output \"x\" {\n  value = 1\n}\n",
        );
    }
    let commit = git.commit("bench");
    let db = TestDb::sqlite();
    let store = Store::open(&db.url).await.expect("store");
    let repo = store
        .upsert_repo("bench", &git.url(), "main", None)
        .await
        .expect("repo");
    let batch: Vec<NewRun> = (0..runs)
        .map(|i| NewRun {
            commit: commit.clone(),
            ..plan(repo, format!("stacks/a{i}"))
        })
        .collect();
    store.enqueue(&batch).await.expect("enqueue");
    let ctx = Arc::new(WorkerContext {
        provider_cache: None,
        store: store.clone(),
        exe: env!("CARGO_BIN_EXE_tidemark").into(),
        runners,
        sandbox,
        key: PlanKey::generate(),
        workspaces: dir.path().join("workspaces"),
        mirrors: HashMap::from([("bench".to_string(), git.work())]),
        nudges: Default::default(),
        lease: LEASE,
        work: Arc::new(tokio::sync::Notify::new()),
        grace: Duration::from_secs(5),
        policies: Default::default(),
        drift: None,
        variables: Vec::new(),
        indexes: Default::default(),
        pr_refresh: Default::default(),
    });
    let worker = Worker {
        name: "bench#0".into(),
        ctx,
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut done = 0;
    while worker.step(&shutdown).await.expect("step") {
        done += 1;
    }
    let elapsed = started.elapsed();
    let ok = store
        .runs(&tidemark::store::RunFilter {
            status: Some(RunStatus::Succeeded),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("runs")
        .len();
    println!(
        "worker, no-op runner, sandbox {:?}: {done} runs ({ok} succeeded) in {:.2} s = {:.1} ms per run",
        sandbox,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / done.max(1) as f64
    );
}
