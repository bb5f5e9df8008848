//! The command line: global options and the nouns.

use clap::{Parser, Subcommand};

use crate::commands::{
    batch::BatchCommand, fetch::FetchArgs, launch::LaunchArgs, samples::SamplesArgs,
    task::TaskCommand, worker::WorkerCommand, workflow::WorkflowCommand,
};

/// scitqctl: steer a scitq server (tasks, batches, workers).
///
/// The server and token come from --server/--token, else SCITQ_SERVER/SCITQ_TOKEN, else the
/// client config $XDG_CONFIG_HOME/scitq/config.toml (~/.config/scitq/config.toml) that
/// scitqd writes on its first start.
#[derive(Debug, Parser)]
#[command(name = "scitqctl", version, propagate_version = true)]
pub struct Cli {
    /// scitqd address: HOST, HOST:PORT, http://HOST:PORT or https://HOST:PORT (port 5000 if
    /// none) [default: from the client config, else 127.0.0.1:5000]
    #[arg(
        long,
        global = true,
        env = "SCITQ_SERVER",
        value_name = "ADDRESS",
        help_heading = "Global options"
    )]
    pub server: Option<String>,
    /// Admin token [default: from the client config]
    #[arg(
        long,
        global = true,
        env = "SCITQ_TOKEN",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub token: Option<String>,
    /// Send the token over plain http:// to a server that is not on this machine (it can be
    /// read on the way: use https:// instead)
    #[arg(
        long,
        global = true,
        env = "SCITQ_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new(),
        help_heading = "Global options"
    )]
    pub insecure: bool,
    /// Print data as JSON instead of a table
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, follow, wait for and relaunch tasks
    #[command(subcommand)]
    Task(TaskCommand),
    /// List, stop, restart and delete batches
    #[command(subcommand)]
    Batch(BatchCommand),
    /// List workers and change their settings
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Create one task, print its output as it runs and exit with its exit code
    Launch(LaunchArgs),
    /// Copy, sync, list and delete storage URIs (remotes from scitqd or a local rclone.conf)
    ///
    /// A URI naming an rclone remote (NAME:path or NAME://path) finds NAME in:
    ///
    ///   1. --rclone-config FILE, else SCITQ_RCLONE_CONFIG: that file alone.
    ///   2. Otherwise scitqd's rclone config (the remotes its tasks use), asked with the
    ///      server and admin token of --server/--token, SCITQ_SERVER/SCITQ_TOKEN or the
    ///      client config, waiting 5 s at most; and rclone's own file
    ///      ($XDG_CONFIG_HOME/rclone/rclone.conf, else ~/.config/rclone/rclone.conf).
    ///      A remote in both is scitqd's (a note says so), so fetch reaches what tasks
    ///      reach; one only in the local file works too, also when scitqd cannot be reached.
    ///
    /// A remote wins over a built-in scheme of its name, as on the agents: with a remote
    /// named s3, s3://bucket/key is that remote's, so s3://, azure://, ftp://... are looked
    /// up the same way. Found nowhere, the built-in scheme serves (s3://, azure:// with the
    /// AWS_* / AZURE_STORAGE_* variables). file:// and local paths need neither.
    #[command(verbatim_doc_comment)]
    Fetch(FetchArgs),
    /// List the samples of a sequencing project and their runs, from ENA (no server needed)
    Samples(SamplesArgs),
    /// Run workflows from YAML files (steps over samples, with dependencies); list, show,
    /// stop and delete workflows
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Rules that recruit machines on scitqd's providers while a batch's tasks wait
    #[command(subcommand)]
    Recruiter(crate::commands::recruit::RecruiterCommand),
    /// Machine sizes of scitqd's providers
    #[command(subcommand)]
    Flavor(crate::commands::recruit::FlavorCommand),
    /// Provisioning jobs: machines created and destroyed
    #[command(subcommand)]
    Job(crate::commands::recruit::JobCommand),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("scitqctl").chain(args.iter().copied()))
    }

    /// The task spec `launch ARGS` would send.
    fn launch_spec(args: &[&str]) -> scitq_proto::v1::TaskSpec {
        let mut all = vec!["launch"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Launch(launch) => launch.spec().unwrap(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn launch_takes_the_command_without_double_dash() {
        assert_eq!(launch_spec(&["ls", "-l"]).command, "ls -l");
        assert_eq!(
            launch_spec(&["echo", "Hello world!"]).command,
            "echo 'Hello world!'"
        );
        let spec = launch_spec(&["--batch", "b", "grep", "--batch", "x"]);
        assert_eq!(spec.batch, "b");
        assert_eq!(spec.command, "grep --batch x");
        let spec = launch_spec(&["--shell", "ls | wc -l"]);
        assert_eq!((spec.command.as_str(), spec.shell), ("ls | wc -l", 1));
        let spec = launch_spec(&["--shell", "bash", "echo $HOME"]);
        assert_eq!((spec.command.as_str(), spec.shell), ("echo $HOME", 2));
        let spec = launch_spec(&["--shell", "--", "-x"]);
        assert_eq!((spec.command.as_str(), spec.shell), ("-x", 1));
    }

    #[test]
    fn an_unknown_option_before_the_command_is_refused_with_a_suggestion() {
        for args in [
            &[
                "task",
                "create",
                "--contaner",
                "busybox",
                "--",
                "echo",
                "hi",
            ][..],
            &["launch", "--inptu", "s3://b/k", "echo", "hi"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument, "{err}");
            let text = err.to_string();
            assert!(
                text.contains("a similar argument exists"),
                "{args:?}: {text}"
            );
        }
        // After the command's first word, options are the command's.
        let spec = launch_spec(&["grep", "--inptu", "x"]);
        assert_eq!(spec.command, "grep --inptu x");
        assert_eq!(launch_spec(&["--", "--version"]).command, "--version");
    }

    #[test]
    fn task_list_prints_ids_alone_with_ids_or_q() {
        for flag in ["--ids", "-q", "--quiet"] {
            match parse(&["task", "list", flag, "--status", "failed"])
                .unwrap()
                .command
            {
                Command::Task(TaskCommand::List(args)) => assert!(args.ids, "{flag}"),
                other => panic!("parsed as {other:?}"),
            }
        }
        assert!(parse(&["task", "list", "-q", "--watch"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere_before_the_command() {
        let cli = parse(&["task", "list", "--json", "--server", "h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.server.as_deref(), Some("h:1"));
    }

    #[test]
    fn statuses_are_repeatable_and_comma_separated() {
        assert!(
            parse(&[
                "task",
                "list",
                "--status",
                "failed,running",
                "--status",
                "pending"
            ])
            .is_ok()
        );
        let err = parse(&["task", "list", "--status", "done"]).unwrap_err();
        assert!(err.to_string().contains("invalid status \"done\""), "{err}");
    }

    #[test]
    fn bad_worker_settings_are_refused_before_sending() {
        let err = parse(&["worker", "set", "1", "--concurrency", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--concurrency"), "{err}");
        let err = parse(&["worker", "set", "1", "--concurrency", "-1"]).unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
        assert!(parse(&["worker", "set", "1"]).is_err());
        assert!(parse(&["worker", "set", "1", "--prefetch", "0", "--batch", ""]).is_ok());
    }

    #[test]
    fn conflicting_choices_are_refused() {
        assert!(parse(&["task", "wait"]).is_err());
        assert!(parse(&["task", "wait", "--batch", "b", "1"]).is_err());
        assert!(parse(&["task", "wait", "1", "2", "--retry", "2"]).is_ok());
        assert!(parse(&["task", "output", "1", "--follow", "--execution", "2"]).is_err());
        assert!(parse(&["batch", "stop", "b", "--term", "--kill"]).is_err());
        assert!(parse(&["task", "create", "--from-file", "f", "--", "echo"]).is_err());
    }
}
