//! Bounded growth: the size of the SQLite file after 100,000 finished runs (100 stacks, each
//! run with 10 log lines and a stored plan of 2 KiB encrypted and 4 KiB JSON), without
//! retention and after a sweep with `runs = "180d"`, `logs = "30d"`, `artifacts = "14d"` run
//! as if 200 days had passed. Prints the sizes, what the sweep removed and how long it took.
//!
//! Run: `cargo bench --bench retention` (BENCH_RUNS sets the number of runs, default 100000).

use std::time::{Duration, Instant};

use chrono::Utc;
use tidemark::store::{Ages, NewRun, RunKind, StackRecord, Store};

const DAY: Duration = Duration::from_secs(86_400);
const STACKS: usize = 100;

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tidemark.db");
        let url = format!("sqlite://{}", file.display());
        let store = Store::open(&url).await.expect("store");
        let started = Instant::now();
        seed(&store, &url, runs).await;
        let before = size(&url, &file).await;
        println!(
            "seeded {runs} finished runs over {STACKS} stacks in {:.1} s: {:.1} MiB ({:.1} MiB after VACUUM)",
            started.elapsed().as_secs_f64(),
            before.0,
            before.1
        );
        let ages = Ages {
            runs: Some(180 * DAY),
            logs: Some(30 * DAY),
            artifacts: Some(14 * DAY),
        };
        let started = Instant::now();
        let swept = store
            .sweep(ages, Utc::now() + chrono::Duration::days(200))
            .await
            .expect("sweep");
        let took = started.elapsed();
        let after = size(&url, &file).await;
        println!(
            "retention sweep in {:.2} s removed {} runs, {} log lines, {} plans: {:.1} MiB ({:.1} MiB after VACUUM)",
            took.as_secs_f64(),
            swept.runs,
            swept.log_lines,
            swept.artifacts,
            after.0,
            after.1
        );
        let second = Instant::now();
        let again = store
            .sweep(ages, Utc::now() + chrono::Duration::days(200))
            .await
            .expect("sweep again");
        println!(
            "a second sweep in {:.3} s removed {} runs",
            second.elapsed().as_secs_f64(),
            again.runs
        );
    });
}

/// The file's size, then its size after `VACUUM` (a sweep frees pages for reuse; only a
/// vacuum gives them back to the disk), in MiB.
async fn size(url: &str, file: &std::path::Path) -> (f64, f64) {
    let mib =
        |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    let pool = sqlx::SqlitePool::connect(url).await.expect("pool");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    let raw = mib(file);
    sqlx::query("VACUUM").execute(&pool).await.expect("vacuum");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    pool.close().await;
    (raw, mib(file))
}

async fn seed(store: &Store, url: &str, count: usize) {
    let repo = store
        .upsert_repo("bench", "file:///bench", "main", None)
        .await
        .expect("repo");
    let path = |i: usize| format!("stacks/s{:03}", i % STACKS);
    let records: Vec<StackRecord> = (0..STACKS)
        .map(|i| StackRecord {
            path: path(i),
            name: path(i),
            runner: None,
            auto_apply: false,
            tags: Vec::new(),
            drift_schedule: None,
            drift_remediation: Default::default(),
            environment: None,
            depends_on: Vec::new(),
        })
        .collect();
    store
        .sync_stacks(repo, &"c".repeat(40), &records)
        .await
        .expect("stacks");
    let runs: Vec<NewRun> = (0..count)
        .map(|i| NewRun {
            repo_id: repo,
            stack: path(i),
            commit: format!("{i:040x}"),
            kind: RunKind::Plan,
            reason: Some("file main.tf".into()),
            after: Vec::new(),
            plan_run: None,
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        })
        .collect();
    for chunk in runs.chunks(5_000) {
        store.enqueue(chunk).await.expect("enqueue");
    }
    // Finishing 100,000 runs through claims would take long: plain statements do it, with
    // the log lines and plans a real plan leaves.
    let pool = sqlx::SqlitePool::connect(url).await.expect("pool");
    for sql in [
        "UPDATE runs SET status = 'succeeded', started_at = created_at, finished_at = created_at, \
         exit_code = 2, summary = '{\"has_changes\":true,\"summary\":{\"add\":1,\"change\":0,\"destroy\":0,\"replace\":0}}'",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
         INSERT INTO run_logs (run_id, step, stream, text, created_at) \
         SELECT r.id, 'plan', 'stdout', 'null_resource.app[' || n.i || ']: Refreshing state... [id=' || hex(randomblob(8)) || ']', r.created_at \
         FROM runs r, n",
        "INSERT INTO plan_artifacts (run_id, digest, binding, plan_encrypted, plan_json, created_at) \
         SELECT id, hex(randomblob(32)), hex(randomblob(32)), randomblob(2048), randomblob(4096), created_at FROM runs",
    ] {
        sqlx::query(sql).execute(&pool).await.expect("seed");
    }
    pool.close().await;
}
