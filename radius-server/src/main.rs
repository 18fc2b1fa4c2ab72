use std::process::ExitCode;

use clap::Parser;
use portcullis_server::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

// mimalloc instead of glibc's malloc: a RADIUS request's buffers are allocated on one
// runtime thread and often freed on another (or on the login-batch thread), which glibc
// pays for in its arenas; side by side on the code-only benchmark the server used about a
// tenth less CPU per login (docs/BENCHMARKS.md). The daemon's binary only: the PAM module
// keeps its host's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
