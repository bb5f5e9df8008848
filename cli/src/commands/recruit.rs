//! `scitqctl recruiter ...`, `flavor list`, `job list` and `worker deploy`: recruiting
//! machines on the providers configured in scitqd.

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use scitq_proto::v1::{
    CreateRecruiterRequest, DeployWorkersRequest, ListFlavorsRequest, ListJobsRequest,
    ListRecruitersRequest, RecruiterRef,
};

use super::{Context, Exit};
use crate::output;

/// Minimums a flavor must meet.
#[derive(Debug, Args, Default)]
pub struct Minimums {
    /// At least this many cpus
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_cpu: u32,
    /// At least this much memory, in GiB
    #[arg(long, value_name = "GIB", default_value_t = 0)]
    pub min_mem: u32,
    /// At least this much disk, in GiB
    #[arg(long, value_name = "GIB", default_value_t = 0)]
    pub min_disk: u32,
    /// At least this many GPUs
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpu: u32,
}

#[derive(Debug, Subcommand)]
pub enum RecruiterCommand {
    /// Recruit machines for a batch while its tasks wait: the cheapest flavor matching,
    /// within the provider's quotas, idle machines re-used first; destroyed when idle.
    /// Without --flavor or minimums: the provider's cheapest flavor
    #[command(group(ArgGroup::new("flavor_choice").multiple(true)))]
    Add {
        /// The batch the machines serve
        #[arg(long)]
        batch: String,
        /// A provider configured in scitqd (`[[provider]] name`)
        #[arg(long)]
        provider: String,
        /// One of the provider's regions [default: its first]
        #[arg(long)]
        region: Option<String>,
        /// A flavor by name (see `scitqctl flavor list`)
        #[arg(long, group = "flavor_choice", conflicts_with_all = ["min_cpu", "min_mem", "min_disk", "gpu"])]
        flavor: Option<String>,
        /// Or the cheapest flavor with at least this many cpus
        #[arg(long, group = "flavor_choice", value_name = "N")]
        min_cpu: Option<u32>,
        /// ... at least this much memory, in GiB
        #[arg(long, group = "flavor_choice", value_name = "GIB")]
        min_mem: Option<u32>,
        /// ... at least this much disk, in GiB
        #[arg(long, value_name = "GIB")]
        min_disk: Option<u32>,
        /// ... at least this many GPUs
        #[arg(long, value_name = "N")]
        gpu: Option<u32>,
        /// Most machines at once for this rule
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max_workers: u32,
        /// Tasks per worker slot that make another machine worth renting
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rounds: u32,
        /// Tasks each machine runs at once
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=scitq_proto::MAX_CONCURRENCY as i64))]
        concurrency: u32,
        /// Tasks prepared in advance per machine, or "auto" [default: auto]
        #[arg(long, value_name = "N|auto")]
        prefetch: Option<scitq_proto::PrefetchSetting>,
        /// A machine idle this long with nothing waiting is destroyed
        #[arg(long, value_name = "DUR", default_value = "5m", value_parser = humantime::parse_duration)]
        idle_timeout: std::time::Duration,
    },
    /// List the rules, with their machines and state
    List,
    /// Delete a rule; its machines stay until idle, then are destroyed
    Delete {
        /// Recruiter id
        id: i64,
    },
    /// Recruit nothing more for this rule
    Pause {
        /// Recruiter id
        id: i64,
    },
    /// Recruit again (also after the rule paused itself), its failures forgotten
    Resume {
        /// Recruiter id
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// List the flavors of the configured providers, cheapest first
    List {
        /// Only this provider's
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        minimums: Minimums,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List provisioning jobs (creates and destroys), newest first
    List {
        /// At most this many
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
}

/// `scitqctl worker deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A provider configured in scitqd (`[[provider]] name`)
    #[arg(long)]
    pub provider: String,
    /// The flavor (see `scitqctl flavor list`)
    #[arg(long)]
    pub flavor: String,
    /// One of the provider's regions [default: its first]
    #[arg(long)]
    pub region: Option<String>,
    /// How many machines
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// Only run tasks of this batch [default: any]
    #[arg(long)]
    pub batch: Option<String>,
    /// Tasks each machine runs at once [default: the flavor's cpus]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=scitq_proto::MAX_CONCURRENCY as i64))]
    pub concurrency: Option<u32>,
    /// Tasks prepared in advance per machine, or "auto" [default: auto]
    #[arg(long, value_name = "N|auto")]
    pub prefetch: Option<scitq_proto::PrefetchSetting>,
}

fn fixed(prefetch: Option<scitq_proto::PrefetchSetting>) -> Option<u32> {
    match prefetch {
        Some(scitq_proto::PrefetchSetting::Fixed(n)) => Some(n),
        _ => None,
    }
}

pub async fn recruiter(command: RecruiterCommand, ctx: &Context) -> anyhow::Result<Exit> {
    let client = ctx.connect().await?;
    let mut recruit = client.recruit();
    match command {
        RecruiterCommand::Add {
            batch,
            provider,
            region,
            flavor,
            min_cpu,
            min_mem,
            min_disk,
            gpu,
            max_workers,
            rounds,
            concurrency,
            prefetch,
            idle_timeout,
        } => {
            let rule = recruit
                .create_recruiter(CreateRecruiterRequest {
                    batch: batch.clone(),
                    provider,
                    region: region.unwrap_or_default(),
                    flavor: flavor.unwrap_or_default(),
                    min_cpu: min_cpu.unwrap_or(0),
                    min_mem_gib: min_mem.unwrap_or(0),
                    min_disk_gib: min_disk.unwrap_or(0),
                    gpu: gpu.unwrap_or(0),
                    max_workers,
                    rounds,
                    concurrency,
                    prefetch: fixed(prefetch),
                    idle_timeout_s: idle_timeout.as_secs().max(1),
                })
                .await
                .with_context(|| format!("cannot add a recruiter for batch {batch:?}"))?
                .into_inner();
            output::print_one(&rule, ctx.format)?;
        }
        RecruiterCommand::List => {
            let rules = recruit
                .list_recruiters(ListRecruitersRequest {})
                .await?
                .into_inner()
                .recruiters;
            output::print_list(&rules, ctx.format)?;
        }
        RecruiterCommand::Delete { id } => {
            recruit
                .delete_recruiter(RecruiterRef { id })
                .await
                .with_context(|| format!("cannot delete recruiter {id}"))?;
            eprintln!("recruiter {id} deleted; its machines are destroyed once idle");
        }
        RecruiterCommand::Pause { id } | RecruiterCommand::Resume { id } => {
            let pause = matches!(command, RecruiterCommand::Pause { .. });
            let rule = if pause {
                recruit.pause_recruiter(RecruiterRef { id }).await
            } else {
                recruit.resume_recruiter(RecruiterRef { id }).await
            }
            .with_context(|| {
                let verb = if pause { "pause" } else { "resume" };
                format!("cannot {verb} recruiter {id}")
            })?
            .into_inner();
            output::print_one(&rule, ctx.format)?;
        }
    }
    Ok(0)
}

pub async fn flavor(command: FlavorCommand, ctx: &Context) -> anyhow::Result<Exit> {
    let FlavorCommand::List { provider, minimums } = command;
    let client = ctx.connect().await?;
    let listed = client
        .recruit()
        .list_flavors(ListFlavorsRequest {
            provider: provider.unwrap_or_default(),
            min_cpu: minimums.min_cpu,
            min_mem_gib: minimums.min_mem,
            min_disk_gib: minimums.min_disk,
            gpu: minimums.gpu,
        })
        .await
        .context("cannot list flavors")?
        .into_inner();
    for error in &listed.errors {
        eprintln!("warning: {error}");
    }
    output::print_list(&listed.flavors, ctx.format)?;
    Ok(if listed.errors.is_empty() { 0 } else { 1 })
}

pub async fn job(command: JobCommand, ctx: &Context) -> anyhow::Result<Exit> {
    let JobCommand::List { limit } = command;
    let client = ctx.connect().await?;
    let jobs = client
        .recruit()
        .list_jobs(ListJobsRequest { limit })
        .await
        .context("cannot list jobs")?
        .into_inner()
        .jobs;
    output::print_list(&jobs, ctx.format)?;
    Ok(0)
}

pub async fn deploy(
    args: DeployArgs,
    client: &crate::client::Client,
    ctx: &Context,
) -> anyhow::Result<()> {
    let machines = client
        .recruit()
        .deploy_workers(DeployWorkersRequest {
            provider: args.provider.clone(),
            flavor: args.flavor.clone(),
            region: args.region.unwrap_or_default(),
            count: args.count,
            batch: args.batch.unwrap_or_default(),
            concurrency: args.concurrency.unwrap_or(0),
            prefetch: fixed(args.prefetch),
        })
        .await
        .with_context(|| format!("cannot deploy {} on {}", args.flavor, args.provider))?
        .into_inner()
        .machines;
    output::print_list(&machines, ctx.format)?;
    eprintln!(
        "{} machine(s) being created; `scitqctl worker list` shows them, `scitqctl job list` how it goes",
        machines.len()
    );
    Ok(())
}
