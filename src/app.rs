//! The one place that wires concrete parts together: the store, the runners, a poller per
//! repository, the workers and the HTTP server, all stopped by one shutdown token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, PolicyConfig};
use crate::engine::{
    DriftFlow, DriftHook, Jitter, OUTBOX_LEASE, OutboxSender, Policies, Poller, PullRequests,
    RepoPolicies, Worker, WorkerContext,
};
use crate::policy::{Level, PolicySet};
use crate::repo::Mirror;
use crate::runner;
use crate::store::Store;

/// How long a claimed run is ours without a heartbeat.
const LEASE: Duration = Duration::from_secs(30);

/// A running Tidemark instance.
pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl App {
    /// Opens the store (migrating it), loads the runners, recovers runs this instance left
    /// behind, and starts the pollers, the workers and the HTTP server.
    pub async fn start(config: Config) -> Result<App> {
        crate::install_crypto_provider();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = Store::open(&config.database).await?;
        let runners = runner::RunnerSet::load(&runner_sources(&config))
            .context("loading runner definitions")?;
        let sandbox = match config.sandbox.as_str() {
            "none" => runner::SandboxMode::None,
            _ => runner::SandboxMode::Bubblewrap,
        };
        // Refuse to start without bubblewrap unless the config opted out of the sandbox.
        runner::SandboxTools::find(sandbox)?;
        let key = crate::crypto::PlanKey::load(
            config.plan_key_env.as_deref(),
            &config.data_dir.join("plan.key"),
        )
        .context("loading the plan encryption key")?;
        let policies = load_policies(&config)?;
        let workspaces = config.data_dir.join("workspaces");
        let swept = runner::Workspace::sweep_stale(&workspaces)?;
        if swept > 0 {
            info!(swept, "removed workspaces left by a dead process");
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let instance = format!("{}/{}", hostname(), config.data_dir.display());
        let recovered = store
            .recover(chrono::Utc::now(), Some(&format!("{instance}#")))
            .await?;
        if !recovered.requeued.is_empty() || !recovered.interrupted.is_empty() {
            warn!(requeued = ?recovered.requeued, interrupted = ?recovered.interrupted, "recovered runs left by a previous process");
        }

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let work = Arc::new(Notify::new());
        let stacks_changed = Arc::new(Notify::new());
        let mut nudges = HashMap::new();
        let mut mirrors = HashMap::new();
        let mut indexes = HashMap::new();
        let mut pulls_by_forge = HashMap::new();
        let mut pr_refresh = HashMap::new();
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        for repo in &config.repos {
            let repo_id = store
                .upsert_repo(&repo.name, &repo.url, &repo.branch, repo.max_concurrency)
                .await?;
            let mirror = Mirror::new(
                &repo.url,
                config
                    .data_dir
                    .join("mirrors")
                    .join(format!("{}.git", repo.name)),
            );
            let nudge = Arc::new(Notify::new());
            nudges.insert(repo.name.clone(), nudge.clone());
            mirrors.insert(repo.name.clone(), mirror.path.clone());
            // Warm from the last run's analysis: a restart does not parse the repository again.
            let index = crate::stacks::Index::persistent(
                config
                    .data_dir
                    .join("index")
                    .join(format!("{}.idx", repo.name)),
            );
            let index = Arc::new(Mutex::new(index));
            indexes.insert(repo.name.clone(), index.clone());
            let pulls = match &repo.github {
                Some(github) => {
                    let forge = connect_github(&repo.name, github)?;
                    let pulls = Arc::new(PullRequests::new(
                        repo.clone(),
                        github.clone(),
                        repo_id,
                        forge,
                        store.clone(),
                        mirror.clone(),
                        index.clone(),
                        work.clone(),
                        base_url.clone(),
                    ));
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    pr_refresh.insert(repo.name.clone(), tx);
                    pulls_by_forge.insert(github.repository.to_ascii_lowercase(), pulls.clone());
                    tasks.spawn(pulls.clone().run(rx, shutdown.clone()));
                    Some(pulls)
                }
                None => None,
            };
            let poller = Poller {
                repo: repo.clone(),
                repo_id,
                mirror,
                store: store.clone(),
                nudge,
                work: work.clone(),
                index: index.clone(),
                stacks_changed: stacks_changed.clone(),
                pulls,
            };
            tasks.spawn(poller.run(shutdown.clone()));
        }
        let exe = match &config.exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("finding Tidemark's own executable")?,
        };
        let drift_hook = start_drift(&config, &store, addr, &instance, &tasks, &shutdown)?;
        tasks.spawn(
            DriftFlow {
                store: store.clone(),
                repos: config.repos.clone(),
                cap: config.drift_concurrency,
                jitter: Jitter::default(),
                stacks_changed,
                checked: drift_hook.checked.clone(),
                work: work.clone(),
                reload_every: Duration::from_secs(60),
                poll_every: Duration::from_secs(5),
            }
            .run(shutdown.clone()),
        );
        let ctx = Arc::new(WorkerContext {
            provider_cache: Some(config.data_dir.join("provider-cache")),
            exe,
            store: store.clone(),
            runners,
            sandbox,
            key: key.clone(),
            workspaces,
            mirrors,
            nudges: nudges.clone(),
            lease: LEASE,
            work: work.clone(),
            grace: Duration::from_secs(30),
            policies,
            drift: Some(drift_hook.clone()),
            variables: config.variables.clone(),
            indexes,
            pr_refresh,
        });
        for slot in 0..config.workers {
            let worker = Worker {
                name: format!("{instance}#{slot}"),
                ctx: ctx.clone(),
            };
            tasks.spawn(worker.run(shutdown.clone()));
        }
        tasks.spawn(reaper(store.clone(), work.clone(), shutdown.clone()));
        let retention = config.retention.unwrap_or_default();
        tasks.spawn(sweeper(
            store.clone(),
            crate::store::Ages {
                runs: retention.runs,
                logs: retention.logs,
                artifacts: retention.artifacts,
            },
            shutdown.clone(),
        ));

        let webhook_secret = match &config.webhook_secret_env {
            Some(var) => Some(
                std::env::var(var)
                    .with_context(|| format!("webhook_secret_env names {var}, which is not set"))?,
            ),
            None => None,
        };
        let access = access(&config)?;
        let state = crate::api::AppState {
            store: store.clone(),
            nudges: Arc::new(nudges),
            repos: Arc::new(config.repos.clone()),
            webhook_secret,
            access: Arc::new(access),
            work: work.clone(),
            key,
            pulls: Arc::new(pulls_by_forge),
            metrics_per_stack: config.metrics_per_stack,
        };
        let router = crate::api::router(state);
        let http_shutdown = shutdown.clone();
        let (headers, body) = config.http_timeouts;
        let timeouts = crate::api::Timeouts { headers, body };
        tasks.spawn(crate::api::serve(listener, router, timeouts, http_shutdown));
        tasks.close();
        info!(%addr, database = store.backend_name(), repos = config.repos.len(), workers = config.workers, "tidemark started");
        Ok(App {
            addr,
            store,
            shutdown,
            tasks,
        })
    }

    /// Stops claiming work, lets running steps finish up to their grace period, and waits
    /// for every task to end.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.wait().await;
        self.store.close().await;
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) -> Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down: no new runs are claimed; running steps may finish");
        self.stop().await;
        Ok(())
    }
}

