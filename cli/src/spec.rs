//! Task descriptions from the command line: the field flags shared by `task create` and
//! `launch`, and how an argv becomes the command string.

use clap::Args;
use scitq_proto::v1::{Shell, TaskSpec};

use crate::error::UsageError;

/// Fields of the task(s) to create. With `--from-file` they are the defaults of every line.
#[derive(Args, Debug, Clone, Default)]
pub struct SpecArgs {
    /// Batch of the task [default: Default]
    #[arg(long)]
    pub batch: Option<String>,
    /// Run the command with a shell: `sh` (the default) or `bash`. Without it the command
    /// is split with shell quoting rules and run directly
    #[arg(long, num_args = 0..=1, default_missing_value = "sh", value_name = "sh|bash")]
    pub shell: Option<String>,
    /// Name of the task (free text)
    #[arg(long)]
    pub name: Option<String>,
    /// Docker image to run the command in
    #[arg(long, value_name = "IMAGE")]
    pub container: Option<String>,
    /// Extra `docker run` option (repeatable)
    #[arg(
        long = "container-option",
        value_name = "OPT",
        allow_hyphen_values = true
    )]
    pub container_options: Vec<String>,
    /// URI downloaded to the input folder (repeatable)
    #[arg(long = "input", value_name = "URI")]
    pub inputs: Vec<String>,
    /// URI the output folder is uploaded to
    #[arg(long, value_name = "URI")]
    pub output: Option<String>,
    /// URI made available in the resource folder (repeatable)
    #[arg(long = "resource", value_name = "URI")]
    pub resources: Vec<String>,
    /// Automatic relaunches on failure
    #[arg(long, value_name = "N")]
    pub retry: Option<u32>,
    /// Higher runs first
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Time limit of a run (e.g. 90s, 2h): past it the task gets SIGTERM, then SIGKILL
    /// 10 s later, and fails as `timeout`
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<u32>,
    /// Run only after these tasks succeeded (repeatable or comma-separated ids)
    #[arg(long = "depends-on", value_name = "ID", value_delimiter = ',',
          num_args = 1.., value_parser = clap::value_parser!(i64).range(1..))]
    pub depends_on: Vec<i64>,
}

/// Parses a run time limit (`90s`, `2h30m`) into whole seconds.
pub fn parse_timeout(text: &str) -> Result<u32, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?}: {e} (examples: 90s, 30m, 2h)"))?;
    let secs = duration.as_secs();
    if secs == 0 {
        return Err(format!("invalid duration {text:?}: at least one second"));
    }
    u32::try_from(secs).map_err(|_| format!("invalid duration {text:?}: too long"))
}

/// Parses a shell name as written in flags and files.
pub fn parse_shell(text: &str) -> Option<Shell> {
    match text {
        "sh" => Some(Shell::Sh),
        "bash" => Some(Shell::Bash),
        _ => None,
    }
}

impl SpecArgs {
    /// Every field but the command and the shell.
    pub fn base(&self) -> TaskSpec {
        TaskSpec {
            name: self.name.clone().unwrap_or_default(),
            batch: self.batch.clone().unwrap_or_default(),
            command: String::new(),
            shell: Shell::None as i32,
            container: self.container.clone().unwrap_or_default(),
            container_options: self.container_options.clone(),
            inputs: self.inputs.clone(),
            output: self.output.clone().unwrap_or_default(),
            resources: self.resources.clone(),
            retry: self.retry.unwrap_or(0),
            priority: self.priority.unwrap_or(0),
            run_timeout_s: self.timeout.unwrap_or(0),
            depends_on: self.depends_on.clone(),
        }
    }

    /// The shell for `--from-file`, where `--shell` must be exactly `sh` or `bash`.
    pub fn strict_shell(&self) -> Result<Shell, UsageError> {
        match self.shell.as_deref() {
            None => Ok(Shell::None),
            Some(text) => parse_shell(text)
                .ok_or_else(|| UsageError(format!("invalid shell {text:?}: expected sh or bash"))),
        }
    }

    /// The complete spec of one task whose command is `argv`.
    ///
    /// `--shell` takes an optional value, so in `launch --shell 'ls | wc -l'` clap hands the
    /// command to `--shell`: a value other than `sh` or `bash` is the first word of the
    /// command, run with sh.
    pub fn with_argv(&self, argv: &[String]) -> Result<TaskSpec, UsageError> {
        let (shell, argv) = match self.shell.as_deref() {
            None => (Shell::None, argv.to_vec()),
            Some(text) => match parse_shell(text) {
                Some(shell) => (shell, argv.to_vec()),
                None => {
                    let mut words = vec![text.to_owned()];
                    words.extend_from_slice(argv);
                    (Shell::Sh, words)
                }
            },
        };
        Ok(TaskSpec {
            command: join_command(&argv, shell)?,
            shell: shell as i32,
            ..self.base()
        })
    }
}

/// Turns an argv into the command string: quoted for the agent to split it back when run
/// without a shell, joined with spaces for a shell to interpret.
pub fn join_command(argv: &[String], shell: Shell) -> Result<String, UsageError> {
    if argv.iter().all(|word| word.trim().is_empty()) {
        return Err(UsageError(
            "empty command: give the command after the options (after `--` if it starts with -)"
                .into(),
        ));
    }
    match shell {
        Shell::None => shlex::try_join(argv.iter().map(String::as_str))
            .map_err(|e| UsageError(format!("cannot quote command: {e}"))),
        Shell::Sh | Shell::Bash => Ok(argv.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn without_shell_words_are_quoted() {
        let argv = words(&["echo", "Hello world!", "it's", "$HOME"]);
        let command = join_command(&argv, Shell::None).unwrap();
        assert_eq!(command, r#"echo 'Hello world!' "it's" '$HOME'"#);
        assert_eq!(shlex::split(&command).unwrap(), argv);
        assert_eq!(
            join_command(&words(&["ls", "-l"]), Shell::None).unwrap(),
            "ls -l"
        );
    }

    #[test]
    fn with_shell_words_are_joined_as_they_are() {
        let argv = words(&["echo $HOME", "|", "wc -c"]);
        assert_eq!(
            join_command(&argv, Shell::Bash).unwrap(),
            "echo $HOME | wc -c"
        );
    }

    #[test]
    fn empty_commands_are_refused() {
        assert!(join_command(&[], Shell::None).is_err());
        assert!(join_command(&words(&["", " "]), Shell::Sh).is_err());
    }

    #[test]
    fn flags_fill_the_spec() {
        let args = SpecArgs {
            batch: Some("b".into()),
            shell: Some("bash".into()),
            inputs: vec!["s3://x/a".into()],
            retry: Some(3),
            priority: Some(-2),
            ..SpecArgs::default()
        };
        let spec = args.with_argv(&words(&["echo", "a b"])).unwrap();
        assert_eq!(spec.command, "echo a b");
        assert_eq!(spec.shell, Shell::Bash as i32);
        assert_eq!(spec.batch, "b");
        assert_eq!(spec.inputs, ["s3://x/a"]);
        assert_eq!((spec.retry, spec.priority), (3, -2));
    }

    #[test]
    fn a_shell_value_that_is_no_shell_starts_the_command() {
        let args = SpecArgs {
            shell: Some("ls | wc -l".into()),
            ..SpecArgs::default()
        };
        let spec = args.with_argv(&[]).unwrap();
        assert_eq!(spec.command, "ls | wc -l");
        assert_eq!(spec.shell, Shell::Sh as i32);
        assert!(args.strict_shell().is_err());
    }
}
