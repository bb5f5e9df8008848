//! `scitqctl launch CMD...`: create one task, print its output as it runs, exit like it.

use clap::Args;
use scitq_proto::v1::{Task, TaskSpec, TaskStatus};

use super::task::{create, follow};
use super::{Context, Exit};
use crate::error::UsageError;
use crate::output::views::task_status_name;
use crate::spec::SpecArgs;

#[derive(Debug, Args)]
pub struct LaunchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The command and its arguments (`launch ls -l` works; use `--` before a command that
    /// starts with -)
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    command: Vec<String>,
}

impl LaunchArgs {
    /// The task to create.
    pub fn spec(&self) -> Result<TaskSpec, UsageError> {
        self.spec.with_argv(&self.command)
    }
}

pub async fn run(args: LaunchArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let spec = args.spec()?;
    let client = ctx.connect().await?;
    let ids = create(&client, vec![spec], None).await?;
    let id = *ids
        .first()
        .ok_or_else(|| anyhow::anyhow!("the server returned no task id"))?;
    eprintln!("task {id} created");
    let task = follow(&client, id).await?;
    if let Some(why) = failure_note(&task) {
        eprintln!("task {id} {why}");
    }
    Ok(exit_code(&task))
}

/// Why a task that did not succeed ended, for stderr.
fn failure_note(task: &Task) -> Option<String> {
    if task.status == TaskStatus::Succeeded as i32 {
        return None;
    }
    let status = task_status_name(task.status);
    Some(match (task.status_reason.as_str(), task.exit_code) {
        ("", Some(code)) => format!("{status} with exit code {code}"),
        ("", None) => status,
        (reason, _) => format!("{status}: {reason}"),
    })
}

/// The task's own exit code when it fits one, 0 when it succeeded, else 1.
fn exit_code(task: &Task) -> Exit {
    match TaskStatus::try_from(task.status) {
        Ok(TaskStatus::Succeeded) => 0,
        Ok(TaskStatus::Failed) => task
            .exit_code
            .and_then(|code| u8::try_from(code).ok())
            .filter(|&code| code != 0)
            .unwrap_or(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: TaskStatus, exit_code: Option<i32>) -> Task {
        Task {
            status: status as i32,
            exit_code,
            ..Task::default()
        }
    }

    #[test]
    fn exit_codes_follow_the_task() {
        assert_eq!(exit_code(&task(TaskStatus::Succeeded, Some(0))), 0);
        assert_eq!(exit_code(&task(TaskStatus::Failed, Some(3))), 3);
        assert_eq!(exit_code(&task(TaskStatus::Failed, None)), 1);
        assert_eq!(exit_code(&task(TaskStatus::Failed, Some(0))), 1);
        assert_eq!(exit_code(&task(TaskStatus::Failed, Some(-9))), 1);
        assert_eq!(exit_code(&task(TaskStatus::Failed, Some(300))), 1);
        assert_eq!(exit_code(&task(TaskStatus::Canceled, None)), 1);
    }

    #[test]
    fn failures_are_explained() {
        assert_eq!(failure_note(&task(TaskStatus::Succeeded, Some(0))), None);
        assert_eq!(
            failure_note(&task(TaskStatus::Failed, Some(3))).as_deref(),
            Some("failed with exit code 3")
        );
        let lost = Task {
            status_reason: "worker lost".into(),
            ..task(TaskStatus::Failed, None)
        };
        assert_eq!(failure_note(&lost).as_deref(), Some("failed: worker lost"));
    }
}
