//! The checks of a workflow file made before any I/O: names, dependencies, sample lists,
//! shells, time limits, templates and parameters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use scitq_proto::v1::{CreateRecruiterRequest, Shell};

use crate::commands::workflow::file::{
    FileError, Key, Path, SampleSource, Step, StepFields, WorkflowFile, error_at,
};

use super::{Checked, PlanError, batch_of, merged, render, topological, valid_name};

/// Checks everything that can be checked without the samples: names, dependencies (no
/// cycle), sample lists, shells, time limits, templates, parameters. `overrides` are the
/// `--param name=value` of the command line.
pub fn check(
    file: &str,
    text: &str,
    wf: &WorkflowFile,
    overrides: &[(String, String)],
) -> Result<Checked, FileError> {
    let at = |path: Path, message: String| error_at(file, text, &path, message);
    if !valid_name(&wf.name) {
        return Err(at(
            Path::of([Key::Field("name")]),
            format!(
                "invalid workflow name {:?}: letters, digits, _ and - only",
                wf.name
            ),
        ));
    }
    if wf.steps.is_empty() {
        return Err(at(Path::of([Key::Field("steps")]), "no step given".into()));
    }
    let mut params: BTreeMap<String, String> = wf
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    for (name, value) in overrides {
        if !params.contains_key(name) {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            return Err(FileError {
                file: file.to_owned(),
                line: None,
                message: format!(
                    "--param {name}: the file declares no such parameter (params: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
        params.insert(name.clone(), value.clone());
    }
    for name in params.keys() {
        if RESERVED.contains(&name.as_str()) || name.starts_with("outputs.") {
            return Err(at(
                Path::of([Key::Field("params"), Key::Name(name.clone())]),
                format!("{name:?} is a reserved name: choose another parameter name"),
            ));
        }
    }
    check_fields(&at, Path::default(), &wf.fields())?;
    let mut index_of = HashMap::new();
    for (i, step) in wf.steps.iter().enumerate() {
        if !valid_name(&step.name) {
            return Err(at(
                Path::step(i, "name"),
                format!(
                    "invalid step name {:?}: letters, digits, _ and - only",
                    step.name
                ),
            ));
        }
        if index_of.insert(step.name.as_str(), i).is_some() {
            return Err(at(
                Path::step(i, "name"),
                format!("step {:?} is defined twice", step.name),
            ));
        }
    }
    let mut used_samples = BTreeSet::new();
    for (i, step) in wf.steps.iter().enumerate() {
        let base = Path::of([Key::Field("steps"), Key::Index(i)]);
        check_fields(&at, base, &step.fields())?;
        for (d, dep) in step.depends.iter().enumerate() {
            let path = Path::step(i, "depends").then(Key::Index(d));
            if !index_of.contains_key(dep.as_str()) {
                return Err(at(
                    path,
                    format!("unknown step {dep:?} (steps: {})", names(wf)),
                ));
            }
            if dep == &step.name {
                return Err(at(path, "a step cannot depend on itself".into()));
            }
        }
        if let Some(list) = &step.foreach {
            if !wf.samples.contains_key(list) {
                let known: Vec<&str> = wf.samples.keys().map(String::as_str).collect();
                return Err(at(
                    Path::step(i, "foreach"),
                    format!(
                        "unknown sample list {list:?} (samples: {})",
                        if known.is_empty() {
                            "none declared".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            used_samples.insert(list.clone());
        }
        check_templates(&at, wf, i, &params)?;
        step_rule(wf, i).map_err(|(path, message)| at(path, message))?;
    }
    for (name, source) in &wf.samples {
        let path = Path::of([Key::Field("samples"), Key::Name(name.clone())]);
        let value = match source {
            SampleSource::Ena(p) | SampleSource::Storage(p) => p,
            SampleSource::Inline(_) => continue,
        };
        let filled = render(value, &|v| params.get(v).cloned().ok_or(()))
            .map_err(|e| at(path.clone(), e))?;
        if filled.trim().is_empty() {
            return Err(at(path, "empty project or URI".into()));
        }
    }
    let order = topological(wf).map_err(|cycle| {
        at(
            Path::step(cycle, "depends"),
            format!(
                "step {:?} depends on itself through other steps",
                wf.steps[cycle].name
            ),
        )
    })?;
    Ok(Checked {
        order,
        params,
        used_samples,
    })
}

/// Template names that are not parameters.
const RESERVED: [&str; 5] = ["workflow", "step", "sample", "uris", "outputs"];

fn names(wf: &WorkflowFile) -> String {
    let names: Vec<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
    names.join(", ")
}

fn check_fields(
    at: &impl Fn(Path, String) -> FileError,
    base: Path,
    fields: &StepFields,
) -> Result<(), FileError> {
    if let Some(shell) = &fields.shell
        && parse_shell(shell).is_none()
    {
        return Err(at(
            base.then(Key::Field("shell")),
            format!("invalid shell {shell:?}: expected none, sh or bash"),
        ));
    }
    if let Some(timeout) = &fields.timeout {
        crate::spec::parse_timeout(timeout).map_err(|e| at(base.then(Key::Field("timeout")), e))?;
    }
    Ok(())
}

pub(super) fn parse_shell(text: &str) -> Option<Shell> {
    match text {
        "none" => Some(Shell::None),
        other => crate::spec::parse_shell(other),
    }
}

/// The recruiter rule of step `i` (its `recruit` keys over the workflow's), or the key and
/// why not: the step's `recruit` when it has one, else the workflow's.
pub(super) fn step_rule(
    wf: &WorkflowFile,
    i: usize,
) -> Result<Option<CreateRecruiterRequest>, PlanError> {
    let step = &wf.steps[i];
    let Some(keys) =
        crate::commands::workflow::recruit::merge(wf.recruit.as_ref(), step.recruit.as_ref())
    else {
        return Ok(None);
    };
    crate::commands::workflow::recruit::rule(&batch_of(&wf.name, &step.name), &keys)
        .map(Some)
        .map_err(|message| match step.recruit {
            Some(_) => (Path::step(i, "recruit"), message),
            None => (
                Path::of([Key::Field("recruit")]),
                format!("for step {}: {message}", step.name),
            ),
        })
}

/// Every template of a step, filled with placeholder values to check its names.
fn check_templates(
    at: &impl Fn(Path, String) -> FileError,
    wf: &WorkflowFile,
    i: usize,
    params: &BTreeMap<String, String>,
) -> Result<(), FileError> {
    let step = &wf.steps[i];
    let fields = merged(&wf.fields(), &step.fields());
    let foreach = step.foreach.is_some();
    let lookup = |name: &str| -> Result<String, String> {
        variable(name, params, step, foreach).map(|_| String::new())
    };
    let check = |path: Path, template: &str| -> Result<(), FileError> {
        render(template, &|v| lookup(v).map_err(|_| ())).map_err(|_| {
            let bad = names_in(template)
                .into_iter()
                .find_map(|n| lookup(&n).err())
                .unwrap_or_else(|| "unclosed {{ in template".to_owned());
            at(path, bad)
        })?;
        Ok(())
    };
    check(Path::step(i, "command"), &step.command)?;
    let own = |field: &'static str, set: bool| {
        if set {
            Path::step(i, field)
        } else {
            Path::of([Key::Field(field)])
        }
    };
    if let Some(output) = &fields.output {
        check(own("output", step.output.is_some()), output)?;
    }
    for (field, list, set) in [
        ("input", &fields.input, step.input.is_some()),
        ("resource", &fields.resource, step.resource.is_some()),
    ] {
        let Some(list) = list else { continue };
        for (n, item) in list.items().iter().enumerate() {
            let path = own(field, set).then(Key::Index(n));
            if let Some(source) = list_item(item) {
                check_list_item(wf, step, &source).map_err(|e| at(path.clone(), e))?;
                continue;
            }
            check(path, item)?;
        }
    }
    if let Some(image) = &fields.container {
        check(own("container", step.container.is_some()), image)?;
    }
    Ok(())
}

/// What a template name stands for, or why it is not known here.
fn variable(
    name: &str,
    params: &BTreeMap<String, String>,
    step: &Step,
    foreach: bool,
) -> Result<(), String> {
    match name {
        "workflow" | "step" => Ok(()),
        "sample" | "uris" if foreach => Ok(()),
        "sample" | "uris" => Err(format!(
            "{{{{ {name} }}}} is known only in a step with foreach"
        )),
        _ if name.starts_with("outputs.") => Err(format!(
            "{{{{ {name} }}}} stands alone as an item of input or resource"
        )),
        _ if params.contains_key(name) => Ok(()),
        _ => {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            let _ = step;
            Err(format!(
                "unknown variable {{{{ {name} }}}} (params: {}; and workflow, step{})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
                if foreach { ", sample, uris" } else { "" }
            ))
        }
    }
}

/// A list item that stands for many URIs.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ListItem {
    /// `{{ uris }}`: the sample's URIs.
    Uris,
    /// `{{ outputs.STEP }}`: the outputs of the tasks of STEP this task waits for.
    Outputs(String),
}

pub(super) fn list_item(item: &str) -> Option<ListItem> {
    let inner = item.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    if inner == "uris" {
        return Some(ListItem::Uris);
    }
    inner
        .strip_prefix("outputs.")
        .map(|s| ListItem::Outputs(s.to_owned()))
}

fn check_list_item(wf: &WorkflowFile, step: &Step, item: &ListItem) -> Result<(), String> {
    match item {
        ListItem::Uris if step.foreach.is_some() => Ok(()),
        ListItem::Uris => Err("{{ uris }} is known only in a step with foreach".into()),
        ListItem::Outputs(name) => {
            if !step.depends.iter().any(|d| d == name) {
                return Err(format!(
                    "{{{{ outputs.{name} }}}} needs step {name:?} in this step's depends"
                ));
            }
            let Some(dep) = wf.steps.iter().find(|s| &s.name == name) else {
                return Err(format!("unknown step {name:?}"));
            };
            if merged(&wf.fields(), &dep.fields()).output.is_none() {
                return Err(format!("step {name:?} has no output"));
            }
            Ok(())
        }
    }
}

/// The names used in a template.
fn names_in(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    out
}
