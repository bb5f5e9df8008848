//! An `Assignment` validated on arrival into what the executor runs.
//!
//! An invalid assignment is not dropped: it is accepted, then fails with a message that says
//! why, so the operator sees it on the task.

use scitq_proto::container::{ContainerOptions, OptionError};
use scitq_proto::v1::{Assignment, RegistryCredential, Shell, TaskSpec};

use crate::staging::DataSpec;
use crate::state::ExecutionId;

/// Why a task's command cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("assignment carries no task spec")]
    MissingSpec,
    #[error("empty command")]
    Empty,
    #[error("cannot split command {0:?}: unbalanced quotes or trailing backslash")]
    Unparsable(String),
    #[error("unknown shell {0}")]
    UnknownShell(i32),
}

/// The container a task runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    /// Validated again here: an agent does not trust a server of another version.
    pub options: Result<ContainerOptions, OptionError>,
    /// Credentials for the image's registry, when the server has some.
    pub credentials: Vec<RegistryCredential>,
}

/// One execution to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub id: ExecutionId,
    pub task_id: i64,
    /// The program and its arguments, or why there are none.
    pub argv: Result<Vec<String>, CommandError>,
    /// How long the command may run.
    pub run_timeout: Option<std::time::Duration>,
    /// The container to run it in; `None` runs it natively.
    pub container: Option<ContainerSpec>,
    /// Inputs, resources and output URI.
    pub data: DataSpec,
}

impl Launch {
    pub fn from_assignment(assignment: &Assignment) -> Launch {
        Launch {
            id: ExecutionId(assignment.execution_id),
            task_id: assignment.task_id,
            argv: assignment
                .spec
                .as_ref()
                .ok_or(CommandError::MissingSpec)
                .and_then(argv_of),
            run_timeout: assignment
                .spec
                .as_ref()
                .filter(|spec| spec.run_timeout_s > 0)
                .map(|spec| std::time::Duration::from_secs(spec.run_timeout_s.into())),
            container: assignment
                .spec
                .as_ref()
                .filter(|spec| !spec.container.is_empty())
                .map(|spec| ContainerSpec {
                    image: spec.container.clone(),
                    options: ContainerOptions::parse(&spec.container_options),
                    credentials: assignment.registry_credentials.clone(),
                }),
            data: assignment
                .spec
                .as_ref()
                .map(|spec| DataSpec {
                    inputs: spec.inputs.clone(),
                    resources: spec.resources.clone(),
                    output: spec.output.clone(),
                })
                .unwrap_or_default(),
        }
    }
}

/// Turns a command and its shell mode into argv (run in the container for container tasks).
pub fn argv_of(spec: &TaskSpec) -> Result<Vec<String>, CommandError> {
    let command = &spec.command;
    if command.trim().is_empty() {
        return Err(CommandError::Empty);
    }
    let shell = |name: &str| Ok(vec![name.to_owned(), "-c".to_owned(), command.clone()]);
    match Shell::try_from(spec.shell) {
        Ok(Shell::None) => {
            let argv =
                shlex::split(command).ok_or_else(|| CommandError::Unparsable(command.clone()))?;
            if argv.is_empty() {
                return Err(CommandError::Empty);
            }
            Ok(argv)
        }
        Ok(Shell::Sh) => shell("sh"),
        Ok(Shell::Bash) => shell("bash"),
        Err(_) => Err(CommandError::UnknownShell(spec.shell)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, shell: Shell) -> TaskSpec {
        TaskSpec {
            command: command.to_owned(),
            shell: shell as i32,
            ..TaskSpec::default()
        }
    }

    #[test]
    fn shell_none_splits_with_posix_quoting() {
        let argv = argv_of(&spec(r#"echo "a b" 'c d' e\ f"#, Shell::None)).unwrap();
        assert_eq!(argv, ["echo", "a b", "c d", "e f"]);
    }

    #[test]
    fn shells_wrap_the_command() {
        assert_eq!(
            argv_of(&spec("echo $HOME | wc", Shell::Sh)).unwrap(),
            ["sh", "-c", "echo $HOME | wc"]
        );
        assert_eq!(argv_of(&spec("x", Shell::Bash)).unwrap()[0], "bash");
    }

    #[test]
    fn bad_commands_say_why() {
        assert_eq!(argv_of(&spec("  ", Shell::None)), Err(CommandError::Empty));
        assert_eq!(argv_of(&spec("", Shell::Sh)), Err(CommandError::Empty));
        let unbalanced = argv_of(&spec("echo 'oops", Shell::None)).unwrap_err();
        assert!(
            unbalanced.to_string().contains("\"echo 'oops\""),
            "{unbalanced}"
        );
        let mut odd = spec("x", Shell::None);
        odd.shell = 42;
        assert_eq!(argv_of(&odd), Err(CommandError::UnknownShell(42)));
    }

    #[test]
    fn container_tasks_carry_their_image_options_and_credentials() {
        let credential = RegistryCredential {
            registry: "127.0.0.1:5000".into(),
            username: "u".into(),
            password: "p".into(),
        };
        let launch = Launch::from_assignment(&Assignment {
            execution_id: 1,
            task_id: 2,
            spec: Some(TaskSpec {
                command: "ls /input".into(),
                container: "127.0.0.1:5000/tiny:1".into(),
                container_options: vec!["--privileged".into()],
                ..TaskSpec::default()
            }),
            registry_credentials: vec![credential.clone()],
        });
        assert_eq!(launch.argv, Ok(vec!["ls".into(), "/input".into()]));
        let container = launch.container.unwrap();
        assert_eq!(container.image, "127.0.0.1:5000/tiny:1");
        assert_eq!(container.credentials, vec![credential]);
        assert_eq!(
            container.options,
            Err(OptionError::Forbidden("--privileged".into()))
        );
    }

    #[test]
    fn assignment_without_spec_is_an_error_not_a_panic() {
        let launch = Launch::from_assignment(&Assignment {
            execution_id: 3,
            task_id: 4,
            spec: None,
            registry_credentials: Vec::new(),
        });
        assert_eq!(launch.id, ExecutionId(3));
        assert_eq!(launch.argv, Err(CommandError::MissingSpec));
    }
}
