//! `scitqctl`, the operator command line of scitq: create tasks and follow them, steer
//! batches and workers. Talks gRPC (`scitq.v1`) to `scitqd` with an admin token.

#![forbid(unsafe_code)]

pub mod address;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod remotes;
pub mod spec;

pub use cli::Cli;

/// Runs one command line and returns the process exit code; errors are printed here.
pub async fn run(cli: Cli) -> u8 {
    let ctx = commands::Context::new(&cli);
    match commands::dispatch(cli.command, &ctx).await {
        Ok(code) => code,
        Err(err) => {
            let report = error::report(&err, ctx.server());
            if let Some(message) = report.message {
                eprintln!("error: {message}");
            }
            report.code
        }
    }
}
