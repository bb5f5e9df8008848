//! Task specs: what a client submits ([`TaskSpec`], decoded from the wire at the edge) and
//! what the server accepts ([`NewTask`], validated once, with an error naming the bad field).

/// Largest accepted command, in bytes. Commands are scripts, not data.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;
/// Largest accepted name, batch, URI or option.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Largest accepted retry budget.
pub const MAX_RETRY: u32 = 1000;
/// Most dependencies of one task.
pub const MAX_DEPENDENCIES: usize = 10_000;
/// Longest accepted run time limit: a year.
pub const MAX_RUN_TIMEOUT_S: u32 = 366 * 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("task {index}: command is empty")]
    EmptyCommand { index: usize },
    #[error("task {index}: command is {size} bytes, the limit is {MAX_COMMAND_BYTES}")]
    CommandTooLong { index: usize, size: usize },
    #[error("task {index}: {field} is {size} bytes, the limit is {MAX_FIELD_BYTES}")]
    FieldTooLong {
        index: usize,
        field: &'static str,
        size: usize,
    },
    #[error("task {index}: batch name {name:?} has control characters")]
    BadBatch { index: usize, name: String },
    #[error("task {index}: retry {value} is over the limit of {MAX_RETRY}")]
    RetryTooHigh { index: usize, value: u32 },
    #[error("task {index}: {count} dependencies, the limit is {MAX_DEPENDENCIES}")]
    TooManyDependencies { index: usize, count: usize },
    #[error("task {index}: dependency {id} is not a task id")]
    BadDependency { index: usize, id: i64 },
    #[error("task {index}: run timeout {value}s is over the limit of {MAX_RUN_TIMEOUT_S}s")]
    TimeoutTooLong { index: usize, value: u32 },
    #[error("task {index}: {source}")]
    ContainerOption {
        index: usize,
        source: scitq_proto::container::OptionError,
    },
    #[error("task {index}: container options given without a container image")]
    OptionsWithoutContainer { index: usize },
    #[error("task {index}: {field}: {message}")]
    BadUri {
        index: usize,
        field: &'static str,
        message: String,
    },
    #[error("task {index}: invalid container image {image:?}: {reason}")]
    BadImage {
        index: usize,
        image: String,
        reason: &'static str,
    },
}

/// Checks an image reference enough to refuse what Docker never accepts (the daemon has the
/// last word on the rest).
pub fn check_image(image: &str) -> Result<(), &'static str> {
    if image.is_empty() {
        return Ok(());
    }
    if image.trim() != image || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("spaces and control characters are not allowed");
    }
    if image.starts_with('-') {
        return Err("must not start with -");
    }
    Ok(())
}

/// Checks storage URIs and their actions as the agent will read them, without touching any
/// storage: a malformed URI, an unknown scheme or action, a `..`, or a remote that is not in
/// scitqd's rclone config (the one agents get) is refused at create rather than when run.
pub struct UriCheck {
    storage: scitq_storage::Storage,
    /// The remotes of scitqd's rclone config, named when a URI names another one.
    remotes: Vec<String>,
}

impl UriCheck {
    pub fn new(rclone_config: &str) -> UriCheck {
        let remotes = scitq_storage::Remotes::parse(rclone_config)
            .unwrap_or_else(|_| scitq_storage::Remotes::empty());
        // Credentials come from the agent's environment, not scitqd's: only the syntax counts
        // here (an `azure://` URI needs an account name to parse at all).
        let env = scitq_storage::EnvDefaults {
            azure_account: Some("account".to_owned()),
            ..Default::default()
        };
        UriCheck {
            remotes: remotes.names().map(str::to_owned).collect(),
            storage: scitq_storage::Storage::with_env(remotes, env),
        }
    }

    /// What to add to an unknown remote's error: the remotes there are.
    fn known_remotes(&self) -> String {
        if self.remotes.is_empty() {
            "scitqd has no rclone remote: see its --rclone-config".to_owned()
        } else {
            format!("scitqd's rclone remotes: {}", self.remotes.join(", "))
        }
    }

    /// Checks the URIs an edit would set, as creation does; the error names the field and
    /// the bad part.
    pub fn check_edit(
        &self,
        inputs: Option<&[String]>,
        output: Option<&str>,
        resources: Option<&[String]>,
    ) -> Result<(), String> {
        let in_edit = |e: SpecError| e.to_string().replacen("task 0: ", "", 1);
        for input in inputs.into_iter().flatten() {
            self.check(0, "input", input, true).map_err(in_edit)?;
        }
        for resource in resources.into_iter().flatten() {
            self.check(0, "resource", resource, true).map_err(in_edit)?;
        }
        if let Some(output) = output.filter(|o| !o.is_empty()) {
            self.check(0, "output", output, false).map_err(in_edit)?;
        }
        Ok(())
    }

