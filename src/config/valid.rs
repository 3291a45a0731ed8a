//! Checks a raw config into typed values: known attributes only, each of the right type and
//! range, with defaults filled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl::edit::expr::Expression;

use super::ConfigError;
use super::raw::{RawAttr, RawBlock, RawConfig};
use crate::engine::DriftSchedule;

/// The checked server config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: PathBuf,
    pub listen: SocketAddr,
    /// A `sqlite://PATH` or `postgres://...` URL.
    pub database: String,
    pub data_dir: PathBuf,
    /// How many runs execute at once on this instance.
    pub workers: usize,
    /// `bubblewrap` (default) or `none`; `none` must be chosen explicitly.
    pub sandbox: String,
    /// The environment variable holding the plan encryption key, if not the default.
    pub plan_key_env: Option<String>,
    /// The environment variable holding the webhook secret (signatures are then required).
    pub webhook_secret_env: Option<String>,
    /// The environment variable holding the Slack incoming-webhook URL for drift alerts
    /// (no variable: drift is recorded, nobody is told).
    pub slack_webhook_env: Option<String>,
    /// At most this many drift checks queued or running at once, per instance.
    pub drift_concurrency: usize,
    /// The public URL of this service, for links in messages (default: the listen address).
    pub base_url: Option<String>,
    pub repos: Vec<RepoConfig>,
    /// `runner "name" { ... }` blocks that override or add runner definitions.
    pub runners: Vec<RunnerBlock>,
}

/// One tracked repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    pub name: String,
    pub url: String,
    pub branch: String,
    pub poll_interval: Duration,
    /// Environment variable holding an https token for the remote.
    pub token_env: Option<String>,
    /// Environment variable holding the path of an ssh private key for the remote.
    pub ssh_key_env: Option<String>,
    /// At most this many runs of this repository at once (the global `workers` still caps).
    pub max_concurrency: Option<usize>,
    /// The drift schedule of its stacks that set none in `stack.hcl` (cron, 5 or 6 fields);
    /// `None` (`drift_schedule = "off"`) checks only stacks with their own.
    pub drift_schedule: Option<String>,
}

/// The drift schedule of a repository that sets none: every six hours.
pub const DEFAULT_DRIFT_SCHEDULE: &str = "0 */6 * * *";

/// A runner block as written, for the runner module to read with its own schema.
#[derive(Debug, Clone)]
pub struct RunnerBlock {
    pub name: String,
    pub file: PathBuf,
    pub line: u32,
    pub text: String,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub(super) fn validate(file: &Path, raw: &RawConfig, cwd: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let mut listen: SocketAddr = DEFAULT_LISTEN.parse().expect("default listen address");
    let mut database = None;
    let mut data_dir = cwd.join(".tidemark");
    let mut workers = 4;
    let mut sandbox = "bubblewrap".to_string();
    let mut plan_key_env = None;
    let mut webhook_secret_env = None;
    let mut slack_webhook_env = None;
    let mut drift_concurrency = 4;
    let mut base_url = None;
    for attr in &raw.attrs {
        match attr.name.as_str() {
            "listen" => {
                let text = ctx.string(attr, &attr.name)?;
                listen = text.parse().map_err(|_| {
                    ctx.err(
                        attr,
                        &attr.name,
                        format!("{text:?} is not an address like 127.0.0.1:8080"),
                    )
                })?;
            }
            "database" => {
                let url = ctx.string(attr, &attr.name)?;
                check_database_url(&url).map_err(|msg| ctx.err(attr, &attr.name, msg))?;
                database = Some(url);
            }
            "data_dir" => data_dir = cwd.join(ctx.string(attr, &attr.name)?),
            "workers" => workers = ctx.count(attr, &attr.name, 1, 256)?,
            "sandbox" => {
                sandbox = ctx.string(attr, &attr.name)?;
                if sandbox != "bubblewrap" && sandbox != "none" {
                    return Err(ctx.err(
                        attr,
                        &attr.name,
                        format!("{sandbox:?} is not one of \"bubblewrap\", \"none\""),
                    ));
                }
            }
            "plan_key_env" => plan_key_env = Some(ctx.env_name(attr, &attr.name)?),
            "webhook_secret_env" => webhook_secret_env = Some(ctx.env_name(attr, &attr.name)?),
            "slack_webhook_env" => slack_webhook_env = Some(ctx.env_name(attr, &attr.name)?),
            "drift_concurrency" => drift_concurrency = ctx.count(attr, &attr.name, 1, 1024)?,
            "base_url" => {
                let text = ctx.string(attr, &attr.name)?;
                check_base_url(&text).map_err(|msg| ctx.err(attr, &attr.name, msg))?;
                base_url = Some(text.trim_end_matches('/').to_string());
            }
            other => return Err(ctx.err(attr, other, "unknown attribute".into())),
        }
    }
    let mut repos: Vec<RepoConfig> = Vec::new();
    let mut runners = Vec::new();
    for block in &raw.blocks {
        match block.kind.as_str() {
            "repo" => {
                let repo = repo(&ctx, block)?;
                if repos.iter().any(|r| r.name == repo.name) {
                    return Err(
                        ctx.block_err(block, format!("repo {:?} is declared twice", repo.name))
                    );
                }
                repos.push(repo);
            }
            "runner" => {
                let [name] = block.labels.as_slice() else {
                    return Err(
                        ctx.block_err(block, "a runner block takes one label, its name".into())
                    );
                };
                runners.push(RunnerBlock {
                    name: name.clone(),
                    file: file.to_path_buf(),
                    line: block.line,
                    text: block.text.clone(),
                });
            }
            other => return Err(ctx.block_err(block, format!("unknown block {other:?}"))),
        }
    }
    let database =
        database.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("tidemark.db").display()));
    Ok(Config {
        file: file.to_path_buf(),
        listen,
        database,
        data_dir,
        workers,
        sandbox,
        plan_key_env,
        webhook_secret_env,
        slack_webhook_env,
        drift_concurrency,
        base_url,
        repos,
        runners,
    })
}

