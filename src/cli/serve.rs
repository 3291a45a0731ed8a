//! `tidemark serve`: run the service until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Result;

use super::ConfigArg;
use crate::app::App;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let config = args.config.load()?;
    super::runtime()?.block_on(async {
        let app = App::start(config).await?;
        println!("tidemark listening on http://{}", app.addr);
        app.run_until_signal().await
    })?;
    Ok(ExitCode::SUCCESS)
}
