//! The workflow file (`scitqctl workflow run FILE.yaml`): its format, read with serde_yaml,
//! and errors that name the line and the key at fault.
//!
//! serde_yaml reports a structural mistake (unknown key, wrong type, missing field) with its
//! path and line. A mistake found afterwards (a step that does not exist, an unknown
//! template variable) has only its path: [`locate`] walks the document again along that
//! path and fails on purpose at the node, so that serde_yaml says on which line it is.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Declares a struct with the task fields every step may set (and the workflow, for all its
/// steps), plus its own fields, and `fields()`, which gives the task fields alone (a
/// [`StepFields`]). Written out in each rather than `#[serde(flatten)]`, which cannot refuse
/// unknown keys. `plain struct` declares the struct alone: `StepFields` itself.
macro_rules! with_task_fields {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        with_task_fields! { plain $(#[$meta])* pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* } }

        impl $name {
            /// The task fields alone.
            pub fn fields(&self) -> StepFields {
                StepFields {
                    shell: self.shell.clone(),
                    container: self.container.clone(),
                    container_options: self.container_options.clone(),
                    input: self.input.clone(),
                    output: self.output.clone(),
                    resource: self.resource.clone(),
                    retry: self.retry,
                    priority: self.priority,
                    timeout: self.timeout.clone(),
                }
            }
        }
    };
    (plain $(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// `none` (split like a shell, run directly), `sh` or `bash`.
            pub shell: Option<String>,
            pub container: Option<String>,
            pub container_options: Option<Vec<String>>,
            pub input: Option<Uris>,
            pub output: Option<String>,
            pub resource: Option<Uris>,
            pub retry: Option<u32>,
            pub priority: Option<i32>,
            /// A run time limit such as `90s` or `2h`.
            pub timeout: Option<String>,
        }
    };
}

with_task_fields! {
    /// A workflow file as written.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct WorkflowFile {
        /// The workflow's name; its steps' batches are `NAME.STEP`.
        pub name: String,
        /// Values for `{{ name }}` in templates; `--param name=value` replaces one.
        #[serde(default)]
        pub params: BTreeMap<String, Scalar>,
        /// Named lists of samples that steps iterate over (`foreach`).
        #[serde(default)]
        pub samples: BTreeMap<String, SampleSource>,
        pub steps: Vec<Step>,
        /// Worker recruitment for every step (a step's `recruit` keys win one by one).
        pub recruit: Option<Recruit>,
    }
}

/// A parameter value: any YAML scalar, used as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Where a list of samples comes from; each sample has a name and URIs. Written as a map with
/// one key (`inline:`, `ena:` or `storage:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "SourceKeys")]
pub enum SampleSource {
    /// Written out: a list of names, or names with their URIs.
    Inline(InlineSamples),
    /// A sequencing project on ENA (as `scitqctl samples`): each sample's runs as
    /// `run+fastq://RUN`.
    Ena(String),
    /// A storage folder: one sample per file name up to its first `.`, with its files.
    Storage(String),
}

/// A sample list as written: exactly one of its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceKeys {
    inline: Option<InlineSamples>,
    ena: Option<String>,
    storage: Option<String>,
}

impl TryFrom<SourceKeys> for SampleSource {
    type Error = String;

    fn try_from(keys: SourceKeys) -> Result<SampleSource, String> {
        match (keys.inline, keys.ena, keys.storage) {
            (Some(inline), None, None) => Ok(SampleSource::Inline(inline)),
            (None, Some(project), None) => Ok(SampleSource::Ena(project)),
            (None, None, Some(uri)) => Ok(SampleSource::Storage(uri)),
            _ => Err("a sample list has exactly one of inline, ena or storage".to_owned()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InlineSamples {
    Names(Vec<String>),
    WithUris(BTreeMap<String, Vec<String>>),
}

/// `recruit:` as written (see [`super::recruit`] for what is required once merged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recruit {
    /// A provider configured in scitqd (`[[provider]] name`).
    pub provider: Option<String>,
    pub region: Option<String>,
    /// A flavor by name; or the minimums below (the cheapest flavor that has them).
    pub flavor: Option<String>,
    pub min_cpu: Option<u32>,
    /// GiB.
    pub min_mem: Option<u32>,
    /// GiB.
    pub min_disk: Option<u32>,
    pub gpu: Option<u32>,
    /// Most machines at once for the step.
    pub max_workers: Option<u32>,
    /// Tasks a machine runs at once.
    pub concurrency: Option<u32>,
    /// Rounds of `concurrency` tasks that make another machine worth renting.
    pub rounds: Option<u32>,
    pub prefetch: Option<u32>,
    /// A machine idle this long with nothing waiting is destroyed, such as `5m`.
    pub idle_timeout: Option<String>,
}

/// A list of URIs: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Uris {
    One(String),
    Many(Vec<String>),
}

impl Uris {
    pub fn items(&self) -> Vec<String> {
        match self {
            Uris::One(s) => vec![s.clone()],
            Uris::Many(v) => v.clone(),
        }
    }
}

with_task_fields! {
    plain
    /// Task fields a step sets, or the workflow sets for all of its steps.
    #[derive(Debug, Default, Clone)]
    pub struct StepFields {}
}

with_task_fields! {
    /// One step: a command template, run once or once per sample of a list.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Step {
        pub name: String,
        pub command: String,
        /// The sample list (a key of `samples`) to run the step once per sample of.
        pub foreach: Option<String>,
        /// Steps (by name) whose tasks must succeed first.
        #[serde(default)]
        pub depends: Vec<String>,
        /// Worker recruitment: a recruiter rule for the step's batch.
        pub recruit: Option<Recruit>,
    }
}

/// One segment of a path in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Field(&'static str),
    Index(usize),
    /// A map key chosen by the user (a sample list's name, a parameter).
    Name(String),
}

