//! `scitqd`: parse the configuration, start logging, serve until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use scitq_server::config::{Cli, Config};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    scitq_proto::install_crypto_provider();
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    if cli.check_providers {
        return check_providers(&config).await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    match scitq_server::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `--check-providers`: one line per provider, non-zero if one failed.
async fn check_providers(config: &Config) -> ExitCode {
    if config.providers.is_empty() {
        eprintln!("no [[provider]] in the config");
        return ExitCode::from(2);
    }
    let local = scitq_server::local_context(config);
    let results =
        scitq_server::service::recruiter::check_providers(&config.providers, &local).await;
    let mut failed = false;
    for (name, result) in results {
        match result {
            Ok(line) => println!("{name}: {line}"),
            Err(error) => {
                failed = true;
                println!("{name}: FAILED: {error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