    fn check(
        &self,
        index: usize,
        field: &'static str,
        uri: &str,
        actions: bool,
    ) -> Result<(), SpecError> {
        let checked = if actions {
            self.storage.parse(uri).map(|_| ())
        } else {
            self.storage.location(uri).map(|_| ())
        };
        checked.map_err(|e| {
            let message = match e {
                scitq_storage::StorageError::UnknownRemote { .. } => {
                    format!("{e} ({})", self.known_remotes())
                }
                scitq_storage::StorageError::UnknownScheme { ref scheme, .. } => {
                    format!(
                        "{e}, and no rclone remote {scheme} ({})",
                        self.known_remotes()
                    )
                }
                e => e.to_string(),
            };
            SpecError::BadUri {
                index,
                field,
                message,
            }
        })
    }
}

/// How a command is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shell {
    /// Split into argv with POSIX shell quoting rules and run directly.
    #[default]
    None,
    /// `sh -c COMMAND`.
    Sh,
    /// `bash -c COMMAND`.
    Bash,
}

impl Shell {
    /// As stored (the wire's numbering, kept so existing rows read the same).
    pub fn as_i32(self) -> i32 {
        match self {
            Shell::None => 0,
            Shell::Sh => 1,
            Shell::Bash => 2,
        }
    }

    /// From a stored value; `None` for a value this server never writes.
    pub fn from_i32(value: i32) -> Option<Shell> {
        match value {
            0 => Some(Shell::None),
            1 => Some(Shell::Sh),
            2 => Some(Shell::Bash),
            _ => None,
        }
    }
}

/// A task as a client describes it, decoded but not yet checked; also the spec a stored
/// task shows (its dependencies filled by whoever shows it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: String,
    /// Empty means the default batch.
    pub batch: String,
    pub command: String,
    pub shell: Shell,
    pub container: String,
    pub container_options: Vec<String>,
    pub inputs: Vec<String>,
    pub output: String,
    pub resources: Vec<String>,
    pub retry: u32,
    pub priority: i32,
    /// Seconds the command may run; 0: no limit.
    pub run_timeout_s: u32,
    pub depends_on: Vec<i64>,
}

/// A task as submitted, validated: a [`TaskSpec`] within the limits, its batch named (the
/// default one for none), its dependencies sorted and deduplicated. Only
/// [`NewTask::validate`] makes one; its fields are read through the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask(TaskSpec);

impl std::ops::Deref for NewTask {
    type Target = TaskSpec;

    fn deref(&self) -> &TaskSpec {
        &self.0
    }
}

fn check_len(index: usize, field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(SpecError::FieldTooLong {
            index,
            field,
            size: value.len(),
        });
    }
    Ok(())
}

pub fn validate_batch_name(index: usize, name: &str) -> Result<String, SpecError> {
    let name = name.trim();
    let name = if name.is_empty() {
        scitq_proto::DEFAULT_BATCH
    } else {
        name
    };
    check_len(index, "batch", name)?;
    if name.chars().any(char::is_control) {
        return Err(SpecError::BadBatch {
            index,
            name: name.to_owned(),
        });
    }
    Ok(name.to_owned())
}

impl NewTask {
    /// Checks the inputs, resources (both may carry `|actions`) and output URI.
    pub fn check_uris(&self, index: usize, uris: &UriCheck) -> Result<(), SpecError> {
        for input in &self.inputs {
            uris.check(index, "input", input, true)?;
        }
        for resource in &self.resources {
            uris.check(index, "resource", resource, true)?;
        }
        if !self.output.is_empty() {
            uris.check(index, "output", &self.output, false)?;
        }
        Ok(())
    }

    /// Validates the `index`-th spec of a request.
    pub fn validate(index: usize, spec: TaskSpec) -> Result<Self, SpecError> {
        if spec.command.trim().is_empty() {
            return Err(SpecError::EmptyCommand { index });
        }
        if spec.command.len() > MAX_COMMAND_BYTES {
            return Err(SpecError::CommandTooLong {
                index,
                size: spec.command.len(),
            });
        }
        if spec.retry > MAX_RETRY {
            return Err(SpecError::RetryTooHigh {
                index,
                value: spec.retry,
            });
        }
        if spec.run_timeout_s > MAX_RUN_TIMEOUT_S {
            return Err(SpecError::TimeoutTooLong {
                index,
                value: spec.run_timeout_s,
            });
        }
        if spec.depends_on.len() > MAX_DEPENDENCIES {
            return Err(SpecError::TooManyDependencies {
                index,
                count: spec.depends_on.len(),
            });
        }
        if let Some(bad) = spec.depends_on.iter().find(|id| **id <= 0) {
            return Err(SpecError::BadDependency { index, id: *bad });
        }
        check_image(&spec.container).map_err(|reason| SpecError::BadImage {
            index,
            image: spec.container.clone(),
            reason,
        })?;
        if spec.container.is_empty() && !spec.container_options.is_empty() {
            return Err(SpecError::OptionsWithoutContainer { index });
        }
        scitq_proto::container::ContainerOptions::parse(&spec.container_options)
            .map_err(|source| SpecError::ContainerOption { index, source })?;
        check_len(index, "name", &spec.name)?;
        check_len(index, "container", &spec.container)?;
        check_len(index, "output", &spec.output)?;
        for value in spec
            .container_options
            .iter()
            .chain(&spec.inputs)
            .chain(&spec.resources)
        {
            check_len(index, "uri or option", value)?;
        }
        let batch = validate_batch_name(index, &spec.batch)?;
        let mut depends_on = spec.depends_on;
        depends_on.sort_unstable();
        depends_on.dedup();
        Ok(NewTask(TaskSpec {
            batch,
            depends_on,
            ..spec
        }))
    }

