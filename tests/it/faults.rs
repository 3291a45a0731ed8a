//! Database faults under the real binary. PostgreSQL behind a TCP proxy written for the test
//! that cuts every connection mid-run and then refuses connections for 20 s: the service
//! stays up, says it is degraded, resumes by itself and loses no run. SQLite on a disk that
//! fills up (a 16 MiB tmpfs in a mount namespace the test creates): a clear error, no corrupt
//! database, and work resumes once space is freed. A read-only SQLite file is refused at start
//! with its name.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark::store::{RunFilter, RunKind, RunStatus, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::recovery::{gated_terraform, wait_for_step};
use crate::support::{
    GitFixture, ServeProcess, TestDb, Toolchain, eventually, free_port, null_stack,
};

/// A TCP proxy to PostgreSQL that can cut every open connection and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let refuse = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (refusing, conns) = (refuse.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().expect("conns").push(task.abort_handle());
            }
        });
        Proxy { addr, refuse, open }
    }

    /// Closes every open connection and refuses new ones until [`Proxy::heal`].
    fn cut(&self) {
        self.refuse.store(true, Ordering::SeqCst);
        for conn in self.open.lock().expect("conns").drain(..) {
            conn.abort();
        }
    }

    fn heal(&self) {
        self.refuse.store(false, Ordering::SeqCst);
    }
}

fn service_config(dir: &Path, port: u16, database: &str, repo_url: &str, script: &Path) -> String {
    let tools = Toolchain::get();
    format!(
        r#"listen   = "127.0.0.1:{port}"
database = "{database}"
data_dir = "{data}"
workers  = 1
sandbox  = "none"

runner "terraform" {{
  binary  = "{script}"
  env = {{
    TF_CLI_CONFIG_FILE = "{rc}"
    CHECKPOINT_DISABLE = "1"
  }}
}}

repo "infra" {{
  url           = "{repo_url}"
  poll_interval = "1s"
}}
"#,
        data = dir.join("data").display(),
        script = script.display(),
        rc = tools.cli_config().display(),
    )
}

async fn health(port: u16) -> Option<(u16, serde_json::Value)> {
    tidemark::install_crypto_provider();
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_mid_run_then_refused_for_20_s_degrades_and_resumes_losing_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let (script, gate) = gated_terraform(dir.path());
    let mut url = url::Url::parse(&db.url).expect("database url");
    let upstream: SocketAddr = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .expect("upstream addr");
    let proxy = Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).expect("port");
    let port = free_port();
    let config = dir.path().join("tidemark.hcl");
    std::fs::write(
        &config,
        service_config(dir.path(), port, url.as_str(), &git.url(), &script),
    )
    .expect("config");
    let log = dir.path().join("serve.log");
    let mut serve = ServeProcess::start(&config, &[], &log);
    let store = eventually(30, "the database", || async {
        Store::connect(&db.url).await.ok()
    })
    .await;
    let first = eventually(60, "the plan to start", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        runs.into_iter().find(|r| r.status == RunStatus::Running)
    })
    .await;
    wait_for_step(&store, first.id, "plan").await;

    // Mid-step, the database goes away for 20 s; the step ends during the outage.
    proxy.cut();
    let outage = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(gate.join("open-plan"), "").expect("open the plan gate");
    let (status, body) = eventually(15, "health to say degraded", || async {
        health(port).await.filter(|(status, _)| *status == 503)
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "degraded", "{body}");
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed())).await;
    assert!(
        serve.child.try_wait().expect("wait").is_none(),
        "the service exited during the outage: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    proxy.heal();

    // It resumes by itself: health is ok again and the plan ends succeeded (the one that was
    // cut, or its retry), exactly once.
    eventually(60, "health to recover", || async {
        health(port).await.filter(|(status, _)| *status == 200)
    })
    .await;
    let runs = eventually(120, "the plan to succeed after the outage", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        (runs
            .iter()
            .any(|r| r.kind == RunKind::Plan && r.status == RunStatus::Succeeded)
            && runs.iter().all(|r| r.status.is_final()))
        .then_some(runs)
    })
    .await;
    let succeeded: Vec<_> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Plan && r.status == RunStatus::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 1, "{runs:#?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("error communicating with database"),
        "the outage was not logged: {text}"
    );
    // A new commit after the outage is planned as usual.
    git.write("stacks/app/main.tf", &null_stack("v2"));
    let second = git.commit_and_push("after the outage");
    std::fs::write(gate.join("open-plan"), "").expect("gate");
    eventually(120, "a plan of the next commit", || async {
        let runs = store.runs(&RunFilter::default()).await.ok()?;
        runs.into_iter()
            .find(|r| r.commit == second && r.status == RunStatus::Succeeded)
    })
    .await;
    serve.terminate();
}

