//! Checks a raw config into typed values: known attributes only, each of the right type and
//! range, with defaults filled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use hcl::edit::expr::Expression;

use crate::policy::Level;

use super::ConfigError;
use super::raw::{RawAttr, RawBlock, RawConfig};
use crate::schedule::DriftSchedule;
use crate::variables::VariableSet;

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
    /// The environment variable holding the API token that approve, override and apply over
    /// HTTP require (they are refused when none is set).
    pub api_token_env: Option<String>,
    /// The environment variable holding the token `GET /metrics` requires (no variable: the
    /// metrics are open, as Prometheus scrapers expect).
    pub metrics_token_env: Option<String>,
    /// `/metrics` also has one `tidemark_stack_state` series for each of at most this many
    /// stacks (by repository and path); 0, the default, for none.
    pub metrics_per_stack: usize,
    /// The environment variable holding the Slack incoming-webhook URL for drift alerts
    /// (no variable: drift is recorded, nobody is told).
    pub slack_webhook_env: Option<String>,
    /// At most this many drift checks queued or running at once, per instance.
    pub drift_concurrency: usize,
    /// The public URL of this service, for links in messages (default: the listen address).
    pub base_url: Option<String>,
    pub repos: Vec<RepoConfig>,
    /// Policy sets that judge every repository's plans. Without any `policy` block, Tidemark's
    /// shipped policies judge at soft-mandatory.
    pub policies: Vec<PolicyConfig>,
    /// `runner "name" { ... }` blocks that override or add runner definitions.
    pub runners: Vec<RunnerBlock>,
    /// `variables "name" { ... }` blocks, in the order they apply (later ones win).
    pub variables: Vec<VariableSet>,
    /// Who may read and act over HTTP; `None`: reads are open on a loopback address only.
    pub access: Option<super::AccessConfig>,
    /// How long history is kept; `None`: for ever.
    pub retention: Option<super::Retention>,
    /// The Tidemark executable that runs the state proxy inside each step's sandbox; `None`
    /// is this process's own executable. Not a config file setting: tests that run the service
    /// inside a test binary point it at the built `tidemark`.
    pub exe: Option<PathBuf>,
    /// How long an HTTP client may take to send a request's headers, and then its body. Not a
    /// config file setting (30 s and 60 s); tests shorten them.
    pub http_timeouts: (std::time::Duration, std::time::Duration),
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
    /// Policy sets for this repository only, in addition to the server-wide ones.
    pub policies: Vec<PolicyConfig>,
    /// Parameters the policies read as `input.tidemark.config` (e.g. `max_deletions`).
    pub policy_params: BTreeMap<String, serde_json::Value>,
    /// The drift schedule of its stacks that set none in `stack.hcl` (cron, 5 or 6 fields);
    /// `None` (`drift_schedule = "off"`) checks only stacks with their own.
    pub drift_schedule: Option<String>,
    /// Pull requests on GitHub, when the repository is there.
    pub github: Option<super::GitHubConfig>,
}

/// `policy "NAME" { path = "DIR", level = "soft-mandatory" }`: a directory of Rego policies
/// (relative to the config file), or Tidemark's shipped policies when `path` is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub name: String,
    /// `None`: the shipped policies.
    pub path: Option<PathBuf>,
    pub level: Level,
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
    let mut api_token_env = None;
    let mut metrics_token_env = None;
    let mut metrics_per_stack = 0;
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
            "api_token_env" => api_token_env = Some(ctx.env_name(attr, &attr.name)?),
            "metrics_token_env" => metrics_token_env = Some(ctx.env_name(attr, &attr.name)?),
            "metrics_per_stack" => metrics_per_stack = ctx.count(attr, &attr.name, 0, 10_000)?,
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
    let mut policies: Vec<PolicyConfig> = Vec::new();
    let mut variables: Vec<VariableSet> = Vec::new();
    let mut access = None;
    let mut retention = None;
    for block in &raw.blocks {
        match block.kind.as_str() {
            "variables" => {
                let set = super::variables::variable_set(&ctx, block)?;
                if variables.iter().any(|v| v.name == set.name) {
                    return Err(
                        ctx.block_err(block, format!("variables {:?} is declared twice", set.name))
                    );
                }
                variables.push(set);
            }
            "policy" => {
                let policy = policy(&ctx, block)?;
                if policies.iter().any(|p| p.name == policy.name) {
                    return Err(
                        ctx.block_err(block, format!("policy {:?} is declared twice", policy.name))
                    );
                }
                policies.push(policy);
            }
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
            "access" => {
                if access.is_some() {
                    return Err(ctx.block_err(block, "there is one access block at most".into()));
                }
                access = Some(super::access::access(&ctx, block)?);
            }
            "retention" => {
                if retention.is_some() {
                    return Err(ctx.block_err(block, "there is one retention block at most".into()));
                }
                retention = Some(super::retention::retention(&ctx, block)?);
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
        api_token_env,
        metrics_token_env,
        metrics_per_stack,
        slack_webhook_env,
        drift_concurrency,
        base_url,
        repos,
        policies,
        runners,
        variables,
        access,
        retention,
        exe: None,
        http_timeouts: (
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(60),
        ),
    })
}

