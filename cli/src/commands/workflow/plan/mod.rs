//! From a workflow file to the tasks it makes: checks (before any I/O), then the expansion of
//! each step over its samples, templates filled in, dependencies between tasks. No network
//! here: the samples are resolved by the caller between [`check`] (in `check.rs`) and
//! [`expand`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use scitq_proto::v1::{CreateRecruiterRequest, Shell, TaskSpec};

use super::file::{FileError, Key, Path, StepFields, WorkflowFile, error_at};

mod check;

pub use check::check;
use check::{ListItem, list_item, parse_shell, step_rule};

/// One sample of a list: a name and its URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub uris: Vec<String>,
}

/// A checked workflow: the order to create its steps in and the parameters in force.
#[derive(Debug)]
pub struct Checked {
    /// Step indexes, each after the steps it depends on.
    pub order: Vec<usize>,
    pub params: BTreeMap<String, String>,
    /// The sample lists some step iterates over (only those are resolved).
    pub used_samples: BTreeSet<String>,
}

/// A task to create: its spec (without dependency ids) and the tasks it waits for.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub sample: Option<String>,
    pub spec: TaskSpec,
    /// (step index, task index in that step).
    pub depends: Vec<(usize, usize)>,
}

/// The tasks of one step.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub index: usize,
    pub name: String,
    pub batch: String,
    pub tasks: Vec<PlannedTask>,
    /// The recruiter rule of its batch, from `recruit`.
    pub recruit: Option<CreateRecruiterRequest>,
}

/// Names of workflows and steps: they make batch names, so kept plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// The batch of a step.
pub fn batch_of(workflow: &str, step: &str) -> String {
    format!("{workflow}.{step}")
}

