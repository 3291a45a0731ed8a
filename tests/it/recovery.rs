//! Crash recovery with the real binary: `kill -9` of `tidemark serve` during a plan and during
//! an apply, then a restart. A plan is retried; an apply is left interrupted with its stack
//! locked until an operator unlocks it.

use std::path::{Path, PathBuf};

use tidemark::store::{NewRun, RunFilter, RunKind, RunStatus, Store};

use crate::support::{
    GitFixture, ServeProcess, Toolchain, eventually, null_stack, process_running,
};

/// Tidemark's own environment names a CLI config that does not exist: the runner block's
/// explicit `env` must win over the allowlisted inherited value (a regression: it did not, and
/// terraform then tried the registry).
const INHERITED: &[(&str, &str)] = &[("TF_CLI_CONFIG_FILE", "/nonexistent/terraformrc")];

/// A runner binary that waits at the plan or apply step until the test opens a gate file,
/// then runs terraform. It runs inside bubblewrap, which sees the gate directory read-only.
pub(crate) fn gated_terraform(dir: &Path) -> (PathBuf, PathBuf) {
    let gate = dir.join("gate");
    std::fs::create_dir_all(&gate).expect("gate dir");
    let script = dir.join("gated-terraform");
    let text = format!(
        "#!/bin/sh\ncase \"$1\" in\n  plan|apply) while [ ! -e \"{gate}/open-$1\" ]; do sleep 0.2; done ;;\nesac\nexec {tf} \"$@\"\n",
        gate = gate.display(),
        tf = Toolchain::get().terraform().display()
    );
    std::fs::write(&script, text).expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, gate)
}

