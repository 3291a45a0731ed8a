//! The `tidemark` binary as a user meets it: config errors, migrations, the run list.

use std::process::Command;

fn tidemark(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TIDEMARK_DATABASE_URL")
        .env_remove("TIDEMARK_LISTEN")
        .env_remove("TIDEMARK_CONFIG")
        .output()
        .expect("run tidemark")
}

#[test]
fn a_malformed_config_names_the_file_line_and_attribute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(&file, "listen = \"127.0.0.1:8080\"\n\nrepo \"infra\" {\n  url = \"file:///srv/infra.git\"\n  poll_interval = \"often\"\n}\n")
        .expect("write");
    let out = tidemark(
        &["runs", "--config", file.to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:5: repo.infra.poll_interval: \"often\" is not a duration",
            file.display()
        )),
        "{stderr}"
    );

    std::fs::write(&file, "listen = \"127.0.0.1:8080\"\nrepo \"infra\" {\n").expect("write");
    let out = tidemark(
        &["runs", "--config", file.to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:", file.display())), "{stderr}");
}

#[test]
fn migrate_then_runs_on_the_default_sqlite_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tidemark(&["migrate", "--format", "json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["backend"], "sqlite");
    assert!(report["applied"].as_u64().unwrap_or(0) >= 1, "{report}");
    let again = tidemark(&["migrate", "--format", "json"], dir.path());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(
        again["applied"], 0,
        "a second migrate has nothing left to apply"
    );
    assert!(
        dir.path().join(".tidemark/tidemark.db").exists(),
        "the default database lives in .tidemark"
    );

    let out = tidemark(&["runs", "--format", "json"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(runs, serde_json::json!({ "runs": [] }));
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidemark.hcl");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &file,
        "database = \"postgres://postgres@127.0.0.1:1/none\"\n",
    )
    .expect("write");
    let out = tidemark(
        &["runs", "--config", file.to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("connecting to database postgres://postgres@127.0.0.1:1/none"),
        "{stderr}"
    );
}
