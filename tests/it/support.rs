//! Test fixtures shared by the integration tests: git repositories built in temp dirs, served
//! to Tidemark as bare remotes over `file://`, and the terraform toolchain from the project's
//! own install script.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A working repository plus the bare remote it pushes to.
pub struct GitFixture {
    pub dir: tempfile::TempDir,
}

impl GitFixture {
    /// An empty working repository on branch `main` with a bare remote at `remote.git`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Self { dir };
        std::fs::create_dir_all(fixture.work()).expect("mkdir work");
        git(
            fixture.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(&fixture.work(), &["init", "-q", "-b", "main"]);
        git(
            &fixture.work(),
            &["remote", "add", "origin", &fixture.url()],
        );
        fixture
    }

    /// The working copy where tests write files and commit.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The bare remote's path.
    pub fn remote(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// The remote as a `file://` URL, the way a server config names it.
    pub fn url(&self) -> String {
        format!("file://{}", self.remote().display())
    }

    /// Writes (or overwrites) a file in the working copy, creating directories.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let full = self.work().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
        self
    }

    /// Removes a file or directory from the working copy.
    pub fn remove(&self, path: &str) -> &Self {
        let full = self.work().join(path);
        if full.is_dir() {
            std::fs::remove_dir_all(full).expect("rm -r");
        } else {
            std::fs::remove_file(full).expect("rm");
        }
        self
    }

    /// Commits everything in the working copy and returns the new commit's sha.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    /// Commits and pushes `main` to the bare remote; returns the sha.
    pub fn commit_and_push(&self, message: &str) -> String {
        let sha = self.commit(message);
        git(&self.work(), &["push", "-q", "origin", "main"]);
        sha
    }

    pub fn head(&self) -> String {
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}

/// Runs git with a fixed identity and returns its trimmed stdout; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.test")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.test")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Terraform 1.0.3 and the null provider mirror, installed once per test run by
/// `scripts/install-terraform.sh` into `TIDEMARK_TOOLS_DIR` (default: `target/tools`).
pub struct Toolchain {
    pub prefix: PathBuf,
}

impl Toolchain {
    pub fn get() -> &'static Toolchain {
        static TOOLS: OnceLock<Toolchain> = OnceLock::new();
        TOOLS.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let prefix = std::env::var_os("TIDEMARK_TOOLS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/tools"));
            let status = Command::new("bash")
                .arg(root.join("scripts/install-terraform.sh"))
                .arg(&prefix)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run install-terraform.sh");
            assert!(status.success(), "install-terraform.sh failed");
            Toolchain { prefix }
        })
    }

    pub fn terraform(&self) -> PathBuf {
        self.prefix.join("bin/terraform")
    }

    pub fn cli_config(&self) -> PathBuf {
        self.prefix.join("terraform.rc")
    }

    /// A server-config `runner "terraform"` block that runs this toolchain's terraform,
    /// offline from its provider mirror (tests cannot change Tidemark's own environment).
    pub fn runner_override(&self) -> String {
        format!(
            "runner \"terraform\" {{\n  binary = \"{}\"\n  env = {{\n    TF_CLI_CONFIG_FILE = \"{}\"\n    CHECKPOINT_DISABLE = \"1\"\n    TF_IN_AUTOMATION = \"1\"\n    TF_INPUT = \"0\"\n  }}\n}}\n",
            self.terraform().display(),
            self.cli_config().display()
        )
    }

    /// Runs this terraform in `dir`, offline from the mirror; panics on failure and returns
    /// its stdout.
    pub fn run(&self, dir: &Path, args: &[&str]) -> Vec<u8> {
        let output = Command::new(self.terraform())
            .args(args)
            .current_dir(dir)
            .envs(self.env())
            .output()
            .expect("run terraform");
        assert!(
            output.status.success(),
            "terraform {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// The environment a terraform run needs to work offline from the mirror.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "TF_CLI_CONFIG_FILE".into(),
                self.cli_config().display().to_string(),
            ),
            ("CHECKPOINT_DISABLE".into(), "1".into()),
            ("TF_IN_AUTOMATION".into(), "1".into()),
            ("TF_INPUT".into(), "0".into()),
        ]
    }
}

