//! `scitqctl workflow run|list|show|stop|go|delete`: workflows without Python.
//!
//! A workflow is a set of steps; each step's tasks are in batch `WORKFLOW.STEP` (as the
//! Python client's `scitq.workflow` does), so a workflow is the batches named after it:
//! `list`, `show`, `stop` and `delete` work the same on workflows made from Python.
//! `run` reads a YAML file (format in docs/workflow.md), checks all of it, resolves the
//! sample lists, then creates every step's batch stopped, the tasks step by step (their
//! dependencies by id), and lets the batches go only once everything is created; if
//! anything fails on the way, the batches it made are deleted again. A step with `recruit`
//! gets a recruiter rule for its batch (`recruit.rs`), made before its tasks.

mod file;
mod plan;
mod recruit;
mod samples;

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use scitq_proto::v1::{Batch, CreateTasksRequest, GoBatchRequest, Signal, StopBatchRequest};
use serde::Serialize;

use super::{Context, Exit, batch};
use crate::client::Client;
use crate::error::usage;
use crate::output::{self, Format, Listing, batch_state};

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Create a workflow's tasks from a YAML file (see docs/workflow.md)
    Run(RunArgs),
    /// List workflows (batches named WORKFLOW.STEP) with their task counts
    List,
    /// Show each step of a workflow with its task counts
    Show {
        /// Workflow name
        name: String,
    },
    /// Stop every step of a workflow: none of its tasks starts any more
    Stop {
        /// Workflow name
        name: String,
        #[command(flatten)]
        signal: batch::StopSignal,
    },
    /// Let a stopped workflow run again
    Go {
        /// Workflow name
        name: String,
    },
    /// Delete a workflow: every step's batch and its tasks (running ones are killed), and
    /// its recruiters
    Delete {
        /// Workflow name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (YAML)
    pub file: std::path::PathBuf,
    /// Replace a parameter of the file (repeatable): NAME=VALUE
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Print the tasks that would be created; create nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run again over an existing workflow of that name, keeping its tasks that succeeded
    /// with the same spec, unchanged inputs and outputs still there (as Nextflow's -resume);
    /// its other tasks are replaced
    #[arg(long, conflicts_with = "dry_run")]
    pub resume: bool,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("invalid parameter {text:?}: expected NAME=VALUE")),
    }
}

pub async fn run(command: WorkflowCommand, ctx: &Context) -> anyhow::Result<Exit> {
    match command {
        WorkflowCommand::Run(args) => run_file(args, ctx).await,
        WorkflowCommand::List => list(ctx).await,
        WorkflowCommand::Show { name } => show(&name, ctx).await,
        WorkflowCommand::Stop { name, signal } => stop(&name, signal.signal(), ctx).await,
        WorkflowCommand::Go { name } => go(&name, ctx).await,
        WorkflowCommand::Delete { name } => delete(&name, ctx).await,
    }
}