    /// The validated spec, to store.
    pub fn into_spec(self) -> TaskSpec {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> TaskSpec {
        TaskSpec {
            command: command.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_the_batch_and_keeps_the_command() {
        let task = NewTask::validate(0, spec("echo hi")).unwrap();
        assert_eq!(task.batch, "Default");
        assert_eq!(task.command, "echo hi");
    }

    #[test]
    fn rejects_bad_specs_naming_the_problem() {
        assert_eq!(
            NewTask::validate(3, spec("  ")),
            Err(SpecError::EmptyCommand { index: 3 })
        );
        let huge = "x".repeat(10 << 20);
        let err = NewTask::validate(0, spec(&huge)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task 0: command is 10485760 bytes, the limit is 1048576"
        );
        let mut privileged = spec("true");
        privileged.container = "busybox".into();
        privileged.container_options = vec!["--privileged".into()];
        let err = NewTask::validate(2, privileged).unwrap_err().to_string();
        assert!(
            err.starts_with("task 2: container option \"--privileged\" is not allowed"),
            "{err}"
        );
        let mut orphan = spec("true");
        orphan.container_options = vec!["--gpus all".into()];
        assert_eq!(
            NewTask::validate(0, orphan),
            Err(SpecError::OptionsWithoutContainer { index: 0 })
        );
        let mut bad_batch = spec("true");
        bad_batch.batch = "a\nb".into();
        assert!(matches!(
            NewTask::validate(0, bad_batch),
            Err(SpecError::BadBatch { .. })
        ));
    }

    #[test]
    fn bad_uris_and_actions_are_refused_naming_them() {
        let uris = UriCheck::new("[lab]\ntype = s3\nendpoint = http://127.0.0.1:9000\n");
        let with = |field: &str, uri: &str| {
            let mut task = NewTask::validate(0, spec("true")).unwrap();
            match field {
                "input" => task.0.inputs = vec![uri.to_owned()],
                "resource" => task.0.resources = vec![uri.to_owned()],
                _ => task.0.output = uri.to_owned(),
            }
            task.check_uris(4, &uris).map_err(|e| e.to_string())
        };
        for (field, uri, part) in [
            ("input", "file:///some/dir/../data.txt", ".."),
            ("input", "s3://", "bucket"),
            ("input", "ftp://", "host"),
            ("input", "nosuch://x", "nosuch"),
            ("input", "s3://b/x|frobnicate", "frobnicate"),
            ("input", "s3://b/x|mv:../../x", "mv:../../x"),
            ("resource", "other:refs/x", "other"),
            ("output", "s3://b/out/../../x/", ".."),
            ("output", "s3://b/out/|gunzip", "gunzip"),
        ] {
            let err = with(field, uri).unwrap_err();
            assert!(
                err.starts_with(&format!("task 4: {field}: ")) && err.contains(part),
                "{field} {uri}: {err}"
            );
        }
        for (field, uri) in [
            ("input", "s3://b/x.tar.gz|untar|mv:ref"),
            ("resource", "lab:refs/hg38/"),
            ("input", "azure://container/blob"),
            ("output", "lab://bucket/out/"),
            ("input", "run+fastq://SRR000001"),
        ] {
            assert_eq!(with(field, uri), Ok(()), "{field} {uri}");
        }
    }

    #[test]
    fn an_unknown_remote_is_named_with_the_known_ones() {
        let uris = UriCheck::new("[lab]\ntype = s3\n\n[s3]\ntype = s3\n");
        let mut task = NewTask::validate(0, spec("true")).unwrap();
        task.0.inputs = vec!["nosuch:path".to_owned()];
        assert_eq!(
            task.check_uris(0, &uris).unwrap_err().to_string(),
            "task 0: input: invalid uri \"nosuch:path\": unknown rclone remote nosuch \
             (scitqd's rclone remotes: lab, s3)"
        );
        task.0.inputs.clear();
        task.0.output = "nosuch://x".to_owned();
        assert_eq!(
            task.check_uris(0, &uris).unwrap_err().to_string(),
            "task 0: output: invalid uri \"nosuch://x\": unknown scheme nosuch, and no rclone \
             remote nosuch (scitqd's rclone remotes: lab, s3)"
        );
        let none = UriCheck::new("");
        assert!(
            task.check_uris(0, &none)
                .unwrap_err()
                .to_string()
                .ends_with("(scitqd has no rclone remote: see its --rclone-config)"),
        );
    }
}
