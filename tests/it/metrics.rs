//! `/metrics` and the delivery metrics. A history of applies (a failed one, a revert, one an
//! operator marked failed, recoveries, a drift stretch) gives the DORA figures worked out by
//! hand, through the store, `GET /api/v1/dora` and `tidemark dora`, on SQLite and PostgreSQL.
//! And `/metrics` parses with a Prometheus text-format parser and moves as real runs happen.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tidemark::app::App;
use tidemark::config::Config;
use tidemark::store::{
    DeployedCommit, HistoryFilter, NewRun, RunKind, RunOutcome, RunStatus, Store,
};

use crate::support::{GitFixture, TestDb, Toolchain, eventually, null_stack};

fn config(dir: &Path, database: &str, extra: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndatabase = \"{database}\"\nsandbox = \"none\"\nworkers = 1\n{extra}",
        dir.join("data").display()
    );
    let file = dir.join("tidemark.hcl");
    std::fs::write(&file, &text).expect("config");
    tidemark::install_crypto_provider();
    let mut config = Config::parse(&file, &text, dir).expect("valid config");
    // Runs reach their state through this binary's state proxy.
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    config
}

fn apply(repo_id: i64, stack: &str) -> NewRun {
    NewRun {
        repo_id,
        stack: stack.into(),
        commit: "c1".into(),
        kind: RunKind::Apply,
        reason: None,
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    }
}

/// (stack, succeeded, finished minute, carried commits (minute, revert), marked failed)
type HistoryRow = (&'static str, bool, i64, &'static [(i64, bool)], bool);

/// Builds the history of `delivery::tests::the_five_keys_worked_out_by_hand` in a database,
/// `t0` being minute 0. Returns the repository id.
async fn history(store: &Store, url: &str, t0: DateTime<Utc>) -> i64 {
    let repo_id = store
        .upsert_repo("infra", "file:///x", "main", None)
        .await
        .expect("repo");
    let at = |minutes: i64| t0 + TimeDelta::minutes(minutes);
    let applies: &[HistoryRow] = &[
        ("a", false, -10, &[], false),
        ("a", true, 20, &[(0, false), (10, false)], false),
        ("a", false, 100, &[], false),
        ("a", true, 160, &[(150, false)], false),
        ("b", true, 150, &[(140, false)], false),
        ("b", true, 200, &[(190, true)], false),
        ("c", true, 300, &[(290, false)], true),
    ];
    for (n, (stack, ok, finished, carried, marked)) in applies.iter().enumerate() {
        store
            .enqueue(&[apply(repo_id, stack)])
            .await
            .expect("enqueue");
        let run = store
            .claim("w", Duration::from_secs(60))
            .await
            .expect("claim")
            .expect("a queued run");
        let outcome = RunOutcome {
            status: if *ok {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            exit_code: None,
            error: None,
            summary: None,
        };
        assert!(store.finish(run.id, "w", &outcome).await.expect("finish"));
        set_finished(url, run.id, at(*finished)).await;
        let commits: Vec<DeployedCommit> = carried
            .iter()
            .map(|(minute, revert)| DeployedCommit {
                sha: format!("{n}-{minute}"),
                committed_at: at(*minute),
                revert: *revert,
            })
            .collect();
        store
            .record_deployment(run.id, &commits)
            .await
            .expect("record");
        if *marked {
            assert!(
                store
                    .mark_failed(run.id, "broke the load balancer")
                    .await
                    .expect("mark")
            );
        }
    }
    // A failed apply cannot be marked failed: it is one already.
    assert!(!store.mark_failed(1, "again").await.expect("mark"));
    // Drift found at minute 10 and gone at 40: reconciled in 30 minutes.
    for (minute, result) in [(10, "drifted"), (40, "in_sync")] {
        sql(
            url,
            "INSERT INTO drift_checks (repo_id, stack_path, commit_sha, result, checked_at) \
             VALUES ($1, 'a', 'c1', $2, $3)",
            |q| q.bind(repo_id).bind(result).bind(at(minute)),
        )
        .await;
    }
    repo_id
}

async fn set_finished(url: &str, run: i64, at: DateTime<Utc>) {
    sql(url, "UPDATE runs SET finished_at = $1 WHERE id = $2", |q| {
        q.bind(at).bind(run)
    })
    .await;
}

/// Runs one statement with the binds `bind` adds, on either backend.
async fn sql<F>(url: &str, statement: &'static str, bind: F)
where
    F: for<'q> Fn(Query<'q>) -> Query<'q>,
{
    use sqlx::Connection;
    // Both backends take the same binds through `sqlx::Any`-free duplication: the closure
    // adds them to a query of the right database.
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        let q = bind(Query::Sqlite(sqlx::query(statement)));
        match q {
            Query::Sqlite(q) => q.execute(&mut conn).await.expect("statement"),
            Query::Postgres(_) => unreachable!(),
        };
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
        let q = bind(Query::Postgres(sqlx::query(statement)));
        match q {
            Query::Postgres(q) => q.execute(&mut conn).await.expect("statement"),
            Query::Sqlite(_) => unreachable!(),
        };
    }
}