async fn run_file(args: RunArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let shown = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| usage(format!("cannot read {shown}: {e}")))?;
    let wf = file::parse(&shown, &text).map_err(|e| usage(e.to_string()))?;
    let checked =
        plan::check(&shown, &text, &wf, &args.params).map_err(|e| usage(e.to_string()))?;
    let samples = samples::resolve(&shown, &text, &wf, &checked, ctx).await?;
    let steps =
        plan::expand(&shown, &text, &wf, &checked, &samples).map_err(|e| usage(e.to_string()))?;
    if args.dry_run {
        print_plan(&steps, ctx.format)?;
        for step in &steps {
            if let Some(rule) = &step.recruit {
                eprintln!("dry run: step {} {}", step.name, recruit::describe(rule));
            }
        }
        let count: usize = steps.iter().map(|s| s.tasks.len()).sum();
        eprintln!(
            "dry run: workflow {} would create {count} task(s) in {} step(s); nothing was created",
            wf.name,
            steps.len()
        );
        return Ok(0);
    }
    let client = ctx.connect().await?;
    let existing = steps_of(&client, &wf.name).await?;
    if !existing.is_empty() && !args.resume {
        let names: Vec<&str> = existing.iter().map(|b| b.name.as_str()).collect();
        return Err(anyhow::anyhow!(
            "workflow {} exists already (batches {}): delete it first with `scitqctl workflow \
             delete {}`, or run it again with --resume",
            wf.name,
            names.join(", "),
            wf.name
        ));
    }
    // With --resume, the earlier tasks of the workflow: those not kept are replaced.
    let mut earlier = Vec::new();
    for batch in &existing {
        let request = scitq_proto::v1::ListTasksRequest {
            batch: Some(batch.name.clone()),
            ..Default::default()
        };
        earlier.extend(
            crate::commands::task::list_all(&client, request, None, 1000)
                .await?
                .into_iter()
                .map(|t| t.id),
        );
    }
    let created = create(&client, &steps, args.resume).await;
    match created {
        Ok((ids, rules)) => {
            // A resumed workflow's earlier rules are replaced by the new ones.
            if args.resume {
                let replaced = recruit::delete_of(&client, &wf.name, &rules).await?;
                if replaced > 0 {
                    eprintln!("{replaced} earlier recruiter(s) of the workflow replaced");
                }
            }
            let kept: Vec<i64> = earlier
                .iter()
                .copied()
                .filter(|id| ids.iter().flatten().any(|new| new == id))
                .collect();
            replace_earlier(&client, &earlier, &kept).await;
            let count: usize = ids.iter().map(Vec::len).sum();
            for (step, ids) in steps.iter().zip(&ids) {
                eprintln!(
                    "step {}: {} task(s) in batch {}",
                    step.name,
                    ids.len(),
                    step.batch
                );
                if let Some(rule) = &step.recruit {
                    eprintln!("step {} {}", step.name, recruit::describe(rule));
                }
            }
            if args.resume {
                eprintln!(
                    "workflow {} resumed: {} task(s) kept, {} to run",
                    wf.name,
                    kept.len(),
                    count - kept.len()
                );
            } else {
                eprintln!("workflow {} created: {count} task(s)", wf.name);
            }
            let all: Vec<i64> = ids.into_iter().flatten().collect();
            match ctx.format {
                Format::Json => output::print_json(&all)?,
                Format::Table => {
                    output::print_text(&all.iter().map(|id| format!("{id}\n")).collect::<String>())?
                }
            }
            Ok(0)
        }
        Err(err) if args.resume => Err(err.context(format!(
            "cannot resume workflow {}; what was created stays: run it again with --resume",
            wf.name
        ))),
        Err(err) => {
            for step in &steps {
                let _ = batch::delete_now(&client, &step.batch).await;
            }
            Err(err.context(format!(
                "cannot create workflow {}; nothing of it was kept",
                wf.name
            )))
        }
    }
}

/// Creates the steps' recruiter rules and tasks, each step's batch stopped until all
/// exist. Returns the ids of each step's tasks, in plan order, and of the rules. On a
/// failure, the rules made are deleted (the caller deletes the batches).
async fn create(
    client: &Client,
    steps: &[plan::PlannedStep],
    resume: bool,
) -> anyhow::Result<(Vec<Vec<i64>>, Vec<i64>)> {
    for step in steps {
        client
            .tasks()
            .stop_batch(StopBatchRequest {
                name: step.batch.clone(),
                signal: Signal::Unspecified as i32,
            })
            .await
            .with_context(|| format!("cannot prepare batch {}", step.batch))?;
    }
    // Before the tasks: a provider or flavor scitqd does not know is found first.
    let wanted: Vec<_> = steps.iter().filter_map(|s| s.recruit.as_ref()).collect();
    let rules = recruit::create(client, &wanted).await?;
    match create_tasks(client, steps, resume).await {
        Ok(ids) => Ok((ids, rules)),
        Err(e) => {
            recruit::delete_ids(client, &rules).await;
            Err(e)
        }
    }
}