/// The drift hook the workers call, and the outbox sender when a Slack webhook is configured
/// (its URL must then be in the environment variable the config names).
fn start_drift(
    config: &Config,
    store: &Store,
    addr: SocketAddr,
    instance: &str,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<DriftHook> {
    let outbox = Arc::new(Notify::new());
    let notify = match &config.slack_webhook_env {
        Some(var) => {
            let notifier = crate::notify::SlackNotifier::from_env(var)
                .with_context(|| format!("slack_webhook_env in {}", config.file.display()))?;
            let sender = OutboxSender {
                store: store.clone(),
                notifier,
                policy: crate::notify::OutboxPolicy::default(),
                name: format!("{instance}#outbox"),
                wake: outbox.clone(),
                lease: OUTBOX_LEASE,
            };
            tasks.spawn(sender.run(shutdown.clone()));
            true
        }
        None => false,
    };
    Ok(DriftHook {
        base_url: config
            .base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        notify,
        outbox,
        checked: Arc::new(Notify::new()),
    })
}

/// Every few seconds, takes back runs whose worker's lease expired (another instance died).
async fn reaper(store: Store, work: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEASE / 3) => {}
        }
        match store.recover(chrono::Utc::now(), None).await {
            Ok(recovered)
                if !recovered.requeued.is_empty() || !recovered.interrupted.is_empty() =>
            {
                warn!(requeued = ?recovered.requeued, interrupted = ?recovered.interrupted, "took back runs whose lease expired");
                crate::telemetry::lease_expired("plan_or_drift", recovered.requeued.len() as u64);
                crate::telemetry::lease_expired("apply", recovered.interrupted.len() as u64);
                work.notify_waiters();
            }
            Ok(_) => {}
            Err(err) => warn!(error = %err, "recovering expired runs failed"),
        }
    }
}

