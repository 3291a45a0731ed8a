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

#[test]
fn poll_asks_the_running_service_and_says_when_none_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A free loopback port for this test's service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let file = dir.path().join("tidemark.hcl");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{port}\"\nsandbox = \"none\"\nrepo \"infra\" {{\n  url = \"file:///nonexistent/infra.git\"\n}}\n"),
    )
    .expect("write");
    let config = file.to_str().expect("utf-8");

    let out = tidemark(&["poll", "infra", "--config", config], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `tidemark serve` running?"));

    let _serve = crate::support::ServeProcess::start(&file, &[], &dir.path().join("serve.log"));
    let mut answered = None;
    for _ in 0..100 {
        let out = tidemark(
            &["poll", "infra", "--format", "json", "--config", config],
            dir.path(),
        );
        if out.status.success() {
            answered = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = answered.expect("the service answered the poll request");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        body,
        serde_json::json!({ "repo": "infra", "poll": "requested" })
    );
}

/// `tidemark vars` shows which sets a stack's plans and applies get and the names they set,
/// in order, without reading a secret (the secret's variable is not even set here); a bad
/// glob is a config error naming the file, line and attribute.
#[test]
fn vars_lists_the_matching_sets_and_names_per_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tidemark.hcl");
    let config = format!(
        r#"data_dir = "{}"
repo "infra" {{
  url = "file:///srv/infra.git"
}}
variables "aws-prod" {{
  stacks     = ["stacks/prod/**"]
  terraform  = {{ region = "eu-west-1" }}
  secret_env = {{ AWS_SECRET_ACCESS_KEY = "TIDEMARK_TEST_NEVER_SET" }}
}}
variables "dev" {{
  stacks = ["stacks/dev/**"]
  env    = {{ AWS_PROFILE = "dev" }}
}}
variables "write" {{
  phases = ["apply"]
  tags   = ["critical"]
  env    = {{ MODE = "read-write" }}
}}
"#,
        dir.path().join("data").display()
    );
    std::fs::write(&file, &config).expect("write");
    let path = file.to_str().expect("utf-8");
    let out = tidemark(
        &[
            "vars",
            "stacks/prod/app",
            "--config",
            path,
            "--tag",
            "critical",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json["plan"],
        serde_json::json!([{"set": "aws-prod", "names": ["AWS_SECRET_ACCESS_KEY", "TF_VAR_region"]}])
    );
    assert_eq!(
        json["apply"][1],
        serde_json::json!({"set": "write", "names": ["MODE"]})
    );
    assert_eq!(json["stack"], "stacks/prod/app");

    let out = tidemark(&["vars", "stacks/dev/app", "--config", path], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dev: AWS_PROFILE"), "{text}");
    assert!(
        !text.contains("aws-prod") && !text.contains("write"),
        "{text}"
    );

    std::fs::write(&file, config.replace("stacks/dev/**", "stacks/[dev")).expect("write");
    let out = tidemark(&["vars", "stacks/dev/app", "--config", path], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:11: variables.dev.stacks: not a valid glob",
            file.display()
        )),
        "{stderr}"
    );
}
