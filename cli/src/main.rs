//! scitqctl: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use scitq_cli::Cli;

fn main() -> ExitCode {
    scitq_proto::install_crypto_provider();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = scitq_cli::error::check_utf8_args(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(scitq_cli::run(cli)))
}
