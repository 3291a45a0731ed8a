//! The `retention { runs = "180d"  logs = "30d"  artifacts = "14d" }` block: how long finished
//! runs, their log lines and their stored plans are kept, so the database does not grow
//! without bound. Each age is optional; without the block nothing is swept.

use std::time::Duration;

use super::ConfigError;
use super::raw::RawBlock;
use super::valid::Ctx;

/// How long each kind of history is kept after its run finished (`None`: for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub runs: Option<Duration>,
    pub logs: Option<Duration>,
    pub artifacts: Option<Duration>,
}

pub(super) fn retention(ctx: &Ctx, block: &RawBlock) -> Result<Retention, ConfigError> {
    if !block.labels.is_empty() {
        return Err(ctx.block_err(block, "a retention block takes no label".into()));
    }
    let mut retention = Retention::default();
    for attr in &block.attrs {
        let path = format!("retention.{}", attr.name);
        let slot = match attr.name.as_str() {
            "runs" => &mut retention.runs,
            "logs" => &mut retention.logs,
            "artifacts" => &mut retention.artifacts,
            _ => {
                return Err(ctx.err(
                    attr,
                    &path,
                    "unknown attribute (runs, logs, artifacts)".into(),
                ));
            }
        };
        let text = ctx.string(attr, &path)?;
        let age = humantime::parse_duration(&text).map_err(|err| {
            ctx.err(
                attr,
                &path,
                format!("{text:?} is not an age like \"30d\" or \"12h\": {err}"),
            )
        })?;
        if age < Duration::from_secs(3600) {
            return Err(ctx.err(attr, &path, "must be at least 1h".into()));
        }
        *slot = Some(age);
    }
    // A run's logs and plan go with it: keeping them longer than the run means nothing.
    if let (Some(runs), Some(logs)) = (retention.runs, retention.logs)
        && logs > runs
    {
        return Err(ctx.block_err(block, "retention.logs is longer than retention.runs".into()));
    }
    Ok(retention)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("tidemark.hcl"), text, Path::new("/srv")).map_err(|e| e.to_string())
    }

    #[test]
    fn ages_parse_and_bad_ones_name_the_attribute() {
        let config = parse("retention {\n  runs = \"180d\"\n  logs = \"30d\"\n}\n").expect("valid");
        let retention = config.retention.expect("retention");
        assert_eq!(
            retention.runs,
            Some(std::time::Duration::from_secs(180 * 86_400))
        );
        assert_eq!(
            retention.logs,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(retention.artifacts, None);
        let err = parse("retention {\n  logs = \"soon\"\n}\n").expect_err("bad age");
        assert!(
            err.starts_with("tidemark.hcl:2: retention.logs: \"soon\" is not an age"),
            "{err}"
        );
        let err = parse("retention {\n  runs = \"1d\"\n  logs = \"2d\"\n}\n").expect_err("longer");
        assert!(
            err.contains("retention.logs is longer than retention.runs"),
            "{err}"
        );
        assert!(parse("retention {\n  runz = \"1d\"\n}\n").is_err());
    }
}
