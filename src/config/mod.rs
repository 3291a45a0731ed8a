//! The server config: one HCL file, parsed into raw attributes and blocks (`raw`), then
//! checked into typed values (`valid`). Every error names the file, line and attribute.

mod access;
mod github;
mod raw;
mod retention;
mod valid;
mod variables;

pub use access::{AccessConfig, Role, TokenConfig, TokenSource, UserConfig};
pub use github::{ApplyRequirement, Checkout, GitHubAuth, GitHubConfig};
pub use retention::Retention;
pub use valid::{Config, DEFAULT_DRIFT_SCHEDULE, PolicyConfig, RepoConfig, RunnerBlock};

use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: u32,
    /// The attribute or block at fault, dotted (`repo.infra.poll_interval`); empty for syntax.
    pub attribute: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, line: u32, attribute: &str, message: String) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            attribute: attribute.to_string(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if !self.attribute.is_empty() {
            write!(f, "{}: ", self.attribute)?;
        }
        f.write_str(&self.message)
    }
}

impl Config {
    /// Reads and checks a config file, then applies the environment overrides
    /// (`TIDEMARK_DATABASE_URL`, `TIDEMARK_LISTEN`).
    pub fn load(file: &Path) -> anyhow::Result<Config> {
        let source = std::fs::read_to_string(file)
            .map_err(|err| anyhow::anyhow!("reading config {}: {err}", file.display()))?;
        let cwd = std::env::current_dir()?;
        let mut config = Self::parse(file, &source, &cwd)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Checks config text; relative paths resolve against `cwd`. No environment is read.
    pub fn parse(file: &Path, source: &str, cwd: &Path) -> Result<Config, ConfigError> {
        let raw = raw::parse(file, source)?;
        valid::validate(file, &raw, cwd)
    }

    /// The config used when no file is given: defaults only, no repositories.
    pub fn default_in(cwd: &Path) -> Config {
        valid::validate(Path::new("<defaults>"), &raw::RawConfig::empty(), cwd)
            .expect("the empty config is valid")
    }
}

impl Config {
    /// Applies `TIDEMARK_DATABASE_URL` and `TIDEMARK_LISTEN`, read through `lookup`.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(url) = lookup("TIDEMARK_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database = url;
        }
        if let Some(listen) = lookup("TIDEMARK_LISTEN").filter(|v| !v.is_empty()) {
            self.listen = listen
                .parse()
                .map_err(|_| anyhow::anyhow!("TIDEMARK_LISTEN={listen:?} is not an address"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("tidemark.hcl"), text, Path::new("/srv"))
    }

    /// Checks that `text` fails with `expected` (the whole `file:line: attr: message`).
    fn check_err(text: &str, expected: &str) {
        let err = parse(text).expect_err("config should be refused");
        assert_eq!(err.to_string(), expected);
    }

    #[test]
    fn the_minimal_form_from_the_readme_works_as_written() {
        let config = parse(
            r#"
listen   = "127.0.0.1:8080"
database = "sqlite:///var/lib/tidemark/tidemark.db"   # or "postgres://user@host/db"
data_dir = "/var/lib/tidemark"

repo "infra" {
  url           = "file:///srv/git/infra.git"           # file://, https:// or ssh
  branch        = "main"
  poll_interval = "30s"
}
"#,
        )
        .expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database, "sqlite:///var/lib/tidemark/tidemark.db");
        assert_eq!(config.data_dir, Path::new("/var/lib/tidemark"));
        assert_eq!(config.repos.len(), 1);
        assert_eq!(config.repos[0].name, "infra");
        assert_eq!(
            config.repos[0].poll_interval,
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn defaults_put_sqlite_in_the_data_dir_under_the_working_directory() {
        let config = parse("").expect("valid");
        assert_eq!(config.data_dir, Path::new("/srv/.tidemark"));
        assert_eq!(config.database, "sqlite:///srv/.tidemark/tidemark.db");
        assert_eq!(config.sandbox, "bubblewrap");
    }

    #[test]
    fn errors_name_file_line_and_attribute() {
        check_err(
            "listen = \"nope\"\n",
            "tidemark.hcl:1: listen: \"nope\" is not an address like 127.0.0.1:8080",
        );
        check_err("\n\nfoo = 1\n", "tidemark.hcl:3: foo: unknown attribute");
        check_err(
            "repo \"a\" {\n  url = \"file:///x\"\n  poll_interval = \"soon\"\n}\n",
            "tidemark.hcl:3: repo.a.poll_interval: \"soon\" is not a duration like \"30s\" or \"5m\": expected number at 0",
        );
        check_err(
            "repo \"a\" {\n  branch = \"main\"\n}\n",
            "tidemark.hcl:1: repo.a: repo \"a\" needs a url",
        );
        check_err(
            "repo \"a\" {\n  url = \"ftp://x\"\n}\n",
            "tidemark.hcl:2: repo.a.url: \"ftp://x\" is not a file://, https:// or ssh URL",
        );
        check_err(
            "workers = 0\n",
            "tidemark.hcl:1: workers: must be a whole number from 1 to 256",
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err =
            parse("listen = \"127.0.0.1:1\"\nrepo \"x\" {\n  url = \n}\n").expect_err("syntax");
        assert_eq!(err.line, 3, "{err}");
    }

    #[test]
    fn credentials_are_refused_in_the_file() {
        check_err(
            "database = \"postgres://u:secret@db/x\"\n",
            "tidemark.hcl:1: database: must not hold a password: put the whole URL in TIDEMARK_DATABASE_URL instead",
        );
        check_err(
            "repo \"a\" {\n  url = \"https://u:tok@git.example/x.git\"\n}\n",
            "tidemark.hcl:2: repo.a.url: must not hold a password: name an environment variable in token_env",
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = parse("listen = \"127.0.0.1:1\"\n").expect("valid");
        config
            .apply_env(|name| match name {
                "TIDEMARK_DATABASE_URL" => Some("postgres://postgres@127.0.0.1/x".into()),
                "TIDEMARK_LISTEN" => Some("127.0.0.1:9999".into()),
                _ => None,
            })
            .expect("env");
        assert_eq!(config.database, "postgres://postgres@127.0.0.1/x");
        assert_eq!(config.listen.port(), 9999);
    }

    #[test]
    fn drift_settings_have_defaults_and_are_checked() {
        let config = parse("repo \"a\" {\n  url = \"file:///x\"\n}\n").expect("valid");
        assert_eq!(
            config.repos[0].drift_schedule.as_deref(),
            Some(DEFAULT_DRIFT_SCHEDULE)
        );
        assert_eq!(config.drift_concurrency, 4);
        assert_eq!((config.slack_webhook_env, config.base_url), (None, None));

        let config = parse(
            "slack_webhook_env = \"SLACK_URL\"\ndrift_concurrency = 2\nbase_url = \"https://tm.example/\"\n\
             repo \"a\" {\n  url = \"file:///x\"\n  drift_schedule = \"0 0 */2 * * *\"\n}\n\
             repo \"b\" {\n  url = \"file:///y\"\n  drift_schedule = \"off\"\n}\n",
        )
        .expect("valid");
        assert_eq!(config.slack_webhook_env.as_deref(), Some("SLACK_URL"));
        assert_eq!(config.drift_concurrency, 2);
        assert_eq!(config.base_url.as_deref(), Some("https://tm.example"));
        assert_eq!(
            config.repos[0].drift_schedule.as_deref(),
            Some("0 0 */2 * * *")
        );
        assert_eq!(config.repos[1].drift_schedule, None);

        check_err(
            "repo \"a\" {\n  url = \"file:///x\"\n  drift_schedule = \"0 */6 * *\"\n}\n",
            "tidemark.hcl:3: repo.a.drift_schedule: drift_schedule \"0 */6 * *\" has 4 fields: expected 5 (minute hour day month weekday), 6 (with seconds) or 7 (with year)",
        );
        check_err(
            "repo \"a\" {\n  url = \"file:///x\"\n\n  drift_schedule = \"61 * * * *\"\n}\n",
            "tidemark.hcl:4: repo.a.drift_schedule: drift_schedule \"61 * * * *\" is not a valid cron expression: Minutes must be less than 59. ('61' specified.)",
        );
        check_err(
            "slack_webhook_env = \"https://hooks.slack.com/x\"\n",
            "tidemark.hcl:1: slack_webhook_env: \"https://hooks.slack.com/x\" is not an environment variable name",
        );
        check_err(
            "drift_concurrency = 0\n",
            "tidemark.hcl:1: drift_concurrency: must be a whole number from 1 to 1024",
        );
        assert_eq!(parse("").expect("valid").metrics_per_stack, 0);
        assert_eq!(
            parse("metrics_per_stack = 500\n")
                .expect("valid")
                .metrics_per_stack,
            500
        );
        check_err(
            "metrics_per_stack = 20000\n",
            "tidemark.hcl:1: metrics_per_stack: must be a whole number from 0 to 10000",
        );
        check_err(
            "base_url = \"tm.example\"\n",
            "tidemark.hcl:1: base_url: \"tm.example\" is not an http:// or https:// URL",
        );
    }
}
