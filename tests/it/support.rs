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
