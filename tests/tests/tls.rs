//! TLS end to end: scitqd with a certificate signed by a test CA, an agent and scitqctl that
//! trust that CA (through SSL_CERT_FILE, as any rustls native-roots client does), and the
//! client config pointing at `https://`.

use std::process::Command;
use std::time::Duration;

use scitq_tests::{Proc, Server, ServerOpts, bin, describe, make_certs, output_within};

/// How long one scitqctl command may take (`launch` runs a task to its end).
const RUN: Duration = Duration::from_secs(120);

#[test]
fn a_task_runs_over_tls_and_an_untrusted_certificate_is_refused() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path());
    let cert = certs.path().join("cert.pem").display().to_string();
    let key = certs.path().join("key.pem").display().to_string();
    let ca = certs.path().join("ca.pem");

    let server = Server::start(
        ServerOpts::default()
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key),
    );
    let config = std::fs::read_to_string(server.home().join(".config/scitq/config.toml"))
        .expect("client config");
    assert!(
        config.contains(&format!("server = \"https://{}\"", server.addr())),
        "the client config should point at https://: {config}"
    );

    // The agent and scitqctl find server and tokens in the client config, and trust the CA.
    let work = certs.path().join("work");
    let mut agent_cmd = Command::new(bin("scitq-agent"));
    agent_cmd
        .args([
            "--name",
            "tls-agent",
            "--concurrency",
            "1",
            "--reconnect-max",
            "1s",
        ])
        .arg("--work-dir")
        .arg(&work)
        .env("HOME", server.home())
        .env("XDG_CONFIG_HOME", server.home().join(".config"))
        .env("SSL_CERT_FILE", &ca);
    let _agent = Proc::spawn(
        "scitq-agent tls",
        agent_cmd,
        &certs.path().join("agent.log"),
    );

    let mut launch = server.client().bare_command();
    launch
        .args(["launch", "echo", "over tls"])
        .env("SSL_CERT_FILE", &ca);
    let out = output_within(&mut launch, RUN);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over tls\n");

    // Without the CA, the certificate is not trusted and nothing is sent.
    let mut untrusted = server.client().bare_command();
    untrusted
        .args(["task", "list"])
        .env("SSL_CERT_FILE", certs.path().join("cert.pem"));
    let out = output_within(&mut untrusted, RUN);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        describe(&out)
    );
}
