//! Access control over HTTP, with the issue's `access` block: reads need a viewer's token
//! unless they are open, acting needs an operator's, the audit log (admin only) records every
//! action with who and how it ended, and a service listening beyond loopback without an
//! `access` block refuses to start.

use sha2::Digest;
use tidemark::app::App;
use tidemark::config::Config;

fn start_config(dir: &std::path::Path, listen: &str, access: &str) -> Config {
    let text = format!(
        "listen = \"{listen}\"\ndata_dir = \"{}\"\nsandbox = \"none\"\n{access}\n",
        dir.join("data").display()
    );
    let file = dir.join("tidemark.hcl");
    std::fs::write(&file, &text).expect("config");
    tidemark::install_crypto_provider();
    Config::parse(&file, &text, dir).expect("valid config")
}

#[tokio::test]
async fn tokens_have_roles_and_every_action_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reader = hex::encode(sha2::Sha256::digest(b"reader-token"));
    // PATH is always set: its value stands in for an operator token read from the environment.
    let operator = std::env::var("PATH").expect("PATH");
    let access = format!(
        "api_token_env = \"HOME\"\naccess {{\n  open_read = false\n  token \"ops\" {{\n    role = \"operator\"\n    env  = \"PATH\"\n  }}\n  token \"reader\" {{\n    role   = \"viewer\"\n    sha256 = \"{reader}\"\n  }}\n}}\n"
    );
    let app = App::start(start_config(dir.path(), "127.0.0.1:0", &access))
        .await
        .expect("start");
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("get").status().as_u16() }
    };
    assert_eq!(get("/api/v1/runs", None).await, 401);
    assert_eq!(get("/api/v1/runs", Some("wrong")).await, 401);
    assert_eq!(get("/api/v1/runs", Some("reader-token")).await, 200);
    assert_eq!(get("/healthz", None).await, 200, "health needs no token");
    assert_eq!(get("/api/v1/audit", Some("reader-token")).await, 403);
    let approve = |token: &str| {
        client
            .post(format!("{base}/api/v1/runs/999/approve"))
            .bearer_auth(token.to_string())
            .json(&serde_json::json!({ "actor": "carol" }))
            .send()
    };
    assert_eq!(
        approve("reader-token")
            .await
            .expect("post")
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        approve(&operator).await.expect("post").status().as_u16(),
        404,
        "an operator gets through to the (missing) run"
    );
    let home = std::env::var("HOME").expect("HOME");
    let audit: serde_json::Value = client
        .get(format!("{base}/api/v1/audit"))
        .bearer_auth(&home)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let records = audit["audit"].as_array().expect("records");
    // The refused read of the audit log is audited too.
    assert_eq!(records.len(), 3, "{audit}");
    assert_eq!(records[2]["action"], "GET /api/v1/audit");
    assert_eq!(records[1]["actor"], "reader (viewer)");
    assert_eq!(records[1]["outcome"], "403 Forbidden");
    assert_eq!(records[0]["actor"], "ops (operator)");
    assert_eq!(records[0]["action"], "POST /api/v1/runs/999/approve");
    assert!(
        records[0]["remote"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{audit}"
    );
    app.stop().await;
}

#[tokio::test]
async fn listening_beyond_loopback_without_an_access_block_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = App::start(start_config(dir.path(), "0.0.0.0:0", ""))
        .await
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("has no access block"), "{text}");
    // With one, it starts; loopback without one reads openly.
    let open = App::start(start_config(
        dir.path(),
        "0.0.0.0:0",
        "access {\n  open_read = true\n}\n",
    ))
    .await
    .expect("start");
    open.stop().await;
    let local = App::start(start_config(dir.path(), "127.0.0.1:0", ""))
        .await
        .expect("start");
    let status = reqwest::get(format!("http://{}/api/v1/runs", local.addr))
        .await
        .expect("get")
        .status()
        .as_u16();
    assert_eq!(status, 200);
    local.stop().await;
}