/// Sweeps history older than the retention ages, once soon after the start and then hourly.
/// Several instances sweeping at once is harmless: each delete is one statement.
async fn sweeper(store: Store, ages: crate::store::Ages, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = Duration::from_secs(3600);
        match store.sweep(ages, chrono::Utc::now()).await {
            Ok(swept) if swept != crate::store::Swept::default() => {
                info!(
                    runs = swept.runs,
                    log_lines = swept.log_lines,
                    artifacts = swept.artifacts,
                    deliveries = swept.deliveries,
                    "retention sweep"
                );
            }
            Ok(_) => {}
            Err(err) => warn!(error = format!("{err:#}"), "retention sweep failed"),
        }
    }
}

/// Loads every repository's policy sets: the server-wide ones (Tidemark's shipped policies at
/// soft-mandatory when the config names none) and the repository's own. A policy that does not
/// parse stops the start, naming its file and line.
pub fn load_policies(config: &Config) -> Result<Policies> {
    let load = |policy: &PolicyConfig| -> Result<PolicySet> {
        let set = match &policy.path {
            Some(dir) => PolicySet::load(dir, policy.level),
            None => PolicySet::shipped(policy.level),
        };
        set.with_context(|| format!("{}: policy {:?}", config.file.display(), policy.name))
    };
    let server: Vec<PolicySet> = if config.policies.is_empty() {
        vec![PolicySet::shipped(Level::SoftMandatory).context("loading the shipped policies")?]
    } else {
        config.policies.iter().map(load).collect::<Result<_>>()?
    };
    let mut policies = Policies::new();
    for repo in &config.repos {
        let mut sets = server.clone();
        for policy in &repo.policies {
            sets.push(load(policy).with_context(|| format!("repo {}", repo.name))?);
        }
        policies.insert(
            repo.name.clone(),
            RepoPolicies {
                sets,
                params: repo.policy_params.clone(),
            },
        );
    }
    Ok(policies)
}

