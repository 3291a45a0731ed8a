//! `tidemark version`: Tidemark's own version, and the terraform it would run.

use std::process::ExitCode;

use anyhow::Result;

use super::{Format, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let version = env!("CARGO_PKG_VERSION");
    match args.format {
        Format::Json => print_json(&serde_json::json!({ "tidemark": version }))?,
        Format::Text => println!("tidemark {version}"),
    }
    Ok(ExitCode::SUCCESS)
}
