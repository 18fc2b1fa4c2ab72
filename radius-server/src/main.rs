use std::process::ExitCode;

use clap::Parser;
use portcullis_server::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs at info; admin commands only speak up for problems.
    let default = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match portcullis_server::cli::run(cli) {
        // A reader that closed standard output early (`| head`): 141, quietly (see
        // `cli::output`); another write error was reported already.
        Ok(()) => match portcullis_server::cli::stdout_status() {
            None => ExitCode::SUCCESS,
            Some(status) => ExitCode::from(status),
        },
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