fn policy(ctx: &Ctx, block: &RawBlock) -> Result<PolicyConfig, ConfigError> {
    let [name] = block.labels.as_slice() else {
        return Err(ctx.block_err(block, "a policy block takes one label, its name".into()));
    };
    if let Some(inner) = block.blocks.first() {
        return Err(ctx.block_err(
            inner,
            format!("unknown block {:?} in policy {name:?}", inner.kind),
        ));
    }
    let mut path = None;
    let mut level = Level::SoftMandatory;
    for attr in &block.attrs {
        let attr_path = format!("policy.{name}.{}", attr.name);
        match attr.name.as_str() {
            "path" => {
                let dir = ctx
                    .file
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(ctx.string(attr, &attr_path)?);
                path = Some(dir);
            }
            "level" => {
                let text = ctx.string(attr, &attr_path)?;
                level = text.parse().map_err(|_| {
                    ctx.err(
                        attr,
                        &attr_path,
                        format!("{text:?} is not one of \"advisory\", \"soft-mandatory\", \"hard-mandatory\""),
                    )
                })?;
            }
            _ => return Err(ctx.err(attr, &attr_path, "unknown attribute".into())),
        }
    }
    Ok(PolicyConfig {
        name: name.clone(),
        path,
        level,
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
    let mut policies: Vec<PolicyConfig> = Vec::new();
    let mut github = None;
    for inner in &block.blocks {
        if inner.kind == "github" {
            if github.is_some() {
                return Err(ctx.block_err(inner, format!("repo {name:?} has two github blocks")));
            }
            github = Some(super::github::github(ctx, name, inner)?);
            continue;
        }
        if inner.kind != "policy" {
            return Err(ctx.block_err(
                inner,
                format!("unknown block {:?} in repo {name:?}", inner.kind),
            ));
        }
        let policy = policy(ctx, inner)?;
        if policies.iter().any(|p| p.name == policy.name) {
            return Err(ctx.block_err(
                inner,
                format!(
                    "policy {:?} is declared twice in repo {name:?}",
                    policy.name
                ),
            ));
        }
        policies.push(policy);
    }
    let mut policy_params = BTreeMap::new();
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
            "policy_params" => {
                let Expression::Object(_) = &attr.value else {
                    return Err(ctx.err(
                        attr,
                        &path,
                        "must be an object like { max_deletions = 5 }".into(),
                    ));
                };
                let value: hcl::Value = hcl::Expression::from(attr.value.clone()).into();
                let serde_json::Value::Object(map) =
                    serde_json::to_value(value).map_err(|e| ctx.err(attr, &path, e.to_string()))?
                else {
                    return Err(ctx.err(attr, &path, "must be an object".into()));
                };
                policy_params = map.into_iter().collect();
            }
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
        policies,
        policy_params,
        drift_schedule,
        github,
    })
}

/// A link base: an http(s) URL with a host and no query; the credentials rule applies here too.
pub(super) fn check_base_url(url: &str) -> Result<(), String> {
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

pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(&self, attr: &RawAttr, name: &str, message: String) -> ConfigError {
        ConfigError::new(self.file, attr.line, name, message)
    }

    pub(super) fn block_err(&self, block: &RawBlock, message: String) -> ConfigError {
        let name = std::iter::once(block.kind.as_str())
            .chain(block.labels.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        ConfigError::new(self.file, block.line, &name, message)
    }

    pub(super) fn strings(&self, attr: &RawAttr, name: &str) -> Result<Vec<String>, ConfigError> {
        let Expression::Array(items) = &attr.value else {
            return Err(self.err(attr, name, "must be a list of strings".into()));
        };
        items
            .iter()
            .map(|item| match item {
                Expression::String(s) => Ok(s.value().to_string()),
                _ => Err(self.err(attr, name, "must be a list of strings".into())),
            })
            .collect()
    }

    pub(super) fn bool(&self, attr: &RawAttr, name: &str) -> Result<bool, ConfigError> {
        match &attr.value {
            Expression::Bool(b) => Ok(*b.value()),
            _ => Err(self.err(attr, name, "must be true or false".into())),
        }
    }

    pub(super) fn string(&self, attr: &RawAttr, name: &str) -> Result<String, ConfigError> {
        match &attr.value {
            Expression::String(s) => Ok(s.value().to_string()),
            _ => Err(self.err(attr, name, "must be a literal string".into())),
        }
    }

    pub(super) fn count(
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

    pub(super) fn env_name(&self, attr: &RawAttr, name: &str) -> Result<String, ConfigError> {
        let text = self.string(attr, name)?;
        if super::variables::valid_env_name(&text) {
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
