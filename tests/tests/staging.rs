//! The original scitq example in miniature: FASTQ-like inputs and a reference on a loopback S3
//! server (moto), named through an rclone remote that scitqd hands its agents; a tool run in
//! a locally built image with /input, /resource and /output; results uploaded to S3, where the
//! test reads them. Then bad data URIs: the task fails with a message naming the value, as a
//! download failure, and nothing else is affected.

use std::time::Duration;

use scitq_storage::{NoProgress, Remotes, Storage};
use scitq_tests::{Agent, Image, S3Server, Server, ServerOpts, str_field};

const CONNECT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Four reads in FASTQ form.
fn fastq(sample: &str) -> String {
    (0..4)
        .map(|i| format!("@{sample}.{i}\nACGTACGT\n+\nIIIIIIII\n"))
        .collect()
}

#[test]
fn tasks_take_inputs_from_s3_run_in_a_container_and_upload_their_results() {
    let s3 = S3Server::start(&["data", "results"]);
    let rclone = s3.rclone_section("lab");
    let storage = Storage::new(Remotes::parse(&rclone).expect("rclone section"));

    // Inputs on the S3 server: one FASTQ per sample, and a reference database.
    let local = tempfile::tempdir().unwrap();
    for sample in ["s1", "s2"] {
        std::fs::write(local.path().join(format!("{sample}.fastq")), fastq(sample)).unwrap();
    }
    std::fs::write(local.path().join("db.txt"), "refdb v1\n").unwrap();
    let rt = runtime();
    rt.block_on(async {
        for name in ["s1.fastq", "s2.fastq", "db.txt"] {
            let src = local.path().join(name).display().to_string();
            storage
                .copy(&src, &format!("lab:data/{name}"), &NoProgress)
                .await
                .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
    });

    let conf = local.path().join("rclone.conf");
    std::fs::write(&conf, &rclone).unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    let image = Image::tiny();
    let _agent = Agent::start(&server, "stager", 2, &["--docker-network", "none"]);
    c.wait_worker_online("stager", CONNECT);

    let tool = "n=$(grep -c '^@' /input/*.fastq); echo \"$n reads\" > /output/count.txt; \
                cat /resource/db.txt >> /output/count.txt; echo counted $n";
    let ids: Vec<(i64, &str)> = ["s1", "s2"]
        .into_iter()
        .map(|sample| {
            let id = c.create_sh(
                "fastq",
                tool,
                &[
                    "--container",
                    image.tag(),
                    "--input",
                    &format!("lab:data/{sample}.fastq"),
                    "--resource",
                    "lab:data/db.txt",
                    "--output",
                    &format!("lab:results/{sample}/"),
                ],
            );
            (id, sample)
        })
        .collect();
    for (id, sample) in &ids {
        let task = c.wait_task(*id, "succeeded", Duration::from_secs(120));
        assert_eq!(c.output(*id), "counted 4\n", "{task:#}");
        let counted = s3
            .get_object("results", &format!("{sample}/count.txt"))
            .unwrap_or_else(|status| panic!("results/{sample}/count.txt: HTTP {status}"));
        assert_eq!(String::from_utf8_lossy(&counted), "4 reads\nrefdb v1\n");
        let executions = c.ctl_json(["task", "executions", &id.to_string()]);
        let uploaded = executions[0]["uploaded"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(uploaded.len(), 1, "{executions:#}");
        assert!(
            str_field(&uploaded[0], "uri").ends_with(&format!("{sample}/count.txt")),
            "{executions:#}"
        );
        assert_eq!(uploaded[0]["size"], 17, "{executions:#}");
    }
}

#[test]
fn bad_data_uris_fail_the_task_as_a_download_naming_the_value() {
    let s3 = S3Server::start(&["data"]);
    let local = tempfile::tempdir().unwrap();
    let conf = local.path().join("rclone.conf");
    std::fs::write(&conf, s3.rclone_section("lab")).unwrap();
    let server = Server::start(
        ServerOpts::default()
            .arg("--rclone-config")
            .arg(&conf.display().to_string()),
    );
    let c = server.client();
    let _agent = Agent::start(&server, "careful", 2, &[]);
    c.wait_worker_online("careful", CONNECT);

    let healthy = c.create_sh("bad", "echo fine", &[]);
    // What scitqd can tell from the URI alone is refused at create (naming the bad part).
    for (uri, needle) in [
        ("nowhere:data/x.fastq", "nowhere"),
        ("s4://bucket/x", "s4"),
        ("lab:data/x.tar|explode", "explode"),
    ] {
        let out = c.ctl(["task", "create", "--input", uri, "--", "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{uri}: {stderr}"
        );
    }
    // A missing object is only found when run.
    {
        let (uri, needle) = ("lab:data/missing.fastq", "missing.fastq");
        let id = c.create_sh("bad", "echo should not run", &["--input", uri]);
        let task = c.wait_task(id, "failed", CONNECT);
        let execution = &c.ctl_json(["task", "executions", &id.to_string()])[0];
        assert_eq!(execution["failure"], "download", "{uri}: {execution:#}");
        let message = str_field(execution, "message");
        assert!(message.contains(needle), "{uri}: {message}");
        assert_eq!(
            c.output(id),
            "",
            "{uri}: the command must not run: {task:#}"
        );
    }
    // An output that cannot be written fails a run that succeeded, as an upload.
    let id = c.create_sh(
        "bad",
        "echo x > $OUTPUT/x",
        &["--output", "lab:nobucket/out/"],
    );
    c.wait_task(id, "failed", CONNECT);
    let execution = &c.ctl_json(["task", "executions", &id.to_string()])[0];
    assert_eq!(execution["failure"], "upload", "{execution:#}");
    assert!(
        str_field(execution, "message").contains("nobucket"),
        "{execution:#}"
    );

    c.wait_task(healthy, "succeeded", CONNECT);
    assert_eq!(c.output(healthy), "fine\n");
}

#[test]
fn scitqd_refuses_an_unreadable_rclone_config_naming_it_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let missing = dir.path().join("no-such-rclone.conf");
    let out = std::process::Command::new(scitq_tests::bin("scitqd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--rclone-config")
        .arg(&missing)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .expect("run scitqd");
    assert!(!out.status.success(), "{}", scitq_tests::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-rclone.conf"), "{stderr}");
    assert!(
        !data.exists(),
        "nothing is created when the config is refused"
    );
}