/// A stack made of one null_resource whose trigger is `value`: plans in about a second.
pub fn null_stack(value: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    null = {{ source = "hashicorp/null", version = "2.1.2" }}
  }}
}}

resource "null_resource" "this" {{
  triggers = {{ value = "{value}" }}
}}

output "value" {{
  value = null_resource.this.triggers.value
}}
"#
    )
}

/// A database for one test: a temp SQLite file, or a fresh PostgreSQL database created from
/// `TIDEMARK_TEST_POSTGRES_URL` and dropped afterwards.
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("tidemark.db").display());
        Self {
            url,
            admin_url: None,
            name: None,
            _dir: Some(dir),
        }
    }

    /// `None` when `TIDEMARK_TEST_POSTGRES_URL` is unset. `.ci/run` always sets it (and
    /// `CI=true` without it is an error), so PostgreSQL tests never silently skip in CI.
    pub async fn postgres() -> Option<Self> {
        let Some(admin_url) = std::env::var("TIDEMARK_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but TIDEMARK_TEST_POSTGRES_URL is unset: the PostgreSQL tests would not run"
            );
            return None;
        };
        use sqlx::Connection;
        let name = format!("tidemark_t{}", rand::random::<u64>() % 1_000_000_000_000);
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to TIDEMARK_TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let (base, _) = admin_url.rsplit_once('/').expect("database URL has a path");
        Some(Self {
            url: format!("{base}/{name}"),
            admin_url: Some(admin_url),
            name: Some(name),
            _dir: None,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(admin), Some(name)) = (self.admin_url.clone(), self.name.clone()) else {
            return;
        };
        // Drop runs outside any runtime the test may still be inside, on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A port free on 127.0.0.1 right now, for a service the test starts with a fixed `listen`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `tidemark serve` as a child process, for tests that kill it.
pub struct ServeProcess {
    pub child: std::process::Child,
}

impl ServeProcess {
    /// Starts `tidemark serve --config CONFIG` with extra environment; its output goes to
    /// `log` so a failing test can show it.
    pub fn start(config: &Path, env: &[(&str, &str)], log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open serve log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("TIDEMARK_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tidemark serve");
        Self { child }
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash or an OOM kill.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live processes whose command line contains `needle`: pid, state and command line (to
/// show what was left when a test fails).
pub fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>();
            (cmdline.contains(needle) && state.first() != Some(&"Z")).then(|| {
                format!(
                    "{} {:?} {}",
                    entry.file_name().to_string_lossy(),
                    state,
                    cmdline
                )
            })
        })
        .collect()
}

/// Whether any live process's command line contains `needle` (to prove nothing was left).
pub fn process_running(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // A zombie has exited already; only its parent has not reaped it.
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        !zombie
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
    })
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..secs * 10 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// A runner binary that answers every step at once: the plan file it is asked to write, a
/// version, and an empty plan for `show -json`.
pub const NOOP: &str = r#"#!/bin/sh
case "$1" in
  version) echo '{"terraform_version":"0.0.0-noop"}' ;;
  plan) for a in "$@"; do case "$a" in -out=*) echo noop > "${a#-out=}" ;; esac; done ;;
  show) echo '{"format_version":"0.2","resource_changes":[],"output_changes":{}}' ;;
esac
exit 0
"#;

/// Runner definitions whose `terraform` is [`NOOP`], written into `dir`.
pub fn noop_runners(dir: &Path) -> tidemark::runner::RunnerSet {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("noop-terraform");
    std::fs::write(&script, NOOP).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let def = format!(
        "runner \"terraform\" {{\n  binary = \"{}\"\n  sandbox {{\n    ro_paths = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\"]\n  }}\n}}\n",
        script.display()
    );
    tidemark::runner::RunnerSet::load(&[tidemark::runner::RunnerSource::new("noop.hcl", def)])
        .expect("runner set")
}
