//! Scale-out: two `tidemark serve` processes on one PostgreSQL database share the work of a
//! 50-stack repository; every stack is planned exactly once, in dependency order.

use std::collections::HashMap;
use std::path::Path;

use tidemark::store::{RunFilter, RunStatus, Store};

use crate::support::{GitFixture, ServeProcess, TestDb, Toolchain, eventually};

const STACKS: usize = 50;
const CHAIN: usize = 5;

/// Stack `i` depends on stack `i - 1` within chains of five: s00 <- s01 <- ... <- s04, s05 <- ...
fn upstream(i: usize) -> Option<usize> {
    (!i.is_multiple_of(CHAIN)).then(|| i - 1)
}

/// A runner binary that logs every call (start and end, with the stack) and runs terraform.
fn logging_terraform(dir: &Path, log: &Path) -> std::path::PathBuf {
    let script = dir.join("logging-terraform");
    let text = format!(
        "#!/bin/sh\nstack=$(pwd | sed 's|.*/tree/||')\necho \"$(date +%s%N) start $1 $stack\" >> {log}\n{tf} \"$@\"\nrc=$?\necho \"$(date +%s%N) end $1 $stack\" >> {log}\nexit $rc\n",
        log = log.display(),
        tf = Toolchain::get().terraform().display()
    );
    std::fs::write(&script, text).expect("write script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn instance_config(
    dir: &Path,
    name: &str,
    database: &str,
    repo_url: &str,
    script: &Path,
) -> std::path::PathBuf {
    let text = format!(
        r#"listen   = "127.0.0.1:0"
database = "{database}"
data_dir = "{data}"
workers  = 2
# The calls are logged to a file outside the workspace, which the sandbox would hide.
sandbox  = "none"
plan_key_env = "TEST_PLAN_KEY"

runner "terraform" {{
  binary = "{script}"
  env = {{
    TF_CLI_CONFIG_FILE = "{rc}"
    CHECKPOINT_DISABLE = "1"
  }}
}}

repo "mono" {{
  url           = "{repo_url}"
  poll_interval = "1s"
}}
"#,
        data = dir.join(name).display(),
        script = script.display(),
        rc = Toolchain::get().cli_config().display(),
    );
    let path = dir.join(format!("{name}.hcl"));
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_plan_every_stack_exactly_once_in_order() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    for i in 0..STACKS {
        let path = format!("stacks/s{i:02}");
        git.write(
            &format!("{path}/main.tf"),
            &format!("output \"id\" {{\n  value = \"s{i:02}\"\n}}\n"),
        );
        let depends = upstream(i)
            .map(|u| format!("  depends_on = [\"../s{u:02}\"]\n"))
            .unwrap_or_default();
        git.write(
            &format!("{path}/stack.hcl"),
            &format!("stack {{\n{depends}}}\n"),
        );
    }
    git.commit_and_push("fifty stacks");
    let calls = dir.path().join("calls.log");
    let script = logging_terraform(dir.path(), &calls);
    // Both instances must share the key that encrypts plans, or one could not apply the other's.
    let key = "11".repeat(32);
    let env = [("TEST_PLAN_KEY", key.as_str())];
    let serve_log = dir.path().join("serve.log");
    let a = ServeProcess::start(
        &instance_config(dir.path(), "a", &db.url, &git.url(), &script),
        &env,
        &serve_log,
    );
    let b = ServeProcess::start(
        &instance_config(dir.path(), "b", &db.url, &git.url(), &script),
        &env,
        &serve_log,
    );

    let store = eventually(30, "the database", || async {
        Store::connect(&db.url).await.ok()
    })
    .await;
    let runs = eventually(300, "every plan to finish", || async {
        let runs = store
            .runs(&RunFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .ok()?;
        (runs.len() >= STACKS && runs.iter().all(|r| r.status.is_final())).then_some(runs)
    })
    .await;
    drop((a, b));

    let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
    assert_eq!(
        runs.len(),
        STACKS,
        "one run per stack, even with two pollers: {log}"
    );
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    let workers: std::collections::BTreeSet<&str> = runs
        .iter()
        .filter_map(|r| r.worker.as_deref())
        .map(|w| w.rsplit_once('#').map(|(i, _)| i).unwrap_or(w))
        .collect();
    assert_eq!(workers.len(), 2, "both instances took work: {workers:?}");

    // Count terraform's plan invocations per stack, and when each started and ended.
    let mut starts: HashMap<String, Vec<u128>> = HashMap::new();
    let mut ends: HashMap<String, u128> = HashMap::new();
    for line in std::fs::read_to_string(&calls).expect("calls log").lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [at, event, "plan", stack] = parts.as_slice() else {
            continue;
        };
        let at: u128 = at.parse().expect("timestamp");
        match *event {
            "start" => starts.entry(stack.to_string()).or_default().push(at),
            "end" => {
                ends.insert(stack.to_string(), at);
            }
            _ => {}
        }
    }
    for i in 0..STACKS {
        let stack = format!("stacks/s{i:02}");
        assert_eq!(
            starts.get(&stack).map(Vec::len),
            Some(1),
            "{stack} planned exactly once"
        );
        if let Some(u) = upstream(i) {
            let up = format!("stacks/s{u:02}");
            assert!(
                ends[&up] < starts[&stack][0],
                "{stack} was planned after its upstream {up} finished"
            );
        }
    }
}
