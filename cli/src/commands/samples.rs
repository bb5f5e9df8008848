//! `scitqctl samples PROJECT`: the samples of a sequencing project and their runs, from ENA's
//! file report (the original scitq's `sra_get_samples`). Needs no server. `--json` gives each
//! run's `run+fastq://` URI, so a script can write the `task create --input` lines.

use clap::Args;
use scitq_storage::{
    DEFAULT_ENA_URL, EnvDefaults, ProjectRun, ProjectSample, StorageError, project_samples,
    valid_project,
};

use super::{Context, Exit};
use crate::error::usage;
use crate::output::{self, Listing};

#[derive(Debug, Args)]
pub struct SamplesArgs {
    /// Project or study accession: PRJEB…, PRJNA…, PRJDB…, ERP…, SRP… or DRP…
    pub project: String,
}

pub async fn run(args: SamplesArgs, ctx: &Context) -> anyhow::Result<Exit> {
    if !valid_project(&args.project) {
        let error = StorageError::BadProject {
            project: args.project,
        };
        return Err(usage(error.to_string()));
    }
    let report_url = EnvDefaults::from_env()
        .ena_url
        .unwrap_or_else(|| DEFAULT_ENA_URL.to_string());
    let samples = project_samples(&args.project, &report_url).await?;
    let runs: usize = samples.iter().map(|s| s.runs.len()).sum();
    eprintln!(
        "{}: {} sample(s), {runs} run(s)",
        args.project,
        samples.len()
    );
    let rows: Vec<Sample> = samples.into_iter().map(Sample).collect();
    output::print_list(&rows, ctx.format)?;
    Ok(0)
}

struct Sample(ProjectSample);

impl Listing for Sample {
    type View = ProjectSample;
    const HEADERS: &'static [&'static str] = &["SAMPLE", "RUNS", "LAYOUT", "READS", "BASES"];

    fn view(&self) -> ProjectSample {
        self.0.clone()
    }

    fn row(&self) -> Vec<String> {
        let runs = &self.0.runs;
        let names: Vec<&str> = runs.iter().map(|r| r.run.as_str()).collect();
        let mut layouts: Vec<&str> = runs.iter().map(|r| r.layout.as_str()).collect();
        layouts.dedup();
        // A total is shown only when ENA gave every run's count.
        let total = |count: fn(&ProjectRun) -> Option<u64>| {
            runs.iter()
                .map(count)
                .sum::<Option<u64>>()
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        };
        vec![
            self.0.sample.clone(),
            names.join(","),
            layouts.join(","),
            total(|r| r.reads),
            total(|r| r.bases),
        ]
    }
}
