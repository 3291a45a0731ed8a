//! The GitOps loop end to end: a bare git remote, the service started in-process on port 0,
//! real terraform planning real stacks, and the run history in SQLite or PostgreSQL.

use std::time::Duration;

use tidemark::app::App;
use tidemark::config::Config;
use tidemark::store::{Run, RunFilter, RunStatus};

use crate::support::{GitFixture, TestDb, Toolchain, null_stack};

/// A server config for `repos` (name, url) on `database`, with terraform from the toolchain.
fn config_text(
    database: &str,
    data_dir: &std::path::Path,
    repos: &[(&str, String)],
    runner: &str,
) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\ndata_dir = \"{}\"\nworkers = 2\n\n{runner}\n",
        data_dir.display(),
    );
    for (name, url) in repos {
        text.push_str(&format!(
            "repo \"{name}\" {{\n  url = \"{url}\"\n  poll_interval = \"1s\"\n}}\n"
        ));
    }
    text
}

async fn start(database: &str, repos: &[(&str, String)]) -> (App, tempfile::TempDir) {
    start_with(database, repos, &Toolchain::get().runner_override()).await
}

async fn start_with(
    database: &str,
    repos: &[(&str, String)],
    runner: &str,
) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(database, &dir.path().join("data"), repos, runner);
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, &text).expect("write config");
    // The tests' reqwest clients need the process-wide rustls provider.
    tidemark::install_crypto_provider();
    let mut config = Config::parse(&file, &text, dir.path()).expect("valid config");
    // The state proxy runs from the tidemark binary, not from this test binary.
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = App::start(config).await.expect("start tidemark");
    (app, dir)
}

/// Waits until `count` runs of `repo` exist and all are final; returns them newest first.
async fn settled_runs(app: &App, repo: &str, count: usize) -> Vec<Run> {
    let filter = RunFilter {
        repo: Some(repo.into()),
        ..Default::default()
    };
    for _ in 0..600 {
        let runs = app.store.runs(&filter).await.expect("runs");
        if runs.len() >= count && runs.iter().all(|r| r.status.is_final()) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "runs of {repo} did not settle: {:#?}",
        app.store.runs(&filter).await.expect("runs")
    );
}

fn two_stacks() -> GitFixture {
    let git = GitFixture::new();
    git.write("stacks/a/main.tf", &null_stack("a1"))
        .write("stacks/b/main.tf", &null_stack("b1"))
        .write("README.md", "# infra\n");
    git.commit_and_push("two stacks");
    git
}

