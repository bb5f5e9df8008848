//! The runs of a sequencing project grouped by sample, from ENA's file report: what
//! `scitqctl samples` prints, and what the original scitq's `sra_get_samples(project)` returned
//! (sample → runs, each with the `run+fastq://` URI a task takes as input).

use serde::Serialize;

use crate::ena::file_report;
use crate::error::{Result, StorageError};

/// The columns asked from ENA for a project.
const FIELDS: &str = "run_accession,sample_accession,secondary_sample_accession,library_layout,read_count,base_count,fastq_bytes";

/// One sequencing run of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectRun {
    /// Run accession (SRR, ERR or DRR…).
    pub run: String,
    /// `run+fastq://RUN`, ready for `task create --input`.
    pub uri: String,
    /// `PAIRED` or `SINGLE`, as ENA says.
    pub layout: String,
    pub reads: Option<u64>,
    pub bases: Option<u64>,
    /// Size of each FASTQ file ENA holds for the run (none when ENA has no FASTQ for it).
    pub fastq_bytes: Vec<u64>,
}

/// One sample of a project and its runs, in ENA's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectSample {
    /// BioSample accession (SAMEA…, SAMN…, SAMD…); the secondary accession, or the run, when
    /// ENA gives none.
    pub sample: String,
    /// The archive's own sample accession (ERS…, SRS…, DRS…), empty when none.
    pub secondary: String,
    pub runs: Vec<ProjectRun>,
}

/// Project and study accessions: PRJEB, PRJNA or PRJDB, or ERP, SRP or DRP, then digits.
pub fn valid_project(accession: &str) -> bool {
    let digits = ["PRJEB", "PRJNA", "PRJDB", "ERP", "SRP", "DRP"]
        .iter()
        .find_map(|prefix| accession.strip_prefix(prefix));
    digits.is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

/// Asks ENA (`report_url`, its file report endpoint) for the runs of `project`, grouped by
/// sample. A project ENA knows but lists no run for is an error, as is a malformed accession
/// (refused before any request).
pub async fn project_samples(project: &str, report_url: &str) -> Result<Vec<ProjectSample>> {
    if !valid_project(project) {
        return Err(StorageError::BadProject {
            project: project.to_string(),
        });
    }
    let failed = |reason: String| StorageError::EnaProject {
        project: project.to_string(),
        reason,
    };
    let body = file_report(report_url, project, FIELDS)
        .await
        .map_err(failed)?;
    let samples = parse_project_report(&body).map_err(failed)?;
    if samples.is_empty() {
        return Err(failed("no runs".to_string()));
    }
    Ok(samples)
}

/// Parses the TSV answer (a header line, then one line per run); an empty body means no runs.
pub(crate) fn parse_project_report(body: &str) -> std::result::Result<Vec<ProjectSample>, String> {
    let mut lines = body.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<&str> = header.split('\t').map(str::trim).collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("file report has no {name} column"))
    };
    let run_col = column("run_accession")?;
    let sample_col = column("sample_accession")?;
    let secondary_col = column("secondary_sample_accession")?;
    let layout_col = column("library_layout")?;
    let reads_col = column("read_count")?;
    let bases_col = column("base_count")?;
    let bytes_col = column("fastq_bytes")?;
    let mut samples: Vec<ProjectSample> = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).map(|s| s.trim()).unwrap_or_default();
        let run = field(run_col);
        if run.is_empty() {
            continue;
        }
        let count = |i: usize, name: &str| match field(i) {
            "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| format!("run {run}: bad {name} {text:?}")),
        };
        let fastq_bytes = field(bytes_col)
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("run {run}: bad fastq_bytes {s:?}"))
            })
            .collect::<std::result::Result<Vec<u64>, String>>()?;
        let entry = ProjectRun {
            run: run.to_string(),
            uri: format!("run+fastq://{run}"),
            layout: field(layout_col).to_string(),
            reads: count(reads_col, "read_count")?,
            bases: count(bases_col, "base_count")?,
            fastq_bytes,
        };
        let secondary = field(secondary_col);
        let sample = [field(sample_col), secondary, run]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or(run);
        match samples.iter_mut().find(|s| s.sample == sample) {
            Some(known) => known.runs.push(entry),
            None => samples.push(ProjectSample {
                sample: sample.to_string(),
                secondary: secondary.to_string(),
                runs: vec![entry],
            }),
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_accessions() {
        for good in [
            "PRJEB1234",
            "PRJNA42",
            "PRJDB7",
            "ERP000001",
            "SRP9",
            "DRP12",
        ] {
            assert!(valid_project(good), "{good}");
        }
        for bad in [
            "PRJEB", "PRJXX12", "SRR123", "prjeb12", "PRJEB12a", "", "ERP 1",
        ] {
            assert!(!valid_project(bad), "{bad}");
        }
    }

    #[test]
    fn runs_are_grouped_by_sample_in_ena_order() {
        let body = "run_accession\tsample_accession\tsecondary_sample_accession\tlibrary_layout\tread_count\tbase_count\tfastq_bytes\n\
            ERR2\tSAMEA2\tERS2\tPAIRED\t10\t1500\t100;120\n\
            ERR1\tSAMEA1\tERS1\tSINGLE\t5\t500\t50\n\
            ERR3\tSAMEA2\tERS2\tPAIRED\t\t\t\n\
            ERR4\t\t\tSINGLE\t1\t2\t3\n";
        let samples = parse_project_report(body).unwrap();
        let names: Vec<&str> = samples.iter().map(|s| s.sample.as_str()).collect();
        assert_eq!(names, ["SAMEA2", "SAMEA1", "ERR4"]);
        let runs: Vec<&str> = samples[0].runs.iter().map(|r| r.run.as_str()).collect();
        assert_eq!(runs, ["ERR2", "ERR3"]);
        assert_eq!(
            samples[0].runs[0],
            ProjectRun {
                run: "ERR2".into(),
                uri: "run+fastq://ERR2".into(),
                layout: "PAIRED".into(),
                reads: Some(10),
                bases: Some(1500),
                fastq_bytes: vec![100, 120],
            }
        );
        assert_eq!(
            (
                samples[0].runs[1].reads,
                samples[0].runs[1].fastq_bytes.len()
            ),
            (None, 0)
        );
        assert_eq!(samples[0].secondary, "ERS2");
        assert!(parse_project_report("").unwrap().is_empty());
        assert!(
            parse_project_report("run_accession\tsample_accession\n")
                .unwrap_err()
                .contains("secondary_sample_accession")
        );
        let bad = body.replace("\t10\t", "\tten\t");
        assert_eq!(
            parse_project_report(&bad).unwrap_err(),
            "run ERR2: bad read_count \"ten\""
        );
    }
}