/// Creates the tasks step by step, then lets the (stopped) batches go.
async fn create_tasks(
    client: &Client,
    steps: &[plan::PlannedStep],
    resume: bool,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut tasks = client.tasks();
    let mut ids_by_step: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut ordered = Vec::with_capacity(steps.len());
    for step in steps {
        let specs = step
            .tasks
            .iter()
            .map(|task| {
                let mut spec = task.spec.clone();
                spec.depends_on = task
                    .depends
                    .iter()
                    .map(|(s, t)| ids_by_step[s][*t])
                    .collect();
                spec
            })
            .collect();
        let ids = tasks
            .create_tasks(CreateTasksRequest {
                tasks: specs,
                resume,
            })
            .await
            .with_context(|| format!("cannot create the tasks of step {}", step.name))?
            .into_inner()
            .ids;
        ids_by_step.insert(step.index, ids.clone());
        ordered.push(ids);
    }
    for step in steps {
        tasks
            .go_batch(GoBatchRequest {
                name: step.batch.clone(),
            })
            .await
            .with_context(|| format!("cannot start batch {}", step.batch))?;
    }
    Ok(ordered)
}

/// Deletes the earlier tasks a resume did not keep, dependants first.
async fn replace_earlier(client: &Client, earlier: &[i64], kept: &[i64]) {
    let mut gone: Vec<i64> = earlier
        .iter()
        .copied()
        .filter(|id| !kept.contains(id))
        .collect();
    gone.sort_unstable_by(|a, b| b.cmp(a));
    for id in gone {
        if let Err(status) = client
            .tasks()
            .delete_task(scitq_proto::v1::TaskRef { id })
            .await
        {
            eprintln!(
                "warning: earlier task {id} was not deleted: {}",
                status.message()
            );
        }
    }
}

/// A planned task as `--dry-run` shows it.
#[derive(Serialize)]
struct PlannedView {
    step: String,
    name: String,
    batch: String,
    command: String,
    inputs: Vec<String>,
    output: String,
    resources: Vec<String>,
    container: String,
    /// Names of the tasks it waits for.
    depends_on: Vec<String>,
}

impl Listing for PlannedView {
    type View = PlannedView;
    const HEADERS: &'static [&'static str] =
        &["STEP", "NAME", "COMMAND", "INPUTS", "OUTPUT", "AFTER"];

    fn view(&self) -> PlannedView {
        PlannedView {
            step: self.step.clone(),
            name: self.name.clone(),
            batch: self.batch.clone(),
            command: self.command.clone(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            resources: self.resources.clone(),
            container: self.container.clone(),
            depends_on: self.depends_on.clone(),
        }
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.step.clone(),
            self.name.clone(),
            self.command.clone(),
            self.inputs.join(" "),
            self.output.clone(),
            self.depends_on.join(","),
        ]
    }
}

fn print_plan(steps: &[plan::PlannedStep], format: Format) -> anyhow::Result<()> {
    let by_index: BTreeMap<usize, &plan::PlannedStep> =
        steps.iter().map(|s| (s.index, s)).collect();
    let rows: Vec<PlannedView> = steps
        .iter()
        .flat_map(|step| {
            let by_index = &by_index;
            step.tasks.iter().map(move |task| PlannedView {
                step: step.name.clone(),
                name: task.spec.name.clone(),
                batch: task.spec.batch.clone(),
                command: task.spec.command.clone(),
                inputs: task.spec.inputs.clone(),
                output: task.spec.output.clone(),
                resources: task.spec.resources.clone(),
                container: task.spec.container.clone(),
                depends_on: task
                    .depends
                    .iter()
                    .map(|(s, t)| by_index[s].tasks[*t].spec.name.clone())
                    .collect(),
            })
        })
        .collect();
    output::print_list(&rows, format)
}

/// The batches of a workflow's steps.
async fn steps_of(client: &Client, name: &str) -> anyhow::Result<Vec<Batch>> {
    let prefix = format!("{name}.");
    Ok(batch::list(client)
        .await?
        .into_iter()
        .filter(|b| b.name.starts_with(&prefix))
        .collect())
}

