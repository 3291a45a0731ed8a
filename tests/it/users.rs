//! Password logins on the real binary: `tidemark hash-password` makes the argon2id hash, a
//! `user` block names the variable holding it, the login form trades the name and password
//! for a session cookie with the user's role; a wrong password or an unknown name gets 401 and
//! an audit record; a variable that does not hold an argon2id hash stops the start, naming
//! the user and the variable.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;

use crate::dashboard::Browser;
use crate::support::{GitFixture, ServeProcess, eventually, null_stack};

fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tidemark hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

fn config(dir: &Path, port: u16, repo_url: &str) -> std::path::PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\nsandbox = \"none\"\n\
         repo \"infra\" {{\n  url = \"{repo_url}\"\n  poll_interval = \"1h\"\n}}\n\
         access {{\n  user \"alice\" {{\n    role              = \"operator\"\n    \
         password_hash_env = \"ALICE_PASSWORD_HASH\"\n  }}\n  \
         token \"root\" {{\n    role = \"admin\"\n    env  = \"ROOT_TOKEN\"\n  }}\n}}\n",
        data = dir.join("data").display(),
    );
    let path = dir.join("tidemark.hcl");
    std::fs::write(&path, text).expect("config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_with_a_password_and_acts_with_its_role() {
    tidemark::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let hash = hash_password("correct horse battery");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let port = crate::support::free_port();
    let config = config(dir.path(), port, &git.url());
    let log = dir.path().join("serve.log");
    let env = [
        ("ALICE_PASSWORD_HASH", hash.as_str()),
        ("ROOT_TOKEN", "root-token"),
    ];
    let _serve = ServeProcess::start(&config, &env, &log);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut alice = Browser::new(addr);
    let login = eventually(30, "the login page", || async {
        reqwest::get(format!("http://{addr}/login"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await;
    assert!(login.contains("name=\"username\""), "{login}");
    assert!(login.contains("name=\"password\""), "{login}");

    for (user, password) in [("alice", "wrong"), ("mallory", "correct horse battery")] {
        let (status, _) = alice
            .post(
                "/login",
                &[("username", user), ("password", password), ("next", "/")],
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}");
    }
    assert!(alice.cookie.is_none());
    let (status, location) = alice
        .post(
            "/login",
            &[
                ("username", "alice"),
                ("password", "correct horse battery"),
                ("next", "/locks"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/locks"));
    let (status, page, _) = alice.get("/locks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("alice <span class=\"badge\">operator</span>"),
        "{page}"
    );
    assert!(
        page.contains("name=\"csrf\""),
        "an operator sees the forms: {page}"
    );
    // An operator's session reads the API but the audit log is for admins.
    assert_eq!(alice.get("/api/v1/runs").await.0, StatusCode::OK);
    assert_eq!(alice.get("/api/v1/audit").await.0, StatusCode::FORBIDDEN);

    let audit: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/audit"))
        .bearer_auth("root-token")
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let text = audit.to_string();
    assert!(
        text.contains("wrong password or unknown user \\\"mallory\\\""),
        "{text}"
    );
    assert!(text.contains("alice (operator)"), "{text}");
    assert!(
        !text.contains("correct horse"),
        "the password reached the audit log"
    );
    assert!(
        !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("correct horse"),
        "the password reached the log"
    );
}

#[test]
fn a_variable_without_an_argon2id_hash_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let config = config(dir.path(), 0, &git.url());
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("ALICE_PASSWORD_HASH", "hunter2")
        .env("ROOT_TOKEN", "root-token")
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("user \"alice\": ALICE_PASSWORD_HASH does not hold an argon2id hash"),
        "{stderr}"
    );
}