enum Query<'q> {
    Sqlite(sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>),
    Postgres(sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>),
}

impl<'q> Query<'q> {
    fn bind<T>(self, value: T) -> Self
    where
        T: 'q
            + sqlx::Encode<'q, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>
            + sqlx::Encode<'q, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + Send,
    {
        match self {
            Query::Sqlite(q) => Query::Sqlite(q.bind(value)),
            Query::Postgres(q) => Query::Postgres(q.bind(value)),
        }
    }
}

/// The figures worked out by hand (see the pure test in `delivery.rs`), over a 7-day window.
fn assert_by_hand(dora: &serde_json::Value, how: &str) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    assert_eq!(dora["deployments"], 5, "{how}: {dora:#}");
    assert!(
        (f(&dora["deployment_frequency_per_day"]) - 5.0 / 7.0).abs() < 1e-3,
        "{how}: {dora:#}"
    );
    assert_eq!(f(&dora["lead_time_seconds"]["median"]), 600.0, "{how}");
    assert_eq!(f(&dora["lead_time_seconds"]["p90"]), 1200.0, "{how}");
    assert_eq!(f(&dora["change_fail_rate"]), 0.5, "{how}: {dora:#}");
    assert_eq!(f(&dora["recovery_time_seconds"]["median"]), 3000.0, "{how}");
    assert!((f(&dora["rework_rate"]) - 0.6).abs() < 1e-9, "{how}");
    assert_eq!(
        f(&dora["drift_reconcile_seconds"]["median"]),
        1800.0,
        "{how}"
    );
    assert_eq!(dora["failing_stacks"], 1, "{how}");
}

