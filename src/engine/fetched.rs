//! Waiting for a run's commit to reach this instance's mirror. Instances sharing a database
//! fetch on their own: one may claim a run queued by another for a commit its own poller has
//! not fetched yet. The run then nudges the poller and waits for the commit (its lease kept
//! by the heartbeat) instead of failing on a missing object.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{Notify, mpsc};
use tracing::info;

use crate::runner::{self, LogLine};

/// How long a run waits for its commit before it fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Returns once the mirror at `mirror` holds `commit`, nudging its poller (if any) to fetch
/// while it does not; fails after `patience`.
pub async fn until_fetched(
    mirror: &Path,
    commit: &str,
    nudge: Option<&Arc<Notify>>,
    logs: &mpsc::Sender<LogLine>,
    patience: Duration,
) -> Result<()> {
    let oid = git2::Oid::from_str(commit).with_context(|| format!("commit {commit}"))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        let path = mirror.to_path_buf();
        let present = tokio::task::spawn_blocking(move || {
            crate::repo::open(&path).is_ok_and(|repo| repo.find_commit(oid).is_ok())
        })
        .await
        .context("looking up the commit panicked")?;
        if present {
            if told {
                info!(
                    commit,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "commit fetched"
                );
            }
            return Ok(());
        }
        if started.elapsed() >= patience {
            bail!(
                "commit {commit} is not in this instance's mirror ({}) after {} s: another \
                 instance queued it, and this one's fetches have not brought it (see its poll errors)",
                mirror.display(),
                patience.as_secs()
            );
        }
        if !told {
            told = true;
            let text = format!(
                "commit {commit} is not in this instance's mirror yet (another instance queued \
                 the run): fetching"
            );
            info!("{text}");
            let _ = logs
                .send(LogLine {
                    step: "fetch".into(),
                    stream: runner::Stream::System,
                    text,
                })
                .await;
        }
        if let Some(nudge) = nudge {
            nudge.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