/// Fills `{{ name }}` in a template.
pub fn render(
    template: &str,
    lookup: &dyn Fn(&str) -> Result<String, ()>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unclosed {{ in template".into());
        };
        let name = after[..end].trim();
        let value = lookup(name).map_err(|()| format!("unknown variable {{{{ {name} }}}}"))?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A step's fields over the workflow's defaults.
fn merged(defaults: &StepFields, own: &StepFields) -> StepFields {
    StepFields {
        shell: own.shell.clone().or_else(|| defaults.shell.clone()),
        container: own.container.clone().or_else(|| defaults.container.clone()),
        container_options: own
            .container_options
            .clone()
            .or_else(|| defaults.container_options.clone()),
        input: own.input.clone().or_else(|| defaults.input.clone()),
        output: own.output.clone().or_else(|| defaults.output.clone()),
        resource: own.resource.clone().or_else(|| defaults.resource.clone()),
        retry: own.retry.or(defaults.retry),
        priority: own.priority.or(defaults.priority),
        timeout: own.timeout.clone().or_else(|| defaults.timeout.clone()),
    }
}

/// Steps in an order where each comes after those it depends on; `Err(step)` names a step
/// in a cycle.
fn topological(wf: &WorkflowFile) -> Result<Vec<usize>, usize> {
    let index: HashMap<&str, usize> = wf
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; wf.steps.len()];
    let mut order = Vec::with_capacity(wf.steps.len());
    fn visit(
        i: usize,
        wf: &WorkflowFile,
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<(), usize> {
        match state[i] {
            2 => return Ok(()),
            1 => return Err(i),
            _ => {}
        }
        state[i] = 1;
        for dep in &wf.steps[i].depends {
            visit(index[dep.as_str()], wf, index, state, order)?;
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..wf.steps.len() {
        visit(i, wf, &index, &mut state, &mut order)?;
    }
    Ok(order)
}

/// The tasks of every step, in creation order. `samples` holds every list of
/// [`Checked::used_samples`].
pub fn expand(
    file: &str,
    text: &str,
    wf: &WorkflowFile,
    checked: &Checked,
    samples: &BTreeMap<String, Vec<Sample>>,
) -> Result<Vec<PlannedStep>, FileError> {
    let defaults = wf.fields();
    let mut planned: Vec<Option<PlannedStep>> = vec![None; wf.steps.len()];
    for &i in &checked.order {
        let step = &wf.steps[i];
        let fields = merged(&defaults, &step.fields());
        let runs: Vec<Option<&Sample>> = match &step.foreach {
            Some(list) => samples
                .get(list)
                .map(|s| s.iter().map(Some).collect())
                .unwrap_or_default(),
            None => vec![None],
        };
        if runs.is_empty() {
            return Err(error_at(
                file,
                text,
                &Path::step(i, "foreach"),
                format!(
                    "sample list {:?} is empty: the step would make no task",
                    step.foreach.as_deref().unwrap_or_default()
                ),
            ));
        }
        let mut tasks = Vec::with_capacity(runs.len());
        for sample in runs {
            let task = plan_task(wf, checked, i, &fields, sample, &planned)
                .map_err(|(path, message)| error_at(file, text, &path, message))?;
            tasks.push(task);
        }
        let recruit = step_rule(wf, i).map_err(|(path, m)| error_at(file, text, &path, m))?;
        planned[i] = Some(PlannedStep {
            index: i,
            name: step.name.clone(),
            batch: batch_of(&wf.name, &step.name),
            tasks,
            recruit,
        });
    }
    Ok(checked
        .order
        .iter()
        .map(|&i| planned[i].clone().expect("every step planned in order"))
        .collect())
}

type PlanError = (Path, String);

fn plan_task(
    wf: &WorkflowFile,
    checked: &Checked,
    i: usize,
    fields: &StepFields,
    sample: Option<&Sample>,
    planned: &[Option<PlannedStep>],
) -> Result<PlannedTask, PlanError> {
    let step = &wf.steps[i];
    let lookup = |name: &str| -> Result<String, ()> {
        match (name, sample) {
            ("workflow", _) => Ok(wf.name.clone()),
            ("step", _) => Ok(step.name.clone()),
            ("sample", Some(s)) => Ok(s.name.clone()),
            ("uris", Some(s)) => Ok(s.uris.join(" ")),
            _ => checked.params.get(name).cloned().ok_or(()),
        }
    };
    let fill = |path: Path, template: &str| render(template, &lookup).map_err(|e| (path, e));
    // The tasks of each step this one waits for: the same sample's when both iterate over
    // the same list, else all of them (a fan-in).
    let mut depends = Vec::new();
    let mut outputs: HashMap<&str, Vec<String>> = HashMap::new();
    for dep_name in &step.depends {
        let dep_index = wf
            .steps
            .iter()
            .position(|s| &s.name == dep_name)
            .expect("checked");
        let dep = planned[dep_index].as_ref().expect("planned before");
        let same_list = step.foreach.is_some() && wf.steps[dep_index].foreach == step.foreach;
        for (t, task) in dep.tasks.iter().enumerate() {
            let matches = match (same_list, sample) {
                (true, Some(s)) => task.sample.as_deref() == Some(s.name.as_str()),
                _ => true,
            };
            if matches {
                depends.push((dep_index, t));
                outputs
                    .entry(dep_name.as_str())
                    .or_default()
                    .push(task.spec.output.clone());
            }
        }
    }
    let own = |field: &'static str, set: bool| {
        if set {
            Path::step(i, field)
        } else {
            Path::of([Key::Field(field)])
        }
    };
    let list = |field: &'static str,
                uris: &Option<super::file::Uris>,
                set: bool|
     -> Result<Vec<String>, PlanError> {
        let mut out = Vec::new();
        let Some(uris) = uris else { return Ok(out) };
        for (n, item) in uris.items().iter().enumerate() {
            match list_item(item) {
                Some(ListItem::Uris) => {
                    out.extend(sample.map(|s| s.uris.clone()).unwrap_or_default())
                }
                Some(ListItem::Outputs(name)) => {
                    out.extend(outputs.get(name.as_str()).cloned().unwrap_or_default())
                }
                None => out.push(fill(own(field, set).then(Key::Index(n)), item)?),
            }
        }
        Ok(out)
    };
    let inputs = list("input", &fields.input, step.input.is_some())?;
    let resources = list("resource", &fields.resource, step.resource.is_some())?;
    let output = match &fields.output {
        Some(o) => fill(own("output", step.output.is_some()), o)?,
        None => String::new(),
    };
    let container = match &fields.container {
        Some(c) => fill(own("container", step.container.is_some()), c)?,
        None => String::new(),
    };
    let shell = fields
        .shell
        .as_deref()
        .and_then(parse_shell)
        .unwrap_or(Shell::Sh);
    let name = match sample {
        Some(s) => format!("{}.{}", step.name, s.name),
        None => step.name.clone(),
    };
    let spec = TaskSpec {
        name,
        batch: batch_of(&wf.name, &step.name),
        command: fill(Path::step(i, "command"), &step.command)?,
        shell: shell as i32,
        container,
        container_options: fields.container_options.clone().unwrap_or_default(),
        inputs,
        output,
        resources,
        retry: fields.retry.unwrap_or(0),
        priority: fields.priority.unwrap_or(0),
        run_timeout_s: fields
            .timeout
            .as_deref()
            .map(crate::spec::parse_timeout)
            .transpose()
            .map_err(|e| (own("timeout", step.timeout.is_some()), e))?
            .unwrap_or(0),
        depends_on: Vec::new(),
    };
    Ok(PlannedTask {
        sample: sample.map(|s| s.name.clone()),
        spec,
        depends,
    })
}

#[cfg(test)]
mod tests {
    use super::super::file::parse;
    use super::*;

    const WF: &str = "\
name: counts
params:
  out: file:///tmp/out
samples:
  words:
    inline:
      one: [file:///data/one.txt]
      three: [file:///data/three.txt]
steps:
  - name: count
    foreach: words
    command: wc -c < $INPUT/{{ sample }}.txt > $OUTPUT/{{ sample }}.count
    input: ['{{ uris }}']
    output: '{{ out }}/{{ sample }}/'
  - name: double
    foreach: words
    depends: [count]
    command: echo {{ sample }}
    input: ['{{ outputs.count }}']
    output: '{{ out }}/double/{{ sample }}/'
  - name: total
    depends: [double]
    command: cat $INPUT/* | awk '{s += $1} END {print s}'
    input: ['{{ outputs.double }}']
    retry: 2
";

    fn words() -> BTreeMap<String, Vec<Sample>> {
        let sample = |n: &str| Sample {
            name: n.into(),
            uris: vec![format!("file:///data/{n}.txt")],
        };
        BTreeMap::from([("words".to_owned(), vec![sample("one"), sample("three")])])
    }

    fn plan(text: &str, overrides: &[(&str, &str)]) -> Result<Vec<PlannedStep>, FileError> {
        let wf = parse("wf.yaml", text)?;
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let checked = check("wf.yaml", text, &wf, &overrides)?;
        expand("wf.yaml", text, &wf, &checked, &words())
    }

    #[test]
    fn steps_fan_out_per_sample_then_fan_in() {
        let steps = plan(WF, &[("out", "s3://b/o")]).unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["count", "double", "total"]);
        let count = &steps[0].tasks;
        assert_eq!(count.len(), 2);
        assert_eq!(count[1].spec.name, "count.three");
        assert_eq!(count[1].spec.batch, "counts.count");
        assert_eq!(
            count[1].spec.command,
            "wc -c < $INPUT/three.txt > $OUTPUT/three.count"
        );
        assert_eq!(count[1].spec.inputs, ["file:///data/three.txt"]);
        assert_eq!(count[1].spec.output, "s3://b/o/three/");
        assert_eq!(count[1].spec.shell, Shell::Sh as i32);
        // Same list: each sample waits for its own.
        let double = &steps[1].tasks;
        assert_eq!(double[1].depends, [(0, 1)]);
        assert_eq!(double[1].spec.inputs, ["s3://b/o/three/"]);
        // No foreach: one task waiting for all, gathering their outputs; awk's braces stay.
        let total = &steps[2].tasks;
        assert_eq!(total.len(), 1);
        assert_eq!(total[0].depends, [(1, 0), (1, 1)]);
        assert_eq!(
            total[0].spec.inputs,
            ["s3://b/o/double/one/", "s3://b/o/double/three/"]
        );
        assert!(total[0].spec.command.contains("'{s += $1} END {print s}'"));
        assert_eq!(total[0].spec.retry, 2);
    }

    fn error(text: &str) -> String {
        plan(text, &[]).unwrap_err().to_string()
    }

    #[test]
    fn recruit_makes_a_rule_per_step_from_the_workflow_s_keys_and_the_step_s() {
        let text = WF
            .replace(
                "steps:\n",
                "recruit: {provider: local, flavor: small, max_workers: 2, concurrency: 2}\nsteps:\n",
            )
            .replace("    retry: 2\n", "    recruit: {max_workers: 1, min_cpu: 4}\n");
        let steps = plan(&text, &[]).unwrap();
        let rules: Vec<_> = steps
            .iter()
            .map(|s| s.recruit.clone().expect("a rule for every step"))
            .collect();
        assert_eq!(rules[0].batch, "counts.count");
        assert_eq!(
            (
                rules[0].flavor.as_str(),
                rules[0].max_workers,
                rules[0].concurrency
            ),
            ("small", 2, 2)
        );
        assert_eq!(
            (
                rules[2].flavor.as_str(),
                rules[2].min_cpu,
                rules[2].max_workers
            ),
            ("", 4, 1)
        );
        assert!(plan(WF, &[]).unwrap().iter().all(|s| s.recruit.is_none()));
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        let text = WF.replace("depends: [double]", "depends: [doubel]");
        assert_eq!(
            error(&text),
            "wf.yaml line 22: steps[2].depends[0]: unknown step \"doubel\" (steps: count, \
             double, total)"
        );
        let text = WF.replace("echo {{ sample }}", "echo {{ smaple }}");
        let err = error(&text);
        assert!(
            err.starts_with("wf.yaml line 18: steps[1].command: unknown variable {{ smaple }}"),
            "{err}"
        );
        let text = WF.replace(
            "    retry: 2\n",
            "    retry: 2\n    recruit: {flavor: b2-7}\n",
        );
        let err = error(&text);
        assert!(
            err.starts_with("wf.yaml line 26: steps[2].recruit: provider is needed"),
            "{err}"
        );
        let text = WF.replace("steps:\n", "recruit: {provider: local}\nsteps:\n");
        let err = error(&text);
        assert!(
            err.starts_with("wf.yaml line 9: recruit: for step count: max_workers is needed"),
            "{err}"
        );
        let text = WF.replace("    retry: 2\n", "    recruit: {flavour: b2-7}\n");
        assert!(
            error(&text).contains("unknown field `flavour`"),
            "{}",
            error(&text)
        );
        let text = WF.replace(
            "    foreach: words\n    command: wc",
            "    foreach: words\n    depends: [total]\n    command: wc",
        );
        let err = error(&text);
        assert!(
            err.contains("depends on itself through other steps"),
            "{err}"
        );
        let text = WF.replace(
            "foreach: words\n    depends",
            "foreach: sentences\n    depends",
        );
        assert!(error(&text).contains("steps[1].foreach: unknown sample list \"sentences\""));
        let text = WF.replace("    depends: [double]\n", "");
        assert!(error(&text).contains("needs step \"double\" in this step's depends"));
        let text = WF.replace(
            "    command: echo {{ sample }}\n",
            "    command: echo {{ out\n",
        );
        assert!(error(&text).contains("unclosed {{"), "{}", error(&text));
        let err = plan(WF, &[("bucket", "x")]).unwrap_err().to_string();
        assert!(
            err.contains("--param bucket: the file declares no such parameter"),
            "{err}"
        );
        let text = WF.replace("  - name: total", "  - name: count");
        assert!(error(&text).contains("step \"count\" is defined twice"));
        let text = WF.replace("    retry: 2\n", "    timeout: soon\n");
        assert!(error(&text).contains("steps[2].timeout: invalid duration \"soon\""));
        let text = WF.replace("command: cat", "command: echo {{ sample }}; cat");
        assert!(error(&text).contains("{{ sample }} is known only in a step with foreach"));
    }
}