/// A path in the document, such as `steps[2].depends[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Key>);

impl Path {
    pub fn of(keys: impl IntoIterator<Item = Key>) -> Path {
        Path(keys.into_iter().collect())
    }

    pub fn step(index: usize, field: &'static str) -> Path {
        Path::of([Key::Field("steps"), Key::Index(index), Key::Field(field)])
    }

    pub fn then(&self, key: Key) -> Path {
        let mut keys = self.0.clone();
        keys.push(key);
        Path(keys)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            match key {
                Key::Field(name) if i == 0 => f.write_str(name)?,
                Key::Field(name) => write!(f, ".{name}")?,
                Key::Name(name) if i == 0 => f.write_str(name)?,
                Key::Name(name) => write!(f, ".{name}")?,
                Key::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A mistake in a workflow file: where (line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// Reads a workflow file's text.
pub fn parse(file: &str, text: &str) -> Result<WorkflowFile, FileError> {
    serde_yaml::from_str(text).map_err(|err| {
        let line = err.location().map(|l| l.line());
        // serde_yaml ends its message with " at line L column C": the line is said first.
        let message = err.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        FileError {
            file: file.to_owned(),
            line,
            message,
        }
    })
}

/// An error at `path`, with the line of that node in `text` when it can be found.
pub fn error_at(file: &str, text: &str, path: &Path, message: impl fmt::Display) -> FileError {
    FileError {
        file: file.to_owned(),
        line: locate(text, path),
        message: format!("{path}: {message}"),
    }
}

/// The line of the node at `path`.
pub fn locate(text: &str, path: &Path) -> Option<usize> {
    let de = serde_yaml::Deserializer::from_str(text);
    match (Seek { path: &path.0 }).deserialize(de) {
        Ok(()) => None,
        Err(err) if err.to_string().contains(HERE) => err.location().map(|l| l.line()),
        Err(_) => None,
    }
}

const HERE: &str = "scitq-locate-here";

/// Walks down to the node at `path` and fails there.
struct Seek<'p> {
    path: &'p [Key],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        while let Some(key) = map.next_key::<String>()? {
            let wanted = match first {
                Key::Field(name) => key == *name,
                Key::Name(name) => key == *name,
                Key::Index(_) => false,
            };
            if wanted {
                return map.next_value_seed(Seek { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        let Key::Index(wanted) = first else {
            return Ok(());
        };
        let mut index = 0;
        while index < *wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
        seq.next_element_seed(Seek { path: rest })?;
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
}

impl Seek<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(HERE))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: demo
params:
  out: file:///tmp/x
steps:
  - name: a
    command: echo a
  - name: b
    command: echo b
    depends:
      - a
      - zz
";

    #[test]
    fn a_node_is_found_by_its_path() {
        let path = Path::step(1, "depends").then(Key::Index(1));
        assert_eq!(path.to_string(), "steps[1].depends[1]");
        assert_eq!(locate(TEXT, &path), Some(11));
        assert_eq!(locate(TEXT, &Path::step(1, "command")), Some(8));
        assert_eq!(
            locate(
                TEXT,
                &Path::of([Key::Field("params"), Key::Name("out".into())])
            ),
            Some(3)
        );
        assert_eq!(locate(TEXT, &Path::step(5, "command")), None);
    }

    #[test]
    fn structural_mistakes_name_the_line_and_the_key() {
        let text = TEXT.replace("    command: echo b", "    comand: echo b");
        let err = parse("wf.yaml", &text).unwrap_err();
        assert_eq!(err.line, Some(8), "{err}");
        assert!(
            err.message.starts_with("steps[1]: unknown field `comand`"),
            "{err}"
        );
        let text = TEXT.replace("    depends:\n      - a\n      - zz\n", "    retry: many\n");
        let err = parse("wf.yaml", &text).unwrap_err();
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.message.contains("retry"), "{err}");
    }
}
