//! One module per noun. Each command validates what it was given, then connects.

pub mod batch;
pub mod fetch;
pub mod launch;
pub mod recruit;
pub mod samples;
pub mod task;
pub mod watch;
pub mod worker;
pub mod workflow;

use std::sync::OnceLock;

use crate::address::ServerAddress;
use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::config::{self, Target};
use crate::error::UsageError;
use crate::output::Format;

/// The process exit code a command ends with.
pub type Exit = u8;

/// What every command may need: how to connect and how to print.
#[derive(Debug)]
pub struct Context {
    server: Option<String>,
    token: Option<String>,
    insecure: bool,
    pub format: Format,
    connected: OnceLock<ServerAddress>,
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        Self {
            server: cli.server.clone(),
            token: cli.token.clone(),
            insecure: cli.insecure,
            format: Format::from_json_flag(cli.json),
            connected: OnceLock::new(),
        }
    }

    /// Resolves the server and token (flags, env, client config) and connects.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let target = self.target()?;
        let _ = self.connected.set(target.address.clone());
        Client::connect(&target).await
    }

    /// The server and token from flags, env or the client config, without connecting.
    pub fn target(&self) -> Result<Target, UsageError> {
        let path = config::default_path();
        config::resolve(
            self.server.as_deref(),
            self.token.as_deref(),
            path.as_deref(),
        )
        .and_then(|target| target.refuse_clear_text(self.insecure))
    }

    /// The server this command talked to, once it tried.
    pub fn server(&self) -> Option<&ServerAddress> {
        self.connected.get()
    }
}

pub async fn dispatch(command: Command, ctx: &Context) -> anyhow::Result<Exit> {
    match command {
        Command::Task(command) => task::run(command, ctx).await,
        Command::Batch(command) => batch::run(command, ctx).await,
        Command::Worker(command) => worker::run(command, ctx).await,
        Command::Launch(args) => launch::run(args, ctx).await,
        Command::Fetch(args) => fetch::run(args, ctx).await,
        Command::Samples(args) => samples::run(args, ctx).await,
        Command::Workflow(command) => workflow::run(command, ctx).await,
        Command::Recruiter(command) => recruit::recruiter(command, ctx).await,
        Command::Flavor(command) => recruit::flavor(command, ctx).await,
        Command::Job(command) => recruit::job(command, ctx).await,
    }
}
