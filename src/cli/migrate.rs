//! `tidemark migrate`: apply the database migrations and exit.

use std::process::ExitCode;

use anyhow::Result;

use super::{ConfigArg, Format, print_json};
use crate::store::{Store, redact_url};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    let (applied, backend) = super::runtime()?.block_on(async {
        let store = Store::connect(&config.database).await?;
        let applied = store.migrate().await?;
        anyhow::Ok((applied, store.backend_name()))
    })?;
    let database = redact_url(&config.database);
    match args.format {
        Format::Json => print_json(
            &serde_json::json!({ "database": database, "backend": backend, "applied": applied }),
        )?,
        Format::Text => println!("{database}: {applied} migration(s) applied"),
    }
    Ok(ExitCode::SUCCESS)
}