async fn existing_steps(client: &Client, name: &str) -> anyhow::Result<Vec<Batch>> {
    let steps = steps_of(client, name).await?;
    if steps.is_empty() {
        return Err(anyhow::anyhow!(
            "no workflow {name}: no batch is named {name}.STEP"
        ));
    }
    Ok(steps)
}

/// A workflow or a step, with its task counts.
#[derive(Serialize)]
struct Summary {
    name: String,
    /// running, stopped or suspended; `mixed` for a workflow whose steps differ.
    state: String,
    steps: usize,
    counts: BTreeMap<String, u64>,
}

const COUNTED: [&str; 6] = [
    "waiting",
    "pending",
    "running",
    "succeeded",
    "failed",
    "canceled",
];

impl Listing for Summary {
    type View = Summary;
    const HEADERS: &'static [&'static str] = &[
        "NAME",
        "STATE",
        "STEPS",
        "WAITING",
        "PENDING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELED",
    ];

    fn view(&self) -> Summary {
        Summary {
            name: self.name.clone(),
            state: self.state.clone(),
            steps: self.steps,
            counts: self.counts.clone(),
        }
    }

    fn row(&self) -> Vec<String> {
        let mut row = vec![
            self.name.clone(),
            self.state.clone(),
            self.steps.to_string(),
        ];
        row.extend(
            COUNTED
                .iter()
                .map(|s| self.counts.get(*s).copied().unwrap_or(0).to_string()),
        );
        row
    }
}

/// Counts as shown: `running` holds every active status (assigned … uploading), `pending`
/// the paused ones too.
fn fold_counts(into: &mut BTreeMap<String, u64>, counts: &std::collections::HashMap<String, u64>) {
    for (status, n) in counts {
        let shown = match status.as_str() {
            "assigned" | "accepted" | "running" | "uploading" => "running",
            "paused" => "pending",
            other => other,
        };
        *into.entry(shown.to_owned()).or_default() += n;
    }
}

async fn list(ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let batches = batch::list(&client).await?;
    let mut workflows: BTreeMap<String, Summary> = BTreeMap::new();
    for batch in &batches {
        let Some((name, _step)) = batch.name.split_once('.') else {
            continue;
        };
        let entry = workflows.entry(name.to_owned()).or_insert_with(|| Summary {
            name: name.to_owned(),
            state: batch_state(batch).to_owned(),
            steps: 0,
            counts: BTreeMap::new(),
        });
        if entry.state != batch_state(batch) {
            entry.state = "mixed".to_owned();
        }
        entry.steps += 1;
        fold_counts(&mut entry.counts, &batch.counts);
    }
    let rows: Vec<Summary> = workflows.into_values().collect();
    output::print_list(&rows, ctx.format)?;
    Ok(0)
}

async fn show(name: &str, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let steps = existing_steps(&client, name).await?;
    let rows: Vec<Summary> = steps
        .iter()
        .map(|batch| {
            let mut counts = BTreeMap::new();
            fold_counts(&mut counts, &batch.counts);
            Summary {
                name: batch.name.clone(),
                state: batch_state(batch).to_owned(),
                steps: 1,
                counts,
            }
        })
        .collect();
    output::print_list(&rows, ctx.format)?;
    Ok(0)
}

async fn stop(name: &str, signal: Signal, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    for step in existing_steps(&client, name).await? {
        batch::stop(&client, &step.name, signal).await?;
    }
    eprintln!("workflow {name} stopped");
    Ok(0)
}

async fn go(name: &str, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    for step in existing_steps(&client, name).await? {
        batch::go(&client, &step.name).await?;
    }
    eprintln!("workflow {name} runs again");
    Ok(0)
}

async fn delete(name: &str, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let steps = existing_steps(&client, name).await?;
    let rules = recruit::delete_of(&client, name, &[]).await?;
    let mut deleted = 0;
    for step in steps {
        deleted += batch::delete_now(&client, &step.name).await?;
    }
    eprintln!(
        "workflow {name} deleted ({deleted} tasks, {rules} recruiter(s); their machines are \
         destroyed once idle)"
    );
    Ok(0)
}