fn config(dir: &Path, repo_url: &str, script: &Path, gate: &Path) -> PathBuf {
    let tools = Toolchain::get();
    let text = format!(
        r#"listen   = "127.0.0.1:0"
data_dir = "{data}"
workers  = 1

runner "terraform" {{
  binary  = "{script}"
  helpers = ["{tf}"]
  env = {{
    TF_CLI_CONFIG_FILE = "{rc}"
    CHECKPOINT_DISABLE = "1"
    TF_IN_AUTOMATION   = "1"
  }}
  sandbox {{
    ro_paths = ["/usr", "/bin", "/lib", "/lib64", "{gate}"]
  }}
}}

repo "infra" {{
  url           = "{repo_url}"
  poll_interval = "1s"
}}
"#,
        data = dir.join("data").display(),
        script = script.display(),
        tf = tools.terraform().display(),
        rc = tools.cli_config().display(),
        gate = gate.display(),
    );
    let path = dir.join("tidemark.hcl");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Waits until run `id` is running and its step `step` has started (its command line is in
/// the log), so a kill lands in the middle of that step.
pub(crate) async fn wait_for_step(store: &Store, id: i64, step: &str) {
    eventually(
        60,
        &format!("run {id} to reach its {step} step"),
        || async {
            let logs = store.logs(id).await.ok()?;
            logs.iter()
                .any(|l| l.step == step && l.stream == "system" && l.text.starts_with('$'))
                .then_some(())
        },
    )
    .await;
}

/// After a `kill -9` of the service: waits up to 10 s for the run's sandbox to die with it
/// (the step's lifeline arms a parent-death signal before bubblewrap starts), fails if it did
/// not, restarts the service, and checks that nothing of the killed run is left. Before the
/// lifeline, a sandbox the kill caught while bubblewrap was starting was reparented to init
/// (seen under load, 1 CI run in 3); the restarted service's sweep of stale workspaces is the
/// second line of defence, and the test's gates stay closed until then.
async fn restart_leaving_nothing(config: &Path, log: &Path, script_name: &str) -> ServeProcess {
    for _ in 0..100 {
        if !process_running(script_name) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let outlived = crate::support::processes_with(script_name);
    assert!(
        outlived.is_empty(),
        "the killed run's sandbox outlived the service (pid [state, ppid] cmdline): {outlived:#?}"
    );
    let leftovers: Vec<String> = outlived
        .iter()
        .filter_map(|p| p.split(' ').next().map(|pid| format!("{pid} ")))
        .collect();
    let serve = ServeProcess::start(config, INHERITED, log);
    let alive = || -> Vec<String> {
        crate::support::processes_with(script_name)
            .into_iter()
            .filter(|p| leftovers.iter().any(|pid| p.starts_with(pid)))
            .collect()
    };
    for _ in 0..100 {
        if alive().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = alive();
    assert!(
        left.is_empty(),
        "the killed run's sandbox outlived the service and its restart (pid [state, ppid] cmdline): {left:#?}"
    );
    serve
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_plan_retries_it_and_during_an_apply_locks_the_stack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let (script, gate) = gated_terraform(dir.path());
    let config = config(dir.path(), &git.url(), &script, &gate);
    let log = dir.path().join("serve.log");
    let db_url = format!("sqlite://{}", dir.path().join("data/tidemark.db").display());
    let script_name = script.display().to_string();

    // 1. The plan is killed mid-step with the service.
    let serve = ServeProcess::start(&config, INHERITED, &log);
    let store = eventually(30, "the database", || async {
        Store::connect(&db_url).await.ok()
    })
    .await;
    let first = eventually(30, "the first plan run", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        runs.into_iter().find(|r| r.status == RunStatus::Running)
    })
    .await;
    wait_for_step(&store, first.id, "plan").await;
    serve.kill_9();
    // bubblewrap dies with its parent: nothing of the run is left running.
    let serve = restart_leaving_nothing(&config, &log, &script_name).await;

    // After the restart the interrupted plan is visible and retried.
    std::fs::write(gate.join("open-plan"), "").expect("open the plan gate");
    let retry = eventually(120, "the retried plan to succeed", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        runs.into_iter()
            .find(|r| r.status == RunStatus::Succeeded && r.kind == RunKind::Plan)
    })
    .await;
    let interrupted = store.run(first.id).await.expect("first run");
    assert_eq!(
        interrupted.status,
        RunStatus::Interrupted,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        interrupted
            .error
            .as_deref()
            .unwrap_or("")
            .contains("worker stopped"),
        "{interrupted:?}"
    );
    assert_eq!(
        retry.reason.as_deref(),
        Some(format!("retry of run {}", first.id).as_str())
    );
    assert_eq!(retry.stack, "stacks/app");

    // 2. An apply of that plan (approved: the gate checks every apply) is killed mid-step.
    let repos = store.repos().await.expect("repos");
    crate::drift::approve(&store, retry.id).await;
    let apply = store
        .enqueue(&[NewRun {
            repo_id: repos[0].id,
            stack: retry.stack.clone(),
            commit: retry.commit.clone(),
            kind: RunKind::Apply,
            reason: Some("test".into()),
            after: Vec::new(),
            plan_run: Some(retry.id),
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        }])
        .await
        .expect("enqueue apply")[0];
    wait_for_step(&store, apply, "apply").await;
    serve.kill_9();
    let serve = restart_leaving_nothing(&config, &log, &script_name).await;
    std::fs::write(gate.join("open-apply"), "").expect("open the apply gate");

    // After the restart the apply is interrupted, not retried, and its stack stays locked.
    eventually(30, "the apply to be marked interrupted", || async {
        (store.run(apply).await.ok()?.status == RunStatus::Interrupted).then_some(())
    })
    .await;
    // A plan queued for the locked stack waits; give the workers a few claim rounds to prove it.
    let blocked = store
        .enqueue(&[NewRun {
            repo_id: repos[0].id,
            stack: retry.stack.clone(),
            commit: retry.commit.clone(),
            kind: RunKind::Plan,
            reason: Some("test".into()),
            after: Vec::new(),
            plan_run: None,
            transitive: false,
            pr_number: None,
            reviewed_run: None,
        }])
        .await
        .expect("enqueue plan")[0];
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        store.run(blocked).await.expect("run").status,
        RunStatus::Queued,
        "the locked stack runs nothing"
    );
    let applies = store
        .runs(&RunFilter {
            kind: Some(RunKind::Apply),
            ..Default::default()
        })
        .await
        .expect("runs");
    assert_eq!(
        applies.len(),
        1,
        "the interrupted apply was not re-run: {applies:#?}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["locks", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .expect("tidemark locks");
    let locks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("locks json");
    assert_eq!(locks["locks"][0]["stack"], "stacks/app", "{locks}");
    assert_eq!(locks["locks"][0]["run_id"], apply);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["unlock", "stacks/app", "--config"])
        .arg(&config)
        .output()
        .expect("tidemark unlock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        60,
        "the waiting plan to run once the stack is unlocked",
        || async { (store.run(blocked).await.ok()?.status == RunStatus::Succeeded).then_some(()) },
    )
    .await;
    let status = serve.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}
