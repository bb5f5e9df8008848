//! Public sequencing data through ENA, against recorded ENA answers replayed by a loopback
//! HTTP server (`SCITQ_ENA_URL`): `scitqctl samples PROJECT`, and the agent's fallback to NCBI
//! `fasterq-dump` in a container when ENA cannot deliver a run.

use std::process::Command;

/// Runs `scitqctl ARGS` with `SCITQ_ENA_URL=ena_url` and no user config.
fn scitqctl(args: &[&str], ena_url: &str) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(scitq_tests::bin("scitqctl"))
        .args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("SCITQ_ENA_URL", ena_url)
        .env_remove("SCITQ_SERVER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What ENA's file report answers for a project with
/// `fields=run_accession,sample_accession,secondary_sample_accession,library_layout,read_count,base_count,fastq_bytes`:
/// columns in the order asked, tab-separated, one line per run, `;` between the files of a
/// paired run, empty cells where ENA has nothing.
const PROJECT_REPORT: &str = "run_accession\tsample_accession\tsecondary_sample_accession\tlibrary_layout\tread_count\tbase_count\tfastq_bytes\n\
ERR3258431\tSAMEA5622031\tERS3429437\tPAIRED\t25124837\t7537451100\t1658120339;1702519210\n\
ERR3258432\tSAMEA5622032\tERS3429438\tPAIRED\t19871002\t5961300600\t1310024812;1349850022\n\
ERR3258433\tSAMEA5622031\tERS3429437\tPAIRED\t1002\t300600\t131002;134985\n\
ERR3258434\tSAMEA5622033\tERS3429439\tSINGLE\t\t\t\n";

#[test]
fn samples_lists_a_projects_runs_by_sample() {
    let http = scitq_tests::HttpServer::start();
    std::fs::write(http.root().join("project"), PROJECT_REPORT).unwrap();
    let header_only = PROJECT_REPORT.lines().next().unwrap().to_string() + "\n";
    std::fs::write(http.root().join("empty-project"), header_only).unwrap();
    let url = http.url("project");

    let (code, stdout, stderr) = scitqctl(&["samples", "PRJEB33009"], &url);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "SAMPLE        RUNS                   LAYOUT  READS     BASES\n\
         SAMEA5622031  ERR3258431,ERR3258433  PAIRED  25125839  7537751700\n\
         SAMEA5622032  ERR3258432             PAIRED  19871002  5961300600\n\
         SAMEA5622033  ERR3258434             SINGLE  -         -\n"
    );
    assert_eq!(stderr, "PRJEB33009: 3 sample(s), 4 run(s)\n");

    let (code, stdout, stderr) = scitqctl(&["--json", "samples", "PRJEB33009"], &url);
    assert_eq!(code, 0, "{stderr}");
    let samples: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let first = &samples[0];
    assert_eq!(first["sample"], "SAMEA5622031", "{samples:#}");
    assert_eq!(first["secondary"], "ERS3429437", "{samples:#}");
    let uris: Vec<&str> = first["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["run+fastq://ERR3258431", "run+fastq://ERR3258433"]);
    assert_eq!(first["runs"][0]["reads"], 25124837);
    assert_eq!(
        first["runs"][0]["fastq_bytes"],
        serde_json::json!([1658120339u64, 1702519210u64])
    );
    assert_eq!(samples[2]["runs"][0]["reads"], serde_json::Value::Null);

    // Errors: a malformed accession is refused before any request; ENA's own errors give its
    // status and first line; a project without runs is said so.
    let (code, stdout, stderr) = scitqctl(&["samples", "SRR123"], &url);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(
        stderr,
        "error: invalid project accession \"SRR123\": expected PRJEB, PRJNA, PRJDB, ERP, SRP or DRP and digits\n"
    );
    let (code, _, stderr) = scitqctl(&["samples", "PRJEB1"], &http.url("no-such-report"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ENA project PRJEB1: file report answered 404 Not Found: "),
        "{stderr}"
    );
    let (code, _, stderr) = scitqctl(&["samples", "PRJNA2"], &http.url("empty-project"));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr, "error: ENA project PRJNA2: no runs\n");
}
