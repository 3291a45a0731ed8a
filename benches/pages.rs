//! The dashboard at scale: the stacks page (its first page of 200, and filtered by state), a
//! stack's page, and `GET /api/v1/stacks`, with 10,000 stacks registered and a history of
//! finished plans each (20 resource changes in each summary), on SQLite (or PostgreSQL with
//! BENCH_DATABASE=postgres and TIDEMARK_TEST_POSTGRES_URL); and the runs list, whole and of
//! one stack, over that history. Prints the median, p95 and worst answer time of each over HTTP on loopback.
//! The target is 100 ms.
//!
//! Run: `cargo bench --bench pages` (BENCH_STACKS sets the number of stacks, default 10000;
//! BENCH_ITERS the requests per page, default 20; BENCH_HISTORY the plans per stack, default 5).

#[path = "../tests/it/support.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tidemark::api::{Access, AppState};
use tidemark::crypto::PlanKey;
use tidemark::store::{NewRun, RunKind, StackRecord, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let stacks = env("BENCH_STACKS", 10_000);
    let iters = env("BENCH_ITERS", 20);
    let history = env("BENCH_HISTORY", 5).max(1);
    tidemark::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let db = if std::env::var("BENCH_DATABASE").as_deref() == Ok("postgres") {
            support::TestDb::postgres()
                .await
                .expect("BENCH_DATABASE=postgres needs TIDEMARK_TEST_POSTGRES_URL")
        } else {
            support::TestDb::sqlite()
        };
        let store = Store::open(&db.url).await.expect("store");
        let started = Instant::now();
        seed(&store, &db.url, stacks, history).await;
        println!(
            "seeded {stacks} stacks with {history} finished plans each in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let state = AppState {
            store: store.clone(),
            nudges: Arc::new(HashMap::new()),
            repos: Arc::new(Vec::new()),
            webhook_secret: None,
            work: Arc::new(tokio::sync::Notify::new()),
            key: PlanKey::generate(),
            access: Arc::new(Access {
                open_read: true,
                ..Access::default()
            }),
            pulls: Arc::new(HashMap::new()),
            metrics_per_stack: 0,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(
                listener,
                tidemark::api::router(state)
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .expect("serve")
        });
        let mut times: Vec<f64> = Vec::with_capacity(iters);
        for _ in 0..iters {
            let started = Instant::now();
            let badges = store
                .stack_badges(&tidemark::store::StackFilter::default())
                .await
                .expect("stack badges");
            assert_eq!(badges.len(), stacks);
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "Store::stack_badges (every stack's state, which the stacks page and its JSON twin read): \
             median {:.1} ms",
            times[times.len() / 2]
        );
        let client = reqwest::Client::new();
        let middle_path = format!("stacks/g{:03}/s{:05}", (stacks / 2) / 100, stacks / 2);
        let middle = format!("/stacks/bench/{middle_path}");
        let middle_runs = format!("/api/v1/runs?repo=bench&stack={middle_path}");
        let runs_page = format!("/runs?stack={middle_path}");
        for path in [
            "/stacks",
            "/stacks?state=changes_pending&q=s09",
            middle.as_str(),
            "/api/v1/stacks",
            "/api/v1/runs",
            middle_runs.as_str(),
            runs_page.as_str(),
        ] {
            let mut times = Vec::with_capacity(iters);
            let mut bytes = 0;
            for _ in 0..iters {
                let started = Instant::now();
                let response = client
                    .get(format!("http://{addr}{path}"))
                    .send()
                    .await
                    .expect("GET");
                assert!(response.status().is_success(), "{path}: {}", response.status());
                bytes = response.bytes().await.expect("body").len();
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).min(times.len()) - 1];
            println!(
                "{path}: median {:.1} ms, p95 {p95:.1} ms, worst {:.1} ms ({} KiB, {stacks} stacks)",
                times[times.len() / 2],
                times[times.len() - 1],
                bytes / 1024
            );
        }
    });
}

/// Registers `count` stacks and gives each `history` finished plans with a change summary.
async fn seed(store: &Store, url: &str, count: usize, history: usize) {
    let repo = store
        .upsert_repo("bench", "file:///bench", "main", None)
        .await
        .expect("repo");
    let path = |i: usize| format!("stacks/g{:03}/s{i:05}", i / 100);
    let records: Vec<StackRecord> = (0..count)
        .map(|i| StackRecord {
            path: path(i),
            name: path(i),
            runner: None,
            auto_apply: false,
            tags: vec![format!("team-{}", i % 10)],
            drift_schedule: None,
            drift_remediation: Default::default(),
            environment: None,
            depends_on: if i % 100 == 0 {
                Vec::new()
            } else {
                vec![path(i - i % 100)]
            },
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
            commit: "c".repeat(40),
            kind: RunKind::Plan,
            reason: Some("added".into()),
            after: Vec::new(),
            plan_run: None,
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        })
        .collect();
    store.enqueue(&runs).await.expect("enqueue");
    // Queueing and finishing 10,000 runs at a time through the store would take minutes: a
    // statement copies the first round as the older history, another finishes them all.
    let pool = Raw::connect(url).await;
    for _ in 1..history {
        pool.exec(
            "INSERT INTO runs (repo_id, stack_path, commit_sha, kind, status, reason, created_at) \
             SELECT repo_id, stack_path, commit_sha, kind, status, reason, created_at FROM runs \
             WHERE id <= $1",
            Arg::Int(count as i64),
        )
        .await;
    }
    let resources: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({
                "address": format!("module.app.aws_instance.web[{i}]"), "type": "aws_instance",
                "name": "web", "actions": ["update"], "action": "update", "replace": false,
            })
        })
        .collect();
    let summary = serde_json::json!({
        "has_changes": true, "summary": { "add": 0, "change": 20, "destroy": 0, "replace": 0 },
        "resources": resources, "outputs": [],
    });
    pool.exec(
        "UPDATE runs SET status = 'succeeded', started_at = created_at, finished_at = created_at, \
         exit_code = 2, summary = $1, changes = 20",
        Arg::Text(summary.to_string()),
    )
    .await;
    // PostgreSQL's autovacuum would analyse the tables a minute later; the bench does not
    // wait for it. (SQLite keeps no statistics unless asked, and Tidemark never asks.)
    if let Raw::Postgres(pool) = &pool {
        sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
    }
}

/// A pool of either database, for the seeding statements the store has no method for.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

enum Arg {
    Int(i64),
    Text(String),
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        if url.starts_with("postgres") {
            Raw::Postgres(sqlx::PgPool::connect(url).await.expect("pool"))
        } else {
            Raw::Sqlite(sqlx::SqlitePool::connect(url).await.expect("pool"))
        }
    }

    async fn exec(&self, sql: &str, arg: Arg) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match (self, arg) {
            (Raw::Sqlite(pool), Arg::Int(v)) => {
                sqlx::query(sql).bind(v).execute(pool).await.map(drop)
            }
            (Raw::Sqlite(pool), Arg::Text(v)) => {
                sqlx::query(sql).bind(v).execute(pool).await.map(drop)
            }
            (Raw::Postgres(pool), Arg::Int(v)) => {
                sqlx::query(sql).bind(v).execute(pool).await.map(drop)
            }
            (Raw::Postgres(pool), Arg::Text(v)) => {
                sqlx::query(sql).bind(v).execute(pool).await.map(drop)
            }
        }
        .expect("seeding statement");
    }
}