async fn dora_by_hand(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&db.url).await.expect("store");
    // Minute -10 falls just before the window of the last 7 days, minute 20 inside it.
    let t0 = Utc::now() - TimeDelta::days(7) + TimeDelta::minutes(5);
    history(&store, &db.url, t0).await;

    let now = Utc::now();
    let figures = store
        .dora(
            &HistoryFilter {
                repo: Some("infra".into()),
                stack: None,
            },
            now - TimeDelta::days(7),
            now,
            TimeDelta::hours(1),
        )
        .await
        .expect("dora");
    assert_by_hand(&serde_json::to_value(&figures).expect("json"), "store");

    let app = App::start(config(dir.path(), &db.url, ""))
        .await
        .expect("start");
    let url = format!(
        "http://{}/api/v1/dora?repo=infra&since=7d&revert_window=1h",
        app.addr
    );
    let response = reqwest::get(&url).await.expect("dora");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_by_hand(&answer, "GET /api/v1/dora");
    assert_eq!(answer["repo"], "infra");
    // One stack: b deployed twice, and its first deployment was reverted.
    let b: serde_json::Value = reqwest::get(format!("{url}&stack=b"))
        .await
        .expect("dora")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (b["deployments"].as_u64(), b["failures"].as_u64()),
        (Some(2), Some(1))
    );
    let bad = reqwest::get(format!("http://{}/api/v1/dora?since=soon", app.addr))
        .await
        .expect("dora");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("since"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["dora", "--config"])
        .arg(dir.path().join("tidemark.hcl"))
        .args(["--repo", "infra", "--since", "7d", "--revert-window", "1h"])
        .args(["--format", "json"])
        .output()
        .expect("tidemark dora");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_by_hand(&cli, "tidemark dora");
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["dora", "--config"])
        .arg(dir.path().join("tidemark.hcl"))
        .args(["--since", "7d", "--revert-window", "1h"])
        .output()
        .expect("tidemark dora");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("change fail rate     50.0% (3 of 6 attempts)"),
        "{text}"
    );
    assert!(
        text.contains("median 50m (3 recovered, 1 stack still failing)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dora_figures_equal_the_hand_worked_values_on_sqlite() {
    dora_by_hand(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dora_figures_equal_the_hand_worked_values_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        dora_by_hand(db).await;
    }
}

pub(crate) async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.expect("body");
    assert!(!text.contains("quantile="), "histograms, not summaries");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of the sample `metric` whose labels include `labels` (0 when absent).
pub(crate) fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_real_runs_happen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("one"))
        .write("stacks/app/stack.hcl", "stack {\n  auto_apply = true\n}\n");
    git.commit_and_push("one stack");
    let db = TestDb::sqlite();
    let extra = format!(
        "{}\nrepo \"infra\" {{\n  url = \"{}\"\n  poll_interval = \"1s\"\n}}\n",
        Toolchain::get().runner_override(),
        git.url()
    );
    let app = App::start(config(dir.path(), &db.url, &extra))
        .await
        .expect("start");
    let before = scrape(app.addr).await;
    let store = Store::open(&db.url).await.expect("store");
    eventually(120, "the plan and its auto-apply", || async {
        let runs = store.runs(&Default::default()).await.ok()?;
        let applied = runs
            .iter()
            .any(|r| r.kind == RunKind::Apply && r.status == RunStatus::Succeeded);
        (applied && runs.iter().all(|r| r.status.is_final())).then_some(())
    })
    .await;
    let after = scrape(app.addr).await;
    let runs = |s: &prometheus_parse::Scrape, kind| {
        value(
            s,
            "tidemark_runs_total",
            &[("kind", kind), ("status", "succeeded")],
        )
    };
    // Counters are the process's (other tests share it): they only grow, by at least ours.
    assert!(runs(&after, "plan") >= runs(&before, "plan") + 1.0);
    assert!(runs(&after, "apply") >= runs(&before, "apply") + 1.0);
    assert!(
        value(&after, "tidemark_polls_total", &[("result", "new_commit")])
            > value(&before, "tidemark_polls_total", &[("result", "new_commit")])
    );
    for metric in [
        "tidemark_run_duration_seconds",
        "tidemark_queue_wait_seconds",
        "tidemark_run_phase_duration_seconds",
        "tidemark_change_lead_time_seconds",
        "tidemark_http_request_duration_seconds",
    ] {
        assert!(value(&after, metric, &[]) >= 1.0, "{metric} has samples");
    }
    assert!(
        value(
            &after,
            "tidemark_run_phase_duration_seconds",
            &[("phase", "plan")]
        ) >= 1.0
    );
    assert_eq!(value(&after, "tidemark_stacks", &[("repo", "infra")]), 1.0);
    let badges: f64 = ["failed", "drifted", "changes_pending", "locked", "in_sync"]
        .iter()
        .map(|s| value(&after, "tidemark_stacks_by_state", &[("state", s)]))
        .sum();
    assert_eq!(badges, 1.0, "the one stack has one badge");
    assert_eq!(
        value(&after, "tidemark_queue_depth", &[("kind", "plan")]),
        0.0
    );
    assert_eq!(
        value(&after, "tidemark_repo_fetch_failing", &[("repo", "infra")]),
        0.0
    );
    assert!(
        value(
            &after,
            "tidemark_http_requests_total",
            &[("route", "/metrics"), ("status_class", "2xx")]
        ) >= 1.0
    );
    assert_eq!(value(&after, "tidemark_build_info", &[]), 1.0);
    // No series names a stack, commit or run.
    for sample in &after.samples {
        for (key, label) in sample.labels.iter() {
            assert!(
                !label.contains("stacks/app") && key != "stack" && key != "commit",
                "{} has a per-stack label {key}={label}",
                sample.metric
            );
        }
    }
    // The deployment recorded the commit it carried.
    let dora: serde_json::Value = reqwest::get(format!("http://{}/api/v1/dora", app.addr))
        .await
        .expect("dora")
        .json()
        .await
        .expect("json");
    assert_eq!(dora["deployments"], 1, "{dora:#}");
    assert_eq!(dora["lead_time_seconds"]["count"], 1, "{dora:#}");
}

#[tokio::test]
async fn a_metrics_token_guards_the_scrape() {
    let dir = tempfile::tempdir().expect("tempdir");
    // PATH is always set: its value stands in for a metrics token read from the environment.
    let token = std::env::var("PATH").expect("PATH");
    let db = TestDb::sqlite();
    let app = App::start(config(
        dir.path(),
        &db.url,
        "metrics_token_env = \"PATH\"\n",
    ))
    .await
    .expect("start");
    let url = format!("http://{}/metrics", app.addr);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.expect("get").status(), 401);
    let ok = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), 200);
}
