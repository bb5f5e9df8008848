//! `task create --from-file`: many tasks from a file, checked whole before anything is sent.
//!
//! A `.json` or `.jsonl` file holds one JSON object per line, with the keys of a task
//! (`command` is required; other keys default to the command line flags). Any other file
//! (and `-`, standard input) holds one command per line; blank lines and lines starting with
//! `#` are skipped, and the flags apply to every task.

use std::path::Path;

use scitq_proto::v1::{Shell, TaskSpec};
use serde::Deserialize;

use crate::error::UsageError;
use crate::spec::{SpecArgs, join_command, parse_shell};

/// How the lines of a file are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line.
    Json,
    /// One command per line.
    Commands,
}

impl FileFormat {
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json" | "jsonl") => Self::Json,
            _ => Self::Commands,
        }
    }
}

/// A command as a string (taken as is) or as an argv (joined like the command line does).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CommandField {
    Line(String),
    Argv(Vec<String>),
}

/// One line of a JSON file; absent keys take the flags' values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTask {
    name: Option<String>,
    batch: Option<String>,
    command: Option<CommandField>,
    shell: Option<String>,
    container: Option<String>,
    container_options: Option<Vec<String>>,
    inputs: Option<Vec<String>>,
    output: Option<String>,
    resources: Option<Vec<String>>,
    retry: Option<u32>,
    priority: Option<i32>,
    /// Run time limit, e.g. "2h".
    timeout: Option<String>,
    depends_on: Option<Vec<i64>>,
}

/// Parses every line of `text`; the first bad line stops everything. `source` names the
/// file in error messages.
pub fn parse(
    text: &str,
    format: FileFormat,
    defaults: &SpecArgs,
    source: &str,
) -> Result<Vec<TaskSpec>, UsageError> {
    let shell = defaults.strict_shell()?;
    let base = TaskSpec {
        shell: shell as i32,
        ..defaults.base()
    };
    let mut specs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let at = |why: String| UsageError(format!("{source} line {}: {why}", index + 1));
        match format {
            FileFormat::Json if line.trim().is_empty() => {}
            FileFormat::Json => specs.push(json_line(line, &base).map_err(at)?),
            FileFormat::Commands if skipped(line) => {}
            FileFormat::Commands => specs.push(TaskSpec {
                command: line.to_owned(),
                ..base.clone()
            }),
        }
    }
    if specs.is_empty() {
        return Err(UsageError(format!("no task in {source}")));
    }
    Ok(specs)
}

fn skipped(line: &str) -> bool {
    let trimmed = line.trim_start();
    trimmed.is_empty() || trimmed.starts_with('#')
}

fn json_line(line: &str, base: &TaskSpec) -> Result<TaskSpec, String> {
    let task: JsonTask = serde_json::from_str(line).map_err(|e| json_error(&e))?;
    let shell = match task.shell.as_deref() {
        None => Shell::try_from(base.shell).unwrap_or(Shell::None),
        Some("none") => Shell::None,
        Some(text) => parse_shell(text)
            .ok_or_else(|| format!("invalid shell {text:?}: expected sh, bash or none"))?,
    };
    let command = match task.command {
        None => return Err("missing \"command\"".into()),
        Some(CommandField::Line(line)) if line.trim().is_empty() => {
            return Err("empty command".into());
        }
        Some(CommandField::Line(line)) => line,
        Some(CommandField::Argv(argv)) => join_command(&argv, shell).map_err(|e| e.0)?,
    };
    Ok(TaskSpec {
        name: task.name.unwrap_or_else(|| base.name.clone()),
        batch: task.batch.unwrap_or_else(|| base.batch.clone()),
        command,
        shell: shell as i32,
        container: task.container.unwrap_or_else(|| base.container.clone()),
        container_options: task
            .container_options
            .unwrap_or_else(|| base.container_options.clone()),
        inputs: task.inputs.unwrap_or_else(|| base.inputs.clone()),
        output: task.output.unwrap_or_else(|| base.output.clone()),
        resources: task.resources.unwrap_or_else(|| base.resources.clone()),
        retry: task.retry.unwrap_or(base.retry),
        priority: task.priority.unwrap_or(base.priority),
        run_timeout_s: match task.timeout.as_deref() {
            Some(text) => crate::spec::parse_timeout(text)?,
            None => base.run_timeout_s,
        },
        depends_on: task.depends_on.unwrap_or_else(|| base.depends_on.clone()),
    })
}