/// Runs `tidemark serve` inside a new user and mount namespace with a 16 MiB tmpfs mounted on
/// `mnt`, where its SQLite database lives. The test reads the runs over the API, writes the
/// filler through `/proc/PID/root`, and checks the database from inside the namespace.
fn serve_on_tmpfs(mnt: &Path, config: &Path, log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).expect("log");
    let err = out.try_clone().expect("log");
    std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=16m tmpfs '{mnt}' && exec '{bin}' serve --config '{config}'",
            mnt = mnt.display(),
            bin = env!("CARGO_BIN_EXE_tidemark"),
            config = config.display(),
        ))
        .env("TIDEMARK_LOG", "info,sqlx=warn")
        .env("NO_COLOR", "1")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("unshare")
}

/// The runs the service lists (newest first) as `(commit, status)`.
async fn api_runs(port: u16) -> Vec<(String, String)> {
    tidemark::install_crypto_provider();
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/runs")).await else {
        return Vec::new();
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    (field("commit"), field("status"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_errors_clearly_keeps_its_database_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    let first = git.commit_and_push("one stack");
    let mnt = dir.path().join("db");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let port = free_port();
    let config = dir.path().join("tidemark.hcl");
    let db_file = mnt.join("tidemark.db");
    let database = format!("sqlite://{}", db_file.display());
    let text = service_config(
        dir.path(),
        port,
        &database,
        &git.url(),
        &Toolchain::get().terraform(),
    );
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("serve.log");
    let mut child = serve_on_tmpfs(&mnt, &config, &log);
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let planned = |commit: String| async move {
        let runs = api_runs(port).await;
        runs.iter()
            .any(|(c, status)| *c == commit && status == "succeeded")
            .then_some(())
    };
    eventually(120, "the first plan", || planned(first.clone())).await;

    // Fill the disk, then push commits: the service cannot write, says why, and stays up.
    let root = Path::new("/proc").join(child.id().to_string()).join("root");
    let filler = root
        .join(mnt.strip_prefix("/").expect("absolute"))
        .join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    for n in 2..6 {
        git.write("stacks/app/main.tf", &null_stack(&format!("v{n}")));
        git.commit_and_push(&format!("commit {n}"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eventually(60, "the full disk to be logged", || async {
        serve_log()
            .contains("database or disk is full")
            .then_some(())
    })
    .await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the service exited on a full disk: {}",
        serve_log()
    );

    // Space comes back: the head is planned and the database is intact.
    std::fs::remove_file(&filler).expect("free the space");
    let head = git.head();
    eventually(120, "the head to be planned once space is back", || {
        planned(head.clone())
    })
    .await;
    let check = std::process::Command::new("nsenter")
        .arg("-t")
        .arg(child.id().to_string())
        .args(["-U", "-m", "--preserve-credentials", "python3", "-c"])
        .arg(format!(
            "import sqlite3; print(sqlite3.connect('{}').execute('PRAGMA integrity_check').fetchone()[0])",
            db_file.display()
        ))
        .output()
        .expect("nsenter");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_sqlite_database_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = GitFixture::new();
    git.write("stacks/app/main.tf", &null_stack("v1"));
    git.commit_and_push("one stack");
    let db_dir = dir.path().join("db");
    std::fs::create_dir_all(&db_dir).expect("db dir");
    let file = db_dir.join("tidemark.db");
    let url = format!("sqlite://{}", file.display());
    Store::open(&url).await.expect("create").close().await;
    let before = std::fs::read(&file).expect("read");
    let config = dir.path().join("tidemark.hcl");
    let text = service_config(
        dir.path(),
        free_port(),
        &url,
        &git.url(),
        &Toolchain::get().terraform(),
    );
    std::fs::write(&config, text).expect("config");
    // A read-only bind mount in a mount namespace of the test's own: read-only even for root.
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!(
            "mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}' && exec '{bin}' serve --config '{config}'",
            d = db_dir.display(),
            bin = env!("CARGO_BIN_EXE_tidemark"),
            config = config.display(),
        ))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().expect("wait");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("serve did not refuse the read-only database within 60 s");
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("read-only") || stderr.to_lowercase().contains("readonly"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "the file changed"
    );
}
