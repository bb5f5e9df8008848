//! The sample lists a workflow's steps iterate over: written in the file, a sequencing
//! project's samples from ENA (as `scitqctl samples`), or the files of a storage folder.

use std::collections::BTreeMap;

use scitq_storage::{DEFAULT_ENA_URL, EnvDefaults, Storage, project_samples};

use super::file::{FileError, InlineSamples, Key, Path, SampleSource, WorkflowFile, error_at};
use super::plan::{Checked, Sample, render};
use crate::commands::Context;
use crate::error::usage;

/// Resolves every sample list some step uses.
pub async fn resolve(
    file: &str,
    text: &str,
    wf: &WorkflowFile,
    checked: &Checked,
    ctx: &Context,
) -> anyhow::Result<BTreeMap<String, Vec<Sample>>> {
    let mut out = BTreeMap::new();
    for name in &checked.used_samples {
        let path = Path::of([Key::Field("samples"), Key::Name(name.clone())]);
        let fail = |message: String| -> anyhow::Error {
            let err: FileError = error_at(file, text, &path, message);
            usage(err.to_string())
        };
        let fill = |value: &str| {
            render(value, &|v| checked.params.get(v).cloned().ok_or(())).map_err(&fail)
        };
        let samples = match &wf.samples[name] {
            SampleSource::Inline(InlineSamples::Names(names)) => names
                .iter()
                .map(|n| Sample {
                    name: n.clone(),
                    uris: Vec::new(),
                })
                .collect(),
            SampleSource::Inline(InlineSamples::WithUris(map)) => map
                .iter()
                .map(|(n, uris)| Sample {
                    name: n.clone(),
                    uris: uris.clone(),
                })
                .collect(),
            SampleSource::Ena(project) => {
                let project = fill(project)?;
                let url = EnvDefaults::from_env()
                    .ena_url
                    .unwrap_or_else(|| DEFAULT_ENA_URL.to_string());
                project_samples(&project, &url)
                    .await
                    .map_err(|e| fail(format!("cannot list project {project}: {e}")))?
                    .into_iter()
                    .map(|s| Sample {
                        name: s.sample,
                        uris: s.runs.into_iter().map(|r| r.uri).collect(),
                    })
                    .collect()
            }
            SampleSource::Storage(uri) => {
                let uri = fill(uri)?;
                listed(&uri, ctx)
                    .await
                    .map_err(|e| fail(format!("{e:#}")))?
            }
        };
        check_names(&samples).map_err(&fail)?;
        out.insert(name.clone(), samples);
    }
    Ok(out)
}

/// Sample names become task names: no two alike, none empty.
fn check_names(samples: &[Sample]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for sample in samples {
        if sample.name.trim().is_empty() {
            return Err("a sample has an empty name".into());
        }
        if !seen.insert(sample.name.as_str()) {
            return Err(format!("sample {:?} is listed twice", sample.name));
        }
    }
    Ok(())
}

/// The files of a storage folder grouped into samples: a sample per file name up to its
/// first `.` (`S1.R1.fastq.gz` and `S1.R2.fastq.gz` are sample `S1`), in name order.
async fn listed(uri: &str, ctx: &Context) -> anyhow::Result<Vec<Sample>> {
    let found = crate::remotes::find(None, &[uri], || ctx.target()).await?;
    let storage = Storage::new(found.remotes.clone());
    storage.location(uri).map_err(|e| found.explain(e))?;
    let entries = storage.list(uri, false).await?;
    Ok(group(
        entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| (e.path, e.uri)),
    ))
}

fn group(files: impl Iterator<Item = (String, String)>) -> Vec<Sample> {
    let mut samples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, uri) in files {
        let file_name = path.rsplit('/').next().unwrap_or(&path);
        let name = file_name.split('.').next().unwrap_or(file_name);
        if name.is_empty() {
            continue;
        }
        samples.entry(name.to_owned()).or_default().push(uri);
    }
    samples
        .into_iter()
        .map(|(name, mut uris)| {
            uris.sort();
            Sample { name, uris }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_group_into_samples_by_their_name_before_the_first_dot() {
        let files = [
            ("S2.fastq.gz", "s3://b/r/S2.fastq.gz"),
            ("S1.R2.fastq.gz", "s3://b/r/S1.R2.fastq.gz"),
            ("S1.R1.fastq.gz", "s3://b/r/S1.R1.fastq.gz"),
            (".hidden", "s3://b/r/.hidden"),
        ];
        let samples = group(
            files
                .iter()
                .map(|(p, u)| ((*p).to_owned(), (*u).to_owned())),
        );
        assert_eq!(
            samples,
            [
                Sample {
                    name: "S1".into(),
                    uris: vec![
                        "s3://b/r/S1.R1.fastq.gz".into(),
                        "s3://b/r/S1.R2.fastq.gz".into()
                    ],
                },
                Sample {
                    name: "S2".into(),
                    uris: vec!["s3://b/r/S2.fastq.gz".into()],
                },
            ]
        );
    }
}
