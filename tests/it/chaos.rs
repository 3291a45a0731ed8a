//! Chaos on the real binary: two `tidemark serve` instances on one PostgreSQL database, a
//! stream of commits to 50 auto-applied stacks (tagged `allow-destroy`: each change replaces
//! their null resource, which the shipped policy blocks otherwise), and a killer that `kill -9`s a random instance
//! every few seconds and restarts it. Afterwards: every plan the instances queued ended
//! (succeeded, or superseded by a newer commit's, or interrupted and retried), no apply ran
//! twice and no two plans made the same artifact, every interrupted apply left its stack
//! locked and listed, every stack's state equals its last commit once the locks are lifted,
//! and nothing is left running. Prints the counts.
//!
//! `TIDEMARK_CHAOS_SECS` sets how long the killer runs (default 90).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidemark::store::{Run, RunFilter, RunKind, RunStatus, Store};

use crate::support::{GitFixture, ServeProcess, TestDb, Toolchain, eventually, null_stack};

const STACKS: usize = 50;
const REPO: &str = "mono";

fn instance_config(dir: &Path, name: &str, database: &str, repo_url: &str) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase = \"{database}\"\ndata_dir = \"{data}\"\nworkers = 2\n\
         plan_key_env = \"TEST_PLAN_KEY\"\n{runner}\nrepo \"{REPO}\" {{\n  url = \"{repo_url}\"\n  \
         poll_interval = \"1s\"\n}}\n",
        data = dir.join(name).display(),
        runner = Toolchain::get().runner_override(),
    );
    let path = dir.join(format!("{name}.hcl"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A small deterministic generator, seeded from the clock and printed, so a failing run can
/// be told apart from the next.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn stack(i: usize) -> String {
    format!("stacks/s{i:02}")
}

async fn all_runs(store: &Store) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .runs(&RunFilter {
                limit: 1000,
                before,
                ..Default::default()
            })
            .await
            .expect("runs");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        runs.extend(page);
    }
    runs
}

