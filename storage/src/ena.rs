//! `run+fastq://ACCESSION`: a public sequencing run, resolved through the ENA file report API
//! to its FASTQ files, each downloaded and checked against the md5 and size ENA states.
//!
//! The report URL and the scheme used for the FASTQ locations (ENA gives them without one)
//! are settings (`SCITQ_ENA_URL`, `SCITQ_ENA_FASTQ_SCHEME`) so tests can replay recorded
//! answers from a local server. The NCBI `fasterq-dump` fallback needs Docker: the agent runs
//! it (`scitq-worker`'s `sra.rs`) when [`StorageError::ena_may_fall_back`] says so.
//!
//! [`StorageError::ena_may_fall_back`]: crate::StorageError::ena_may_fall_back

use crate::error::{Result, StorageError};

/// ENA's file report endpoint.
pub const DEFAULT_ENA_URL: &str = "https://www.ebi.ac.uk/ena/portal/api/filereport";

/// One FASTQ file of a run, as ENA lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastqFile {
    /// Full URL (scheme added).
    pub url: String,
    pub md5: String,
    pub size: u64,
}

/// Run accessions: SRR, ERR or DRR followed by digits.
pub(crate) fn valid_accession(accession: &str) -> bool {
    let (prefix, digits) = accession.split_at(accession.len().min(3));
    matches!(prefix, "SRR" | "ERR" | "DRR")
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
}

/// Asks ENA for the FASTQ files of `accession`.
pub(crate) async fn resolve(
    uri: &str,
    accession: &str,
    report_url: &str,
    scheme: &str,
) -> Result<Vec<FastqFile>> {
    let failed = |reason: String| StorageError::Ena {
        uri: uri.to_string(),
        reason,
    };
    let body = file_report(
        report_url,
        accession,
        "run_accession,fastq_ftp,fastq_md5,fastq_bytes",
    )
    .await
    .map_err(failed)?;
    let files = parse_report(&body, accession, scheme).map_err(failed)?;
    if files.is_empty() {
        return Err(StorageError::NotFound {
            uri: uri.to_string(),
        });
    }
    Ok(files)
}

/// Asks ENA's file report for `fields` of the runs of `accession` (a run, sample, study or
/// project) and returns the TSV body. The error says what failed: the request, or the status
/// and first line of ENA's answer.
pub(crate) async fn file_report(
    report_url: &str,
    accession: &str,
    fields: &str,
) -> std::result::Result<String, String> {
    let url = format!(
        "{report_url}?accession={accession}&result=read_run&fields={fields}&format=tsv&limit=0"
    );
    let response = reqwest::get(&url)
        .await
        .map_err(|e| format!("file report request failed: {e}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("file report unreadable: {e}"))?;
    if !status.is_success() {
        let first = body.lines().next().unwrap_or_default();
        return Err(format!("file report answered {status}: {first}"));
    }
    Ok(body)
}

/// Parses ENA's TSV file report (a header line, then one line per run).
pub(crate) fn parse_report(
    body: &str,
    accession: &str,
    scheme: &str,
) -> std::result::Result<Vec<FastqFile>, String> {
    let mut lines = body.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty file report")?
        .split('\t')
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| format!("file report has no {name} column"))
    };
    let (run, ftp, md5, bytes) = (
        column("run_accession")?,
        column("fastq_ftp")?,
        column("fastq_md5")?,
        column("fastq_bytes")?,
    );
    let mut files = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).map(|s| s.trim()).unwrap_or_default();
        if field(run) != accession {
            continue;
        }
        let split = |s: &str| -> Vec<String> {
            s.split(';')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        let (urls, md5s, sizes) = (split(field(ftp)), split(field(md5)), split(field(bytes)));
        if urls.len() != md5s.len() || urls.len() != sizes.len() {
            return Err(format!(
                "file report lists {} files, {} md5s and {} sizes",
                urls.len(),
                md5s.len(),
                sizes.len()
            ));
        }
        for ((url, md5), size) in urls.into_iter().zip(md5s).zip(sizes) {
            let size = size
                .parse()
                .map_err(|_| format!("bad fastq_bytes {size}"))?;
            let url = if url.contains("://") {
                url
            } else {
                format!("{scheme}://{url}")
            };
            files.push(FastqFile {
                url,
                md5: md5.to_ascii_lowercase(),
                size,
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessions() {
        assert!(valid_accession("SRR1234"));
        assert!(valid_accession("ERR000001"));
        assert!(!valid_accession("SRP1234"));
        assert!(!valid_accession("SRR"));
        assert!(!valid_accession("SRR12a"));
    }

    #[test]
    fn parses_paired_runs() {
        let body = "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\n\
            ERR1\tftp.sra.ebi.ac.uk/vol1/ERR1_1.fastq.gz;ftp.sra.ebi.ac.uk/vol1/ERR1_2.fastq.gz\tAA;bb\t10;20\n";
        let files = parse_report(body, "ERR1", "https").unwrap();
        assert_eq!(
            files,
            [
                FastqFile {
                    url: "https://ftp.sra.ebi.ac.uk/vol1/ERR1_1.fastq.gz".into(),
                    md5: "aa".into(),
                    size: 10
                },
                FastqFile {
                    url: "https://ftp.sra.ebi.ac.uk/vol1/ERR1_2.fastq.gz".into(),
                    md5: "bb".into(),
                    size: 20
                },
            ]
        );
        assert!(
            parse_report(
                "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\nERR1\ta;b\tx\t1;2\n",
                "ERR1",
                "https"
            )
            .is_err()
        );
        assert!(
            parse_report("nothing\n", "ERR1", "https")
                .unwrap_err()
                .contains("run_accession")
        );
    }
}
