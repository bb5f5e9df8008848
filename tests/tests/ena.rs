//! Public sequencing data through ENA, against recorded ENA answers replayed by a loopback
//! HTTP server (`SCITQ_ENA_URL`): `scitqctl samples PROJECT`, and the agent's fallback to NCBI
//! `fasterq-dump` in a container when ENA cannot deliver a run.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use scitq_tests::{Agent, Client, HttpServer, Image, Server, ServerOpts, str_field};

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
    let http = HttpServer::start();
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

const CONNECT: Duration = Duration::from_secs(60);
const DONE: Duration = Duration::from_secs(120);

/// Stands in for NCBI's `fasterq-dump --split-3 --outdir DIR --temp DIR ACCESSION` in the
/// test's sra-tools image: three pairs of reads named after the run, or a failure for runs
/// named SRR404….
const FAKE_FASTERQ_DUMP: &str = r#"#!/bin/sh
out=. split=no
while [ $# -gt 1 ]; do
    case "$1" in
        --outdir) out=$2; shift 2 ;;
        --temp) shift 2 ;;
        --split-3) split=yes; shift ;;
        *) echo "unexpected option $1" >&2; exit 2 ;;
    esac
done
[ "$split" = yes ] || { echo "expected --split-3" >&2; exit 2; }
case "$1" in
    SRR404*) echo "no data for $1" >&2; exit 3 ;;
esac
for mate in 1 2; do
    for i in 0 1 2; do
        printf '@%s.%s/%s\nACGTACGT\n+\nIIIIIIII\n' "$1" "$i" "$mate"
    done > "$out/$1_$mate.fastq"
