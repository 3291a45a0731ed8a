//! `tidemark poll REPO`: ask the running service to poll a repository now.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{ConfigArg, Format, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository's name in the config.
    pub repo: String,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    if !config.repos.iter().any(|r| r.name == args.repo) {
        bail!("repo {:?} is not in {}", args.repo, config.file.display());
    }
    let url = format!("http://{}/api/v1/repos/{}/poll", config.listen, args.repo);
    let status = super::runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let response = client.post(&url).send().await.with_context(|| {
            format!(
                "asking tidemark at {} (is `tidemark serve` running?)",
                config.listen
            )
        })?;
        anyhow::Ok(response.status())
    })?;
    if !status.is_success() {
        bail!(
            "tidemark answered {status} to the poll request for {:?}",
            args.repo
        );
    }
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "repo": args.repo, "poll": "requested" }))?,
        Format::Text => println!("poll of {} requested", args.repo),
    }
    Ok(ExitCode::SUCCESS)
}
