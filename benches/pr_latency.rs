//! Pull-request latency: the time from a `synchronize` webhook to the pull request's comment
//! edited for the new head (and its `tidemark/plan` status set), for a one-stack pull request,
//! against the plan run itself and against the bare terraform steps (`init`, `plan -out`,
//! `show -json`) of the same stack. The target (issue #12) is at most 1 s over the bare plan.
//!
//! It runs the real `tidemark serve` against GitHub's OpenAPI description (Prism behind the
//! recording mock of the integration tests), with real git and real terraform. It needs what
//! `scripts/install-terraform.sh` and `scripts/install-github-mock.sh` install
//! (`TIDEMARK_TOOLS_DIR`, `TIDEMARK_GITHUB_MOCK_DIR`).
//!
//! Run: `cargo bench --bench pr_latency` (`BENCH_PUSHES` sets the number of pushes, default 5).

#[path = "../tests/it/github_mock.rs"]
mod github_mock;
#[path = "../tests/it/github_mock_routes.rs"]
#[allow(dead_code)]
mod github_mock_routes;
#[path = "../tests/it/pulls_harness.rs"]
#[allow(dead_code)]
mod pulls_harness;
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use github_mock::GitHubMock;
use pulls_harness::{REPO, Service, config, push_pr};
use support::{GitFixture, Toolchain, git, null_stack};

fn main() {
    let pushes: usize = std::env::var("BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(pushes));
}

async fn run(pushes: usize) {
    let Some(mock) = GitHubMock::start(REPO).await else {
        println!(
            "pr_latency: skipped (the GitHub mock is not installed: scripts/install-github-mock.sh)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = GitFixture::new();
    repo.write("stacks/app/main.tf", &null_stack("v0"));
    let base = repo.commit_and_push("one stack");
    // Polling of pull requests is slow, so each push reaches Tidemark by its webhook alone.
    let config = config(dir.path(), &repo.url(), &mock.url, "1h");
    let service = Service::start(dir.path(), &config).await;
    service
        .wait(120, "the branch plan", || async {
            let runs = service.runs().await;
            (runs.len() == 1 && runs[0].status.is_final()).then_some(())
        })
        .await;
    git(&repo.work(), &["checkout", "-q", "-b", "feature"]);
    let mut rows = Vec::new();
    for push in 1..=pushes + 1 {
        repo.write("stacks/app/main.tf", &null_stack(&format!("v{push}")));
        let head = push_pr(&repo, 1, &format!("app v{push}"));
        let action = if push == 1 {
            mock.open_pr(1, "alice", &head, &base);
            "opened"
        } else {
            mock.push_pr(1, &head);
            "synchronize"
        };
        let sent = Instant::now();
        let status = service
            .webhook(
                "pull_request",
                &serde_json::json!({
                    "action": action, "number": 1,
                    "pull_request": { "number": 1 },
                    "repository": { "full_name": REPO }
                }),
            )
            .await;
        assert_eq!(status, 200, "the webhook was refused:\n{}", service.log());
        let short = &head[..12];
        service
            .wait(120, "the comment edited for the new head", || async {
                let planned = mock.status(&head, "tidemark/plan").as_deref() == Some("success");
                let commented = mock
                    .comments(1)
                    .first()
                    .is_some_and(|(_, _, body)| body.contains(short) && body.contains("✅"));
                (planned && commented).then_some(())
            })
            .await;
        let latency = sent.elapsed();
        let run = service
            .runs()
            .await
            .into_iter()
            .filter(|r| r.pr_number == Some(1) && r.commit == head)
            .find_map(|r| (r.finished_at? - r.started_at?).to_std().ok())
            .unwrap_or_default();
        // The first push also starts the pull request's bookkeeping: reported, not counted.
        if push > 1 {
            rows.push((latency, run));
        }
        println!(
            "push {push} ({action}): webhook to edited comment and status {:.0} ms; the plan run {:.0} ms",
            ms(latency),
            ms(run)
        );
    }
    let bare = bare_plan(&repo);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let latency = median(rows.iter().map(|r| r.0).collect());
    let run = median(rows.iter().map(|r| r.1).collect());
    println!(
        "pr_latency over {} pushes (medians): webhook to edited comment {:.0} ms; plan run {:.0} ms; \
         bare terraform init+plan+show {:.0} ms; over the bare plan {:.0} ms (target: at most 1000 ms)",
        rows.len(),
        ms(latency),
        ms(run),
        ms(bare),
        ms(latency.saturating_sub(bare))
    );
    let violations = mock.violations();
    assert!(
        violations.is_empty(),
        "requests the OpenAPI description refuses: {violations:?}"
    );
}

/// The same stack's plan with terraform alone, in a copy of its directory: the median of 3.
fn bare_plan(repo: &GitFixture) -> Duration {
    let tools = Toolchain::get();
    let mut times = Vec::new();
    for _ in 0..3 {
        let work = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            repo.work().join("stacks/app/main.tf"),
            work.path().join("main.tf"),
        )
        .expect("copy the stack");
        let started = Instant::now();
        tools.run(work.path(), &["init", "-input=false", "-no-color"]);
        tools.run(
            work.path(),
            &["plan", "-input=false", "-no-color", "-out=plan.tfplan"],
        );
        tools.run(work.path(), &["show", "-json", "plan.tfplan"]);
        times.push(started.elapsed());
    }
    times.sort();
    times[1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