/// serde_json's message without its "at line 1" (every object is on line 1 of itself).
fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("invalid JSON: {message} (column {})", err.column()),
        None => format!("invalid JSON: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> SpecArgs {
        SpecArgs {
            batch: Some("flagbatch".into()),
            retry: Some(1),
            inputs: vec!["s3://in/x".into()],
            ..SpecArgs::default()
        }
    }

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(FileFormat::of(Path::new("a.json")), FileFormat::Json);
        assert_eq!(FileFormat::of(Path::new("dir/a.jsonl")), FileFormat::Json);
        assert_eq!(FileFormat::of(Path::new("a.txt")), FileFormat::Commands);
        assert_eq!(FileFormat::of(Path::new("-")), FileFormat::Commands);
    }

    #[test]
    fn command_lines_skip_comments_and_blanks() {
        let text = "# header\necho 1\n\n   \n  # indented comment\necho 'a b' | wc\r\n";
        let specs = parse(text, FileFormat::Commands, &flags(), "t.txt").unwrap();
        let commands: Vec<_> = specs.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(commands, ["echo 1", "echo 'a b' | wc"]);
        assert!(specs.iter().all(|s| s.batch == "flagbatch" && s.retry == 1));
        assert!(specs.iter().all(|s| s.shell == Shell::None as i32));
    }

    #[test]
    fn command_lines_take_the_shell_flag() {
        let args = SpecArgs {
            shell: Some("bash".into()),
            ..flags()
        };
        let specs = parse("ls | wc\n", FileFormat::Commands, &args, "t").unwrap();
        assert_eq!(specs[0].shell, Shell::Bash as i32);
        let args = SpecArgs {
            shell: Some("zsh".into()),
            ..flags()
        };
        let err = parse("ls\n", FileFormat::Commands, &args, "t").unwrap_err();
        assert_eq!(err.0, "invalid shell \"zsh\": expected sh or bash");
    }

    #[test]
    fn json_lines_override_the_flags() {
        let text = concat!(
            r#"{"command": "echo a", "name": "n1", "shell": "sh", "retry": 3}"#,
            "\n\n",
            r#"{"command": ["echo", "a b"], "batch": "other", "inputs": [], "priority": -5}"#,
            "\n",
            r#"{"command": "x", "container": "alpine", "container_options": ["--rm"], "resources": ["r"], "output": "s3://o/"}"#,
        );
        let specs = parse(text, FileFormat::Json, &flags(), "t.jsonl").unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].name, "n1");
        assert_eq!(specs[0].shell, Shell::Sh as i32);
        assert_eq!(specs[0].retry, 3);
        assert_eq!(specs[0].batch, "flagbatch");
        assert_eq!(specs[0].inputs, ["s3://in/x"]);
        assert_eq!(specs[1].command, "echo 'a b'");
        assert_eq!(specs[1].batch, "other");
        assert!(specs[1].inputs.is_empty());
        assert_eq!(specs[1].priority, -5);
        assert_eq!(specs[1].retry, 1);
        assert_eq!(specs[2].container, "alpine");
        assert_eq!(specs[2].container_options, ["--rm"]);
        assert_eq!(specs[2].output, "s3://o/");
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = "{\"command\": \"ok\"}\n{\"command\": \"ok\", \"colour\": 1}\n";
        let err = parse(text, FileFormat::Json, &flags(), "t.jsonl").unwrap_err();
        assert!(
            err.0
                .starts_with("t.jsonl line 2: invalid JSON: unknown field `colour`"),
            "{}",
            err.0
        );

        let err = parse("{\"name\": \"x\"}\n", FileFormat::Json, &flags(), "f").unwrap_err();
        assert_eq!(err.0, "f line 1: missing \"command\"");

        let err = parse("{\"command\": \"  \"}", FileFormat::Json, &flags(), "f").unwrap_err();
        assert_eq!(err.0, "f line 1: empty command");

        let err = parse("\n\nnot json", FileFormat::Json, &flags(), "f").unwrap_err();
        assert!(err.0.starts_with("f line 3: invalid JSON"), "{}", err.0);

        let text = "{\"command\": \"x\", \"shell\": \"fish\"}";
        let err = parse(text, FileFormat::Json, &flags(), "f").unwrap_err();
        assert!(err.0.contains("invalid shell \"fish\""), "{}", err.0);

        let err = parse(
            "{\"command\": \"x\", \"retry\": -1}",
            FileFormat::Json,
            &flags(),
            "f",
        )
        .unwrap_err();
        assert!(
            err.0.starts_with("f line 1: invalid JSON: invalid value"),
            "{}",
            err.0
        );
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let err = parse("# nothing\n\n", FileFormat::Commands, &flags(), "e.txt").unwrap_err();
        assert_eq!(err.0, "no task in e.txt");
    }
}
