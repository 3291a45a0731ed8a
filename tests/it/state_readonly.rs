//! State is read-only for plans: a plan runs code a pull request may have added, so its state
//! credential, which sits in every step's environment, must not be able to write or delete
//! the state it reads. A plan whose step tries to POST and DELETE its stack's state with the
//! run's own credential is refused (403) and the stored versions stay as they were; the
//! apply's credential still writes.

use std::path::{Path, PathBuf};

use tidemark::store::{NewRun, RunKind, RunStatus};

use crate::support::{GitFixture, Toolchain, eventually, null_stack};

/// A terraform wrapper whose `plan` step first tries to overwrite and delete the stack's state
/// with the credential the run was given (as a provider or an `external` data source could).
fn wrapper(dir: &Path) -> PathBuf {
    let script = dir.join("terraform-wrapper");
    let text = format!(
        r#"#!/bin/sh
if [ "$1" = plan ]; then
  post=$(curl -s -o /dev/null -w '%{{http_code}}' -u "$TF_HTTP_USERNAME:$TF_HTTP_PASSWORD" \
    -X POST -H 'Content-Type: application/json' \
    --data '{{"version":4,"terraform_version":"1.0.3","serial":99,"lineage":"forged","outputs":{{}},"resources":[]}}' \
    "$TF_HTTP_ADDRESS")
  delete=$(curl -s -o /dev/null -w '%{{http_code}}' -u "$TF_HTTP_USERNAME:$TF_HTTP_PASSWORD" -X DELETE "$TF_HTTP_ADDRESS")
  read=$(curl -s -o /dev/null -w '%{{http_code}}' -u "$TF_HTTP_USERNAME:$TF_HTTP_PASSWORD" "$TF_HTTP_ADDRESS")
  echo "forged state post=$post delete=$delete get=$read" >&2
fi
exec {} "$@"
"#,
        Toolchain::get().terraform().display()
    );
    std::fs::write(&script, text).expect("write wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[tokio::test]
async fn a_plan_cannot_write_its_stacks_state_with_its_own_credential() {
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let tools = Toolchain::get();
    let text = format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"
workers = 1

runner "terraform" {{
  binary  = "{wrapper}"
  helpers = ["{tf}"]
  env = {{
    TF_CLI_CONFIG_FILE = "{rc}"
    CHECKPOINT_DISABLE = "1"
    TF_IN_AUTOMATION   = "1"
  }}
}}

repo "infra" {{
  url = "{url}"
  poll_interval = "1s"
}}
"#,
        data = data.display(),
        wrapper = wrapper(dir.path()).display(),
        tf = tools.terraform().display(),
        rc = tools.cli_config().display(),
        url = git.url(),
    );
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, &text).expect("config");
    let mut config = tidemark::config::Config::parse(&file, &text, dir.path()).expect("config");
    config.exe = Some(env!("CARGO_BIN_EXE_tidemark").into());
    let app = tidemark::app::App::start(config).await.expect("start");
    let store = app.store.clone();
    let settled = |id: i64| {
        let store = store.clone();
        async move {
            eventually(180, &format!("run {id} to finish"), || async {
                let run = store.run(id).await.ok()?;
                run.status.is_final().then_some(run)
            })
            .await
        }
    };
    let logs = |id: i64| {
        let store = store.clone();
        async move {
            store
                .logs(id)
                .await
                .expect("logs")
                .iter()
                .map(|l| format!("{}\n", l.text))
                .collect::<String>()
        }
    };
    let first = eventually(60, "the first plan", || async {
        store
            .runs(&Default::default())
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await;
    let first = settled(first.id).await;
    let log = logs(first.id).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{log}");
    assert!(
        log.contains("forged state post=403 delete=403 get=204"),
        "{log}"
    );
    assert!(
        store
            .state_versions("infra", "stacks/app")
            .await
            .expect("versions")
            .is_empty(),
        "a plan wrote state"
    );

    // The apply's credential writes; a second plan's forgery changes nothing.
    crate::drift::approve(&store, first.id).await;
    let repo_id = store.repos().await.expect("repos")[0].id;
    let run = |kind: RunKind, plan_run: Option<i64>| NewRun {
        repo_id,
        stack: first.stack.clone(),
        commit: first.commit.clone(),
        kind,
        reason: Some("test".into()),
        after: Vec::new(),
        plan_run,
        transitive: false,
        pr_number: None,
        reviewed_run: None,
    };
    let apply = store
        .enqueue(&[run(RunKind::Apply, Some(first.id))])
        .await
        .expect("apply")[0];
    let applied = settled(apply).await;
    assert_eq!(
        applied.status,
        RunStatus::Succeeded,
        "{}",
        logs(apply).await
    );
    let before = store
        .state_versions("infra", "stacks/app")
        .await
        .expect("versions");
    assert_eq!(before.len(), 1, "the apply stored its state");
    let second = store
        .enqueue(&[run(RunKind::Plan, None)])
        .await
        .expect("plan")[0];
    let second_run = settled(second).await;
    let log = logs(second).await;
    assert_eq!(second_run.status, RunStatus::Succeeded, "{log}");
    assert!(
        log.contains("forged state post=403 delete=403 get=200"),
        "{log}"
    );
    let after = store
        .state_versions("infra", "stacks/app")
        .await
        .expect("versions");
    assert_eq!(
        after
            .iter()
            .map(|v| (v.serial, v.lineage.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|v| (v.serial, v.lineage.clone()))
            .collect::<Vec<_>>(),
        "the stored versions changed"
    );
    app.stop().await;
}