/// Waits until every stack has a succeeded apply of `last` and nothing is busy. On a timeout
/// it names each stack that lacks one, with its runs of that commit and the locks held, so a
/// failure says which stack stopped and why.
async fn final_applies(
    store: &Store,
    last: &str,
    secs: u64,
    serve_log: &dyn Fn() -> String,
) -> Vec<Run> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let runs = all_runs(store).await;
        let applied: HashSet<&str> = runs
            .iter()
            .filter(|r| {
                r.kind == RunKind::Apply && r.commit == last && r.status == RunStatus::Succeeded
            })
            .map(|r| r.stack.as_str())
            .collect();
        let busy = runs.iter().any(|r| !r.status.is_final());
        if applied.len() == STACKS && !busy {
            return runs;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for i in 0..STACKS {
                let name = stack(i);
                if applied.contains(name.as_str()) {
                    continue;
                }
                let state_lock = store
                    .state_lock(REPO, &name)
                    .await
                    .map(|l| format!("{l:?}"));
                report.push_str(&format!("{name}: state lock {state_lock:?}\n"));
                for r in runs.iter().filter(|r| r.stack == name && r.commit == last) {
                    report.push_str(&format!(
                        "  run {} {:?} {:?} attempt {} reason {:?} error {:?} gate {:?}\n",
                        r.id, r.kind, r.status, r.attempt, r.reason, r.error, r.gate_json
                    ));
                }
            }
            for r in runs.iter().filter(|r| !r.status.is_final()) {
                report.push_str(&format!(
                    "busy: run {} {} {:?} {:?} commit {} worker {:?}\n",
                    r.id, r.stack, r.kind, r.status, r.commit, r.worker
                ));
            }
            let locks = store.locks().await.map(|l| format!("{l:?}"));
            let log = serve_log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            panic!(
                "timed out after {secs}s: {} of {STACKS} stacks applied the last commit\n{report}\
                 locks: {locks:?}\nlast lines of the log:\n{}",
                applied.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_killed_at_random_lose_nothing_and_apply_nothing_twice() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let secs: u64 = std::env::var("TIDEMARK_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    let mut values: Vec<String> = vec!["c0".into(); STACKS];
    for i in 0..STACKS {
        git.write(&format!("{}/main.tf", stack(i)), &null_stack("c0"))
            .write(
                &format!("{}/stack.hcl", stack(i)),
                "stack {\n  auto_apply = true\n  tags       = [\"allow-destroy\"]\n}\n",
            );
    }
    git.commit_and_push("fifty stacks");
    let key = "22".repeat(32);
    let env = [("TEST_PLAN_KEY", key.as_str())];
    let log = dir.path().join("serve.log");
    let configs = [
        instance_config(dir.path(), "a", &db.url, &git.url()),
        instance_config(dir.path(), "b", &db.url, &git.url()),
    ];
    let mut instances: Vec<Option<ServeProcess>> = configs
        .iter()
        .map(|c| Some(ServeProcess::start(c, &env, &log)))
        .collect();
    let store = eventually(30, "the database", || async {
        Store::connect(&db.url).await.ok()
    })
    .await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    eprintln!("chaos: seed {seed}, {secs} s");
    let mut rng = Lcg(seed);
    let (mut commits, mut kills) = (1usize, 0usize);
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if tick.is_multiple_of(3) {
            for _ in 0..5 {
                let i = rng.below(STACKS);
                values[i] = format!("c{commits}");
                git.write(&format!("{}/main.tf", stack(i)), &null_stack(&values[i]));
            }
            git.commit_and_push(&format!("commit {commits}"));
            commits += 1;
        }
        if tick.is_multiple_of(4) || tick % 7 == 2 {
            let victim = rng.below(2);
            if let Some(serve) = instances[victim].take() {
                serve.kill_9();
            }
            kills += 1;
            instances[victim] = Some(ServeProcess::start(&configs[victim], &env, &log));
        }
    }

    // The killer stops. Everything queued ends, except what waits for a locked stack.
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let settled = eventually(
        600,
        "every run to end or wait on a locked stack",
        || async {
            let locked: HashSet<String> = store
                .locks()
                .await
                .ok()?
                .into_iter()
                .filter(|l| l.kind != "run")
                .map(|l| l.stack)
                .collect();
            let runs = all_runs(&store).await;
            runs.iter()
                .all(|r| {
                    r.status.is_final()
                        || (r.status == RunStatus::Queued && locked.contains(&r.stack))
                })
                .then_some(runs)
        },
    )
    .await;

    // Every interrupted apply left its stack locked, and `tidemark locks` lists it.
    let interrupted: BTreeMap<i64, String> = settled
        .iter()
        .filter(|r| r.kind == RunKind::Apply && r.status == RunStatus::Interrupted)
        .map(|r| (r.id, r.stack.clone()))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["locks", "--format", "json", "--config"])
        .arg(&configs[0])
        .env("TEST_PLAN_KEY", &key)
        .output()
        .expect("tidemark locks");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("locks json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let locked: BTreeMap<i64, String> = listed["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| Some((l["run_id"].as_i64()?, l["stack"].as_str()?.to_string())))
        .collect();
    assert_eq!(
        interrupted, locked,
        "every interrupted apply, and only those, holds its stack's lock"
    );
    for stack in interrupted.values() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["unlock", stack, "--config"])
            .arg(&configs[0])
            .env("TEST_PLAN_KEY", &key)
            .output()
            .expect("tidemark unlock");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // One last commit changes every stack; each must end applied with it.
    for (i, value) in values.iter_mut().enumerate() {
        *value = "final".into();
        git.write(&format!("{}/main.tf", stack(i)), &null_stack(value));
    }
    let last = git.commit_and_push("final");
    commits += 1;
    let runs = final_applies(&store, &last, 900, &serve_log).await;
    for i in 0..STACKS {
        let versions = store
            .state_versions(REPO, &stack(i))
            .await
            .expect("state versions");
        let current = versions
            .iter()
            .filter(|v| v.discarded_at.is_none())
            .max_by_key(|v| v.serial)
            .unwrap_or_else(|| panic!("{} has no state", stack(i)));
        assert_eq!(
            current.outputs["value"]["value"],
            "final",
            "{}: the state is not its last commit's config: {:?}",
            stack(i),
            current.outputs
        );
    }

    // Nothing ran twice: no apply was retried or shares its plan with another apply, and no
    // two plans stored the same artifact.
    let mut applies_per_plan: HashMap<i64, usize> = HashMap::new();
    let mut duplicates = 0usize;
    for apply in runs.iter().filter(|r| r.kind == RunKind::Apply) {
        if apply.attempt > 1 {
            duplicates += 1;
            eprintln!("apply run {} ran {} times", apply.id, apply.attempt);
        }
        if apply.started_at.is_some()
            && let Some(plan) = apply.plan_run_id
        {
            *applies_per_plan.entry(plan).or_default() += 1;
        }
    }
    for (plan, n) in &applies_per_plan {
        if *n > 1 {
            duplicates += n - 1;
            eprintln!("plan run {plan} was applied {n} times");
        }
    }
    let mut digests: HashMap<String, i64> = HashMap::new();
    for plan in runs.iter().filter(|r| r.kind == RunKind::Plan) {
        if let Some(artifact) = store.artifact(plan.id).await.expect("artifact")
            && let Some(other) = digests.insert(artifact.digest.clone(), plan.id)
        {
            duplicates += 1;
            eprintln!("plan runs {other} and {} made the same artifact", plan.id);
        }
    }
    // Every plan ended: it ran, a newer commit's plan superseded it, or it was interrupted
    // and its retry ended so.
    let retried: HashSet<i64> = runs
        .iter()
        .filter_map(|r| {
            r.reason
                .as_deref()?
                .strip_prefix("retry of run ")?
                .parse()
                .ok()
        })
        .collect();
    let lost: Vec<&Run> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Plan)
        .filter(|r| match r.status {
            RunStatus::Succeeded | RunStatus::Superseded => false,
            RunStatus::Interrupted => !retried.contains(&r.id),
            _ => true,
        })
        .collect();
    let count = |kind: RunKind| runs.iter().filter(|r| r.kind == kind).count();
    eprintln!(
        "chaos: {commits} commits, {} runs ({} plans, {} applies), {kills} kills, {} applies \
         interrupted, {} plans retried, {duplicates} duplicates, {} plans lost",
        runs.len(),
        count(RunKind::Plan),
        count(RunKind::Apply),
        interrupted.len(),
        retried.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "plans that did not end well: {lost:#?}");
    assert_eq!(duplicates, 0, "{}", serve_log());

    // Nothing is left running once both instances stop.
    for serve in instances.iter_mut().filter_map(Option::take) {
        serve.terminate();
    }
    let needle = dir.path().display().to_string();
    let left = crate::support::processes_with(&needle);
    assert!(left.is_empty(), "left running: {left:#?}");
}
