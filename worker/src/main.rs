//! `scitq-agent`: parse the configuration, set up logging, run the agent, map errors to exit
//! codes (2: bad configuration, 1: the agent failed or the server refused it).

use std::process::ExitCode;

use clap::Parser;
use scitq_worker::config::{Args, Config, Environment};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The task supervisor is this binary run again (see `supervisor`), not a user command.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().as_deref() == Some(std::ffi::OsStr::new(scitq_worker::supervisor::SUBCOMMAND))
        && let Some(work_dir) = argv.next()
    {
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_env("SCITQ_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            .init();
        return scitq_worker::supervisor::serve::main(work_dir.into());
    }
    scitq_proto::install_crypto_provider();
    let args = Args::parse();
    let print_config = args.print_config;
    let config = match Config::from_args(args, &Environment::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SCITQ_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The agent runs as a task on the runtime's workers rather than on this thread: the
    // executors that wake it run there, and a wake-up within a worker costs no thread switch.
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        tokio::spawn(scitq_worker::run(config, shutdown)).await
    });
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: the agent stopped: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGINT/SIGTERM starts a graceful shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGINT/SIGTERM");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    eprintln!("error: interrupted twice, exiting without cleanup");
    std::process::exit(130);
}
