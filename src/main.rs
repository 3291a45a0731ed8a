//! The `tidemark` binary: parse the command line, set up tracing, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tidemark::cli::Cli::parse();
    tidemark::cli::init_tracing(&cli);
    match tidemark::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