fn repo(ctx: &Ctx, block: &RawBlock) -> Result<RepoConfig, ConfigError> {
    let [name] = block.labels.as_slice() else {
        return Err(ctx.block_err(block, "a repo block takes one label, its name".into()));
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.block_err(
            block,
            format!("repo name {name:?} may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    if let Some(inner) = block.blocks.first() {
        return Err(ctx.block_err(
            inner,
            format!("unknown block {:?} in repo {name:?}", inner.kind),
        ));
    }
    let mut url = None;
    let mut branch = "main".to_string();
    let mut poll_interval = Duration::from_secs(60);
    let mut token_env = None;
    let mut ssh_key_env = None;
    let mut max_concurrency = None;
    let mut drift_schedule = Some(DEFAULT_DRIFT_SCHEDULE.to_string());
    for attr in &block.attrs {
        let path = format!("repo.{name}.{}", attr.name);
        match attr.name.as_str() {
            "url" => {
                let text = ctx.string(attr, &path)?;
                check_git_url(&text).map_err(|msg| ctx.err(attr, &path, msg))?;
                url = Some(text);
            }
            "branch" => {
                branch = ctx.string(attr, &path)?;
                if branch.is_empty()
                    || branch.starts_with('-')
                    || branch.contains("..")
                    || branch.contains(' ')
                {
                    return Err(ctx.err(attr, &path, format!("{branch:?} is not a branch name")));
                }
            }
            "poll_interval" => {
                let text = ctx.string(attr, &path)?;
                poll_interval = humantime::parse_duration(&text).map_err(|err| {
                    ctx.err(
                        attr,
                        &path,
                        format!("{text:?} is not a duration like \"30s\" or \"5m\": {err}"),
                    )
                })?;
                if poll_interval < Duration::from_secs(1) {
                    return Err(ctx.err(attr, &path, "must be at least 1s".into()));
                }
            }
            "token_env" => token_env = Some(ctx.env_name(attr, &path)?),
            "ssh_key_env" => ssh_key_env = Some(ctx.env_name(attr, &path)?),
            "max_concurrency" => max_concurrency = Some(ctx.count(attr, &path, 1, 256)?),
            "drift_schedule" => {
                let text = ctx.string(attr, &path)?;
                drift_schedule = if text == "off" {
                    None
                } else {
                    DriftSchedule::parse(&text).map_err(|e| ctx.err(attr, &path, e.to_string()))?;
                    Some(text)
                };
            }
            _ => return Err(ctx.err(attr, &path, "unknown attribute".into())),
        }
    }
    let url = url.ok_or_else(|| ctx.block_err(block, format!("repo {name:?} needs a url")))?;
    Ok(RepoConfig {
        name: name.clone(),
        url,
        branch,
        poll_interval,
        token_env,
        ssh_key_env,
        max_concurrency,
        drift_schedule,
    })
}

/// A link base: an http(s) URL with a host and no query; the credentials rule applies here too.
fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || url.contains(['?', '#', ' ']) {
        return Err(format!(
            "{url:?} is not a base URL like https://tidemark.example.com"
        ));
    }
    if authority.contains('@') {
        return Err("must not hold credentials".into());
    }
    Ok(())
}

/// Credentials never live in the file: a database URL with a password is refused.
fn check_database_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(
                "must not hold a password: put the whole URL in TIDEMARK_DATABASE_URL instead"
                    .into(),
            );
        }
        return Ok(());
    }
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    Err(format!(
        "{url:?} is neither a sqlite:// nor a postgres:// URL"
    ))
}

fn check_git_url(url: &str) -> Result<(), String> {
    let scheme_ok = ["file://", "https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    // scp-like ssh: user@host:path
    let scp_like = !url.contains("://") && url.contains('@') && url.contains(':');
    if !(scheme_ok || scp_like) {
        return Err(format!("{url:?} is not a file://, https:// or ssh URL"));
    }
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err("must not hold a password: name an environment variable in token_env".into());
    }
    Ok(())
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, attr: &RawAttr, name: &str, message: String) -> ConfigError {
        ConfigError::new(self.file, attr.line, name, message)
    }

    fn block_err(&self, block: &RawBlock, message: String) -> ConfigError {
        let name = std::iter::once(block.kind.as_str())
            .chain(block.labels.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        ConfigError::new(self.file, block.line, &name, message)
    }

    fn string(&self, attr: &RawAttr, name: &str) -> Result<String, ConfigError> {
        match &attr.value {
            Expression::String(s) => Ok(s.value().to_string()),
            _ => Err(self.err(attr, name, "must be a literal string".into())),
        }
    }

    fn count(
        &self,
        attr: &RawAttr,
        name: &str,
        min: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        let value = match &attr.value {
            Expression::Number(n) => n.value().as_u64(),
            _ => None,
        };
        match value {
            Some(v) if (min as u64..=max as u64).contains(&v) => Ok(v as usize),
            _ => Err(self.err(
                attr,
                name,
                format!("must be a whole number from {min} to {max}"),
            )),
        }
    }

    fn env_name(&self, attr: &RawAttr, name: &str) -> Result<String, ConfigError> {
        let text = self.string(attr, name)?;
        let valid = !text.is_empty()
            && !text.starts_with(|c: char| c.is_ascii_digit())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(text)
        } else {
            Err(self.err(
                attr,
                name,
                format!("{text:?} is not an environment variable name"),
            ))
        }
    }
}