done
echo "spots read: 3"
"#;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn md5(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// The task's stderr (`task output` prints it on its own stderr).
fn task_stderr(c: &Client, id: i64) -> String {
    let out = c.ctl(["task", "output", &id.to_string()]);
    assert!(out.status.success(), "{}", scitq_tests::describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runs_ena_cannot_deliver_are_dumped_with_fasterq_dump_in_a_container() {
    // ENA's recorded answer: ERR001 whole, ERR002 with an md5 its file does not have,
    // SRR000002 without FASTQ files; no line at all for SRR000001 and SRR404001.
    let http = HttpServer::start();
    let host = format!("127.0.0.1:{}", http.port());
    let vol = http.root().join("vol1");
    std::fs::create_dir_all(&vol).unwrap();
    let files: Vec<(String, Vec<u8>)> = ["ERR001_1", "ERR001_2", "ERR002_1"]
        .iter()
        .map(|name| {
            let reads = format!("@{name}.0\nACGT\n+\nIIII\n");
            (format!("{name}.fastq.gz"), gz(reads.as_bytes()))
        })
        .collect();
    for (name, data) in &files {
        std::fs::write(vol.join(name), data).unwrap();
    }
    let (err001_1, err001_2, err002) = (&files[0].1, &files[1].1, &files[2].1);
    let report = format!(
        "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\n\
         ERR001\t{host}/vol1/ERR001_1.fastq.gz;{host}/vol1/ERR001_2.fastq.gz\t{};{}\t{};{}\n\
         ERR002\t{host}/vol1/ERR002_1.fastq.gz\t0123456789abcdef0123456789abcdef\t{}\n\
         SRR000002\t\t\t\n",
        md5(err001_1),
        md5(err001_2),
        err001_1.len(),
        err001_2.len(),
        err002.len(),
    );
    std::fs::write(http.root().join("filereport"), report).unwrap();

    let image = Image::tiny_with(&[("/bin/fasterq-dump", FAKE_FASTERQ_DUMP)]);
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let ena_url = http.url("filereport");
    let agent = Agent::start_with_env(
        &server,
        "sra",
        2,
        &["--sra-tools-image", image.tag()],
        &[
            ("SCITQ_ENA_URL", &ena_url),
            ("SCITQ_ENA_FASTQ_SCHEME", "http"),
        ],
    );
    c.wait_worker_online("sra", CONNECT);

    let from_ena = c.create_sh(
        "ena",
        "ls $INPUT; zcat $INPUT/ERR001_2.fastq.gz",
        &["--input", "run+fastq://ERR001"],
    );
    let in_container = c.create_sh(
        "ena",
        "ls -a /input; zcat /input/SRR000001_2.fastq.gz | head -4",
        &[
            "--container",
            image.tag(),
            "--input",
            "run+fastq://SRR000001",
        ],
    );
    let unzipped = c.create_sh(
        "ena",
        "ls $INPUT; tail -4 $INPUT/SRR000002_1.fastq",
        &["--input", "run+fastq://SRR000002|gunzip"],
    );
    let damaged = c.create_sh("ena", "ls $INPUT", &["--input", "run+fastq://ERR002"]);
    let nowhere = c.create_sh(
        "ena",
        "echo should not run",
        &["--input", "run+fastq://SRR404001"],
    );

    c.wait_task(from_ena, "succeeded", DONE);
    assert_eq!(
        c.output(from_ena),
        "ERR001_1.fastq.gz\nERR001_2.fastq.gz\n@ERR001_2.0\nACGT\n+\nIIII\n"
    );
    assert_eq!(
        task_stderr(&c, from_ena),
        "scitq: run+fastq://ERR001: 2 file(s) from ENA\n"
    );

    let fallback = |uri: &str, ena_error: &str| {
        format!(
            "scitq: {uri}: 2 file(s) from NCBI fasterq-dump ({}), as ENA failed: {ena_error}\n",
            image.tag()
        )
    };
    c.wait_task(in_container, "succeeded", DONE);
    assert_eq!(
        c.output(in_container),
        ".\n..\nSRR000001_1.fastq.gz\nSRR000001_2.fastq.gz\n@SRR000001.0/2\nACGTACGT\n+\nIIIIIIII\n",
        "gzipped FASTQ under ENA's names, and nothing else left in /input"
    );
    assert_eq!(
        task_stderr(&c, in_container),
        fallback(
            "run+fastq://SRR000001",
            "run+fastq://SRR000001: no such object"
        )
    );

    c.wait_task(unzipped, "succeeded", DONE);
    assert_eq!(
        c.output(unzipped),
        "SRR000002_1.fastq\nSRR000002_2.fastq\n@SRR000002.2/1\nACGTACGT\n+\nIIIIIIII\n"
    );

    c.wait_task(damaged, "succeeded", DONE);
    assert_eq!(c.output(damaged), "ERR002_1.fastq.gz\nERR002_2.fastq.gz\n");
    let md5_error = format!(
        "http://{host}/vol1/ERR002_1.fastq.gz: md5 mismatch after transfer: expected 0123456789abcdef0123456789abcdef, got {}",
        md5(err002)
    );
    assert_eq!(
        task_stderr(&c, damaged),
        fallback("run+fastq://ERR002", &md5_error)
    );

    let task = c.wait_task(nowhere, "failed", DONE);
    let execution = &c.ctl_json(["task", "executions", &nowhere.to_string()])[0];
    assert_eq!(execution["failure"], "download", "{execution:#}");
    assert_eq!(
        str_field(execution, "message"),
        format!(
            "cannot download input run+fastq://SRR404001: ENA failed: run+fastq://SRR404001: no such object; \
             fasterq-dump fallback ({}): fasterq-dump exited with code 3: no data for SRR404001",
            image.tag()
        )
    );
    assert_eq!(c.output(nowhere), "", "the command must not run: {task:#}");

    // The fasterq-dump containers are removed once they ended.
    let scope = agent.work_dir().display().to_string();
    for id in [unzipped, damaged, nowhere] {
        let execution = c.task(id)["execution_id"].to_string();
        let left = scitq_tests::images::containers_with(&[
            ("scitq.agent", &scope),
            ("scitq.execution", &execution),
        ]);
        assert!(left.is_empty(), "task {id}: containers left: {left:?}");
    }
}

#[test]
fn without_docker_an_ena_failure_fails_the_download_saying_the_fallback_needs_it() {
    let http = HttpServer::start();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let ena_url = http.url("no-such-report");
    let _agent = Agent::start_with_env(
        &server,
        "dockerless",
        1,
        &[],
        &[
            ("SCITQ_ENA_URL", &ena_url),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    c.wait_worker_online("dockerless", CONNECT);
    let id = c.create_sh(
        "ena",
        "echo should not run",
        &["--input", "run+fastq://SRR000001"],
    );
    c.wait_task(id, "failed", DONE);
    let execution = &c.ctl_json(["task", "executions", &id.to_string()])[0];
    assert_eq!(execution["failure"], "download", "{execution:#}");
    let message = str_field(execution, "message");
    let expected_start = "cannot download input run+fastq://SRR000001: ENA failed: \
        run+fastq://SRR000001: ENA: file report answered 404 Not Found: ";
    assert!(message.starts_with(expected_start), "{message}");
    assert!(
        message
            .contains("; the fasterq-dump fallback needs Docker: cannot reach the Docker daemon: "),
        "{message}"
    );
    assert_eq!(c.output(id), "");
}

/// Removes every container an agent made, whatever the test's outcome.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let left = scitq_tests::images::containers_labelled("scitq.agent", &self.0);
        scitq_tests::images::remove_containers(&left);
    }
}

#[test]
fn a_reattached_container_keeps_the_source_line_at_the_head_of_its_stderr() {
    let http = HttpServer::start();
    let host = format!("127.0.0.1:{}", http.port());
    let reads = gz(b"@ERR001.0\nACGT\n+\nIIII\n");
    std::fs::write(http.root().join("ERR001.fastq.gz"), &reads).unwrap();
    let report = format!(
        "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\n\
         ERR001\t{host}/ERR001.fastq.gz\t{}\t{}\n",
        md5(&reads),
        reads.len()
    );
    std::fs::write(http.root().join("filereport"), report).unwrap();
    let image = Image::tiny();
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let ena_url = http.url("filereport");
    let flags = tempfile::tempdir().unwrap();
    let flags_dir = flags.path().display().to_string();
    let mut agent = Agent::start_with_env(
        &server,
        "phoenix",
        1,
        &["--docker-network", "none", "--allow-mount", &flags_dir],
        &[
            ("SCITQ_ENA_URL", &ena_url),
            ("SCITQ_ENA_FASTQ_SCHEME", "http"),
        ],
    );
    let _containers = Containers(agent.work_dir().display().to_string());
    c.wait_worker_online("phoenix", CONNECT);
    let volume = format!("-v {flags_dir}:/flags");
    let id = c.create(&[
        "--container",
        image.tag(),
        "--container-option",
        &volume,
        "--input",
        "run+fastq://ERR001",
        "--shell",
        "--",
        "echo one >&2; while [ ! -e /flags/go ]; do sleep 0.05; done; echo two >&2; ls /input",
    ]);
    scitq_tests::poll(DONE, format!("task {id} to print on stderr"), || {
        let stderr = task_stderr(&c, id);
        if stderr.ends_with("one\n") {
            Ok(())
        } else {
            Err(stderr)
        }
    });

    // The new agent reads the container's logs again from its start: it must match them
    // past the source line, neither repeating nor losing the command's own stderr.
    agent.kill9();
    agent.start_again();
    std::fs::write(flags.path().join("go"), "").unwrap();
    c.wait_task(id, "succeeded", DONE);
    assert_eq!(
        task_stderr(&c, id),
        "scitq: run+fastq://ERR001: 1 file(s) from ENA\none\ntwo\n"
    );
    assert_eq!(c.output(id), "ERR001.fastq.gz\n");
}
