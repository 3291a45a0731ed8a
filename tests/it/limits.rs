//! Slow clients against the running service: a client that never finishes its headers is cut
//! off after the header timeout, one that never finishes its body gets an error and acts on
//! nothing, and the service goes on answering everyone else meanwhile.

use std::time::{Duration, Instant};

use tidemark::app::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{GitFixture, TestDb, null_stack};

/// Reads until the server closes the connection (or 10 s pass), returning what it sent and
/// when it closed.
async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the server kept a slow connection open for 10 s"
    );
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("app"));
    git.commit_and_push("one stack");
    let db = TestDb::sqlite();
    let mut config = crate::controls::config(dir.path(), &db.url, &git.url());
    config.http_timeouts = (Duration::from_secs(1), Duration::from_secs(1));
    let app = App::start(config).await.expect("start");
    let base = format!("http://{}", app.addr);

    // Headers a byte short of their end: the connection is closed after the header timeout.
    let mut slow_headers = TcpStream::connect(app.addr).await.expect("connect");
    slow_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tidemark\r\n")
        .await
        .expect("write");
    // Meanwhile everyone else is served.
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("health");
    assert!(health.status().is_success(), "{health:?}");
    let (sent, closed_after) = read_to_close(&mut slow_headers).await;
    assert!(
        closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    assert!(!sent.contains("200 OK"), "{sent}");

    // A body that stops halfway: the request fails once the body timeout passes, and the
    // freeze it asked for does not happen.
    let operator = std::env::var("PATH").expect("PATH");
    let mut slow_body = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/freeze HTTP/1.1\r\nHost: tidemark\r\nAuthorization: Bearer {operator}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"reason\": \"hal"
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let (sent, closed_after) = read_to_close(&mut slow_body).await;
    assert!(
        closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    assert!(
        sent.starts_with("HTTP/1.1 4") || sent.is_empty(),
        "a late body must fail its request: {sent}"
    );
    let frozen: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/freeze"))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("freeze state")
        .json()
        .await
        .expect("json");
    assert_eq!(frozen["frozen"], false, "{frozen}");
    app.stop().await;
}