/// Who may read and act over HTTP: the `access` block's tokens (values read from the
/// environment variables it names) and `api_token_env` as an admin token. Without an `access`
/// block reads are open only on a loopback address; listening anywhere else without one is
/// refused.
fn access(config: &Config) -> Result<crate::api::Access> {
    use sha2::Digest;
    let mut access = crate::api::Access::default();
    let hash = |value: &str| -> [u8; 32] { sha2::Sha256::digest(value.as_bytes()).into() };
    match &config.access {
        Some(block) => {
            access.open_read = block.open_read;
            for token in &block.tokens {
                let sha256 = match &token.source {
                    crate::config::TokenSource::Env(var) => {
                        hash(&std::env::var(var).with_context(|| {
                            format!(
                                "{}: access token {:?} names {var}, which is not set",
                                config.file.display(),
                                token.name
                            )
                        })?)
                    }
                    crate::config::TokenSource::Sha256(hex) => {
                        let mut out = [0u8; 32];
                        hex::decode_to_slice(hex, &mut out)
                            .with_context(|| format!("access token {:?}", token.name))?;
                        out
                    }
                };
                access.tokens.push(crate::api::Token {
                    name: token.name.clone(),
                    role: token.role,
                    sha256,
                });
            }
            for user in &block.users {
                let var = &user.password_hash_env;
                let hash = std::env::var(var).with_context(|| {
                    format!(
                        "{}: user {:?} names {var} for its password hash, which is not set",
                        config.file.display(),
                        user.name
                    )
                })?;
                crate::crypto::password::check_hash(&hash).with_context(|| {
                    format!(
                        "{}: user {:?}: {var} does not hold an argon2id hash (`tidemark hash-password` makes one)",
                        config.file.display(),
                        user.name
                    )
                })?;
                access.users.push(crate::api::User {
                    name: user.name.clone(),
                    role: user.role,
                    password_hash: hash.trim().to_string(),
                });
            }
        }
        None if config.listen.ip().is_loopback() => access.open_read = true,
        None => anyhow::bail!(
            "{}: Tidemark listens on {}, beyond this machine, and has no access block: add one (access {{ token \"ops\" {{ role = \"operator\"  env = \"TIDEMARK_OPS_TOKEN\" }} }}, or open_read = true) or listen on 127.0.0.1",
            config.file.display(),
            config.listen
        ),
    }
    if let Some(var) = &config.api_token_env {
        let value = std::env::var(var)
            .with_context(|| format!("api_token_env names {var}, which is not set"))?;
        access.tokens.push(crate::api::Token {
            name: "api_token".into(),
            role: crate::config::Role::Admin,
            sha256: hash(&value),
        });
    }
    if let Some(var) = &config.metrics_token_env {
        let value = std::env::var(var)
            .with_context(|| format!("metrics_token_env names {var}, which is not set"))?;
        access.metrics_token = Some(hash(&value));
    }
    Ok(access)
}

/// The GitHub client of a repository's `github` block, with its credentials read from the
/// environment variables the block names.
fn connect_github(
    repo: &str,
    github: &crate::config::GitHubConfig,
) -> Result<Arc<dyn crate::forge::Forge>> {
    use crate::config::GitHubAuth;
    use crate::forge::github::{Auth, GitHub};
    let read = |var: &str| {
        std::env::var(var)
            .with_context(|| format!("repo {repo}: the github block names {var}, which is not set"))
    };
    let auth = match &github.auth {
        GitHubAuth::Token { token_env } => Auth::Token(read(token_env)?),
        GitHubAuth::App {
            app_id,
            private_key_env,
            installation_id,
        } => Auth::App {
            app_id: *app_id,
            private_key_pem: read(private_key_env)?,
            installation_id: *installation_id,
        },
    };
    let client = GitHub::new(&github.api_url, &github.repository, auth)
        .with_context(|| format!("repo {repo}: github"))?;
    Ok(Arc::new(client))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The config's `runner` blocks as runner definition sources. Each block's text is preceded
/// by as many blank lines as came before it, so errors carry the config file's line numbers.
fn runner_sources(config: &Config) -> Vec<runner::RunnerSource> {
    config
        .runners
        .iter()
        .map(|block| {
            let padding = "\n".repeat(block.line.saturating_sub(1) as usize);
            runner::RunnerSource::new(&block.file, format!("{padding}{}", block.text))
        })
        .collect()
}
