//! `tidemark poll REPO`: ask the running service to poll a repository now.

use std::io::{Read, Write};
use std::net::TcpStream;
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
    // A plain HTTP/1.1 request to the service's own listener: no HTTP client needed here.
    let mut stream = TcpStream::connect_timeout(&config.listen, Duration::from_secs(5))
        .with_context(|| {
            format!(
                "connecting to tidemark at {} (is `tidemark serve` running?)",
                config.listen
            )
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST /api/v1/repos/{}/poll HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        args.repo, config.listen
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
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