async fn one_changed_stack_is_planned(database: &str) {
    let git = two_stacks();
    let (app, dir) = start(database, &[("infra", git.url())]).await;

    // The first commit: every stack is new, so both are planned.
    let runs = settled_runs(&app, "infra", 2).await;
    let mut stacks: Vec<_> = runs.iter().map(|r| r.stack.as_str()).collect();
    stacks.sort();
    assert_eq!(stacks, ["stacks/a", "stacks/b"]);
    for run in &runs {
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{run:#?} {:#?}",
            app.store.logs(run.id).await
        );
        let summary = run.change_summary().expect("summary");
        assert_eq!((summary.add, summary.change, summary.destroy), (1, 0, 0));
    }

    // A commit that changes only stack b: exactly b is planned, at that commit.
    git.write("stacks/b/main.tf", &null_stack("b2"));
    let head = git.commit_and_push("change b");
    let client = reqwest::Client::new();
    let nudge = client
        .post(format!("http://{}/api/v1/repos/infra/poll", app.addr))
        .send()
        .await
        .expect("poll request");
    assert_eq!(nudge.status(), 200);
    let runs = settled_runs(&app, "infra", 3).await;
    let newest = &runs[0];
    assert_eq!(
        (newest.stack.as_str(), newest.commit.as_str()),
        ("stacks/b", head.as_str())
    );
    assert_eq!(newest.status, RunStatus::Succeeded);
    assert_eq!(runs.len(), 3, "only b was planned for the second commit");

    // Its plan JSON, log and summary are stored and served.
    let artifact = app
        .store
        .artifact(newest.id)
        .await
        .expect("artifact")
        .expect("stored");
    assert_eq!(artifact.digest.len(), 64);
    let logs = app.store.logs(newest.id).await.expect("logs");
    assert!(
        logs.iter().any(|l| l.text.contains("null_resource.this")),
        "{logs:#?}"
    );
    let body: serde_json::Value = client
        .get(format!("http://{}/api/v1/runs?stack=stacks/b", app.addr))
        .send()
        .await
        .expect("runs request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["runs"][0]["summary"]["add"], 1);
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(2));
    app.stop().await;

    // The poller kept its stack index in the data dir: a restarted service starts from it and
    // has nothing left to read or parse for the commit it last saw.
    let data = dir.path().join("data");
    let mut index = tidemark::stacks::Index::persistent(data.join("index").join("infra.idx"));
    let mirror = git2::Repository::open(data.join("mirrors").join("infra.git")).expect("mirror");
    let head = git2::Oid::from_str(&head).expect("oid");
    let found = tidemark::stacks::discover(&mirror, head, Some(&mut index)).expect("discover");
    assert_eq!(found.stacks.len(), 2);
    assert!(!index.save().expect("save"), "the restarted index was warm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_commit_plans_exactly_the_changed_stack_on_sqlite() {
    let db = TestDb::sqlite();
    one_changed_stack_is_planned(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_commit_plans_exactly_the_changed_stack_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    one_changed_stack_is_planned(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_repo_or_stack_never_stops_the_others() {
    let db = TestDb::sqlite();
    let git = GitFixture::new();
    git.write("stacks/good/main.tf", &null_stack("ok")).write(
        "stacks/broken/main.tf",
        "resource \"null_resource\" \"x\" {\n  triggers = {\n",
    );
    git.commit_and_push("one good, one broken");
    let missing = "file:///nonexistent/tidemark/remote.git".to_string();
    let (app, _dir) = start(&db.url, &[("gone", missing), ("infra", git.url())]).await;

    let runs = settled_runs(&app, "infra", 2).await;
    let by_stack = |s: &str| runs.iter().find(|r| r.stack == s).expect("run").clone();
    assert_eq!(by_stack("stacks/good").status, RunStatus::Succeeded);
    let broken = by_stack("stacks/broken");
    assert_eq!(broken.status, RunStatus::Failed);
    let error = broken.error.clone().unwrap_or_default();
    assert!(
        error.contains("main.tf"),
        "the error names the file: {error}"
    );

    // The unreachable remote is recorded against its repo, and the service keeps serving.
    let mut gone_error = None;
    for _ in 0..100 {
        let repos = app.store.repos().await.expect("repos");
        gone_error = repos
            .iter()
            .find(|r| r.name == "gone")
            .and_then(|r| r.last_error.clone());
        if gone_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_error = gone_error.expect("fetch error recorded");
    assert!(
        gone_error.contains("repo gone") && gone_error.contains("/nonexistent/tidemark/remote.git"),
        "{gone_error}"
    );
    let health = reqwest::get(format!("http://{}/healthz", app.addr))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_remote_is_reported_and_a_force_push_plans_what_differs() {
    let db = TestDb::sqlite();
    // A "remote" that is a directory of junk, not a repository.
    let garbage = tempfile::tempdir().expect("tempdir");
    std::fs::write(garbage.path().join("HEAD"), "not a ref\n").expect("write");
    std::fs::write(garbage.path().join("config"), "[[[ not git config").expect("write");
    let git = GitFixture::new();
    git.write("stacks/a/main.tf", &null_stack("a0"))
        .write("stacks/b/main.tf", &null_stack("b0"));
    let first = git.commit_and_push("two stacks");
    let garbage_url = format!("file://{}", garbage.path().display());
    let (app, _dir) = start(&db.url, &[("junk", garbage_url), ("infra", git.url())]).await;
    settled_runs(&app, "infra", 2).await;
    git.write("stacks/a/main.tf", &null_stack("a1"));
    let dropped = git.commit_and_push("change a");
    settled_runs(&app, "infra", 3).await;

    // A force-push drops that commit and changes b instead: what differs between the last
    // processed tree and the new head is planned (a is back to a0, b is new), and the
    // dropped commit is never planned again.
    crate::support::git(&git.work(), &["reset", "-q", "--hard", &first]);
    git.write("stacks/b/main.tf", &null_stack("b1"));
    let rewritten = git.commit("change b instead");
    crate::support::git(&git.work(), &["push", "-q", "--force", "origin", "main"]);
    let runs = settled_runs(&app, "infra", 5).await;
    let mut planned: Vec<&str> = runs
        .iter()
        .filter(|r| r.commit == rewritten)
        .map(|r| r.stack.as_str())
        .collect();
    planned.sort();
    assert_eq!(planned, ["stacks/a", "stacks/b"], "{runs:#?}");
    assert_eq!(runs.iter().filter(|r| r.commit == dropped).count(), 1);
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );

    // The junk remote is reported against its repository, which plans nothing.
    let mut junk_error = None;
    for _ in 0..100 {
        let repos = app.store.repos().await.expect("repos");
        junk_error = repos
            .iter()
            .find(|r| r.name == "junk")
            .and_then(|r| r.last_error.clone());
        if junk_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let junk_error = junk_error.expect("fetch error recorded");
    assert!(junk_error.contains("repo junk"), "{junk_error}");
    let junk_runs = app
        .store
        .runs(&RunFilter {
            repo: Some("junk".into()),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert!(junk_runs.is_empty(), "{junk_runs:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_terraform_binary_fails_the_run_with_a_clear_error() {
    let db = TestDb::sqlite();
    let git = GitFixture::new();
    git.write("stacks/a/main.tf", &null_stack("a"));
    git.commit_and_push("one stack");
    let runner = "runner \"terraform\" {\n  binary = \"/nonexistent/bin/terraform\"\n}\n";
    let (app, _dir) = start_with(&db.url, &[("infra", git.url())], runner).await;
    let runs = settled_runs(&app, "infra", 1).await;
    assert_eq!(runs[0].status, RunStatus::Failed);
    let error = runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("/nonexistent/bin/terraform"),
        "the error names the binary: {error}"
    );
    app.stop().await;
}

/// Instances sharing a database fetch on their own, so one may claim a run that another
/// queued for a commit it has not fetched yet. The run waits for this instance's poller
/// (nudged, although its interval is an hour) to fetch the commit, and plans it, instead of
/// failing on a missing object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_commit_this_instance_has_not_fetched_waits_for_the_fetch() {
    let db = TestDb::sqlite();
    let git = two_stacks();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        &db.url,
        &dir.path().join("data"),
        &[("infra", git.url())],
        &Toolchain::get().runner_override(),
    )
    .replace("poll_interval = \"1s\"", "poll_interval = \"1h\"");
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, &text).expect("write config");
    let mut config = Config::parse(&file, &text, dir.path()).expect("valid config");
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = App::start(config).await.expect("start tidemark");
    settled_runs(&app, "infra", 2).await;

    // Another instance fetched this commit and queued a plan of it.
    git.write("stacks/a/main.tf", &null_stack("a2"));
    let head = git.commit_and_push("a changes");
    let repo_id = app
        .store
        .upsert_repo("infra", &git.url(), "main", None)
        .await
        .expect("repo");
    let run = tidemark::store::NewRun {
        repo_id,
        stack: "stacks/a".into(),
        commit: head.clone(),
        kind: tidemark::store::RunKind::Plan,
        reason: Some("queued by another instance".into()),
        after: Vec::new(),
        plan_run: None,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    };
    let id = app.store.enqueue(&[run]).await.expect("enqueue")[0];
    let mut ended = None;
    for _ in 0..900 {
        let run = app.store.find_run(id).await.expect("run").expect("exists");
        if run.status.is_final() {
            ended = Some(run);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = ended.expect("the run ends");
    let log: Vec<String> = app
        .store
        .logs(id)
        .await
        .expect("logs")
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}\n{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("is not in this instance's mirror yet")),
        "{log:#?}"
    );
    app.stop().await;
}
