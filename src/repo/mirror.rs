//! A bare mirror of one remote repository inside the data dir, kept current by `git fetch`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use git2::{Oid, Repository};
use tokio::process::Command;

/// Why a fetch failed; the poller records it against the repo and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("git fetch from {url} failed: {message}")]
    Remote { url: String, message: String },
    #[error("branch {branch:?} does not exist in {url}")]
    NoBranch { url: String, branch: String },
    #[error("mirror {path}: {source}")]
    Local {
        path: String,
        #[source]
        source: anyhow::Error,
    },
}

/// A bare repository at `path` that mirrors the branches of `url`.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub url: String,
    pub path: PathBuf,
}

impl Mirror {
    pub fn new(url: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            path: path.into(),
        }
    }

    /// Opens the mirror's object database (it must have been fetched once).
    pub fn open(&self) -> anyhow::Result<Repository> {
        super::open(&self.path)
    }

    /// Creates the bare repository if needed, fetches `branch` from the remote and returns the
    /// commit it points at. Fetching only the tracked branch keeps large remotes cheap.
    pub async fn fetch(&self, branch: &str) -> Result<Oid, FetchError> {
        self.fetch_with_env(branch, &[]).await
    }

    /// `fetch`, with extra environment for git (credentials: `GIT_CONFIG_*`, `GIT_SSH_COMMAND`).
    pub async fn fetch_with_env(
        &self,
        branch: &str,
        env: &[(String, String)],
    ) -> Result<Oid, FetchError> {
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        self.fetch_refspec(&refspec, env)
            .await
            .map_err(|err| match err {
                FetchError::Remote { url, message }
                    if message.contains("couldn't find remote ref") =>
                {
                    FetchError::NoBranch {
                        url,
                        branch: branch.to_string(),
                    }
                }
                other => other,
            })?;
        self.commit_of(&format!("refs/heads/{branch}"))
    }

    /// Fetches a pull request's head (the forge's `refs/pull/N/head`) into
    /// `refs/tidemark/pull/N/head` and returns the commit it points at.
    pub async fn fetch_pull_head(
        &self,
        number: u64,
        env: &[(String, String)],
    ) -> Result<Oid, FetchError> {
        let local = format!("refs/tidemark/pull/{number}/head");
        let refspec = format!("+refs/pull/{number}/head:{local}");
        self.fetch_refspec(&refspec, env).await?;
        self.commit_of(&local)
    }

    /// The commit a ref of the mirror points at.
    pub fn commit_of(&self, reference: &str) -> Result<Oid, FetchError> {
        let repo = self.open().map_err(|err| self.local(err))?;
        let reference = repo
            .find_reference(reference)
            .map_err(|err| self.local(err.into()))?;
        reference
            .peel_to_commit()
            .map(|commit| commit.id())
            .map_err(|err| self.local(err.into()))
    }

    /// Runs `git fetch` of one refspec from the remote (creating the mirror if needed).
    async fn fetch_refspec(
        &self,
        refspec: &str,
        env: &[(String, String)],
    ) -> Result<(), FetchError> {
        self.init().await?;
        let output = Command::new("git")
            .arg("--git-dir")
            .arg(&self.path)
            .args([
                "fetch",
                "--quiet",
                "--no-tags",
                "--prune",
                "--",
                &self.url,
                refspec,
            ])
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|err| self.local(err.into()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = if stderr.contains("couldn't find remote ref") {
                "couldn't find remote ref".to_string()
            } else {
                stderr.trim().lines().last().unwrap_or("").to_string()
            };
            return Err(FetchError::Remote {
                url: self.url.clone(),
                message: format!("{message} ({refspec})"),
            });
        }
        Ok(())
    }

    async fn init(&self) -> Result<(), FetchError> {
        if self.path.join("HEAD").exists() {
            return Ok(());
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Repository::init_bare(&path).map(|_| ()))
            .await
            .map_err(|err| self.local(err.into()))?
            .map_err(|err| self.local(err.into()))
    }

    fn local(&self, source: anyhow::Error) -> FetchError {
        FetchError::Local {
            path: display(&self.path),
            source,
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
