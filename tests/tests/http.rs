//! HTTP beside gRPC on one port: plain HTTP/1.1 and HTTP/2 requests and grpcurl calls go to
//! the same address, in clear and over TLS (where the handshake must agree on `http/1.1` with
//! a client that offers nothing else).

use std::path::Path;

use reqwest::{Client, StatusCode, Version};
use scitq_tests::{Grpcurl, Server, ServerOpts, describe, make_certs};

/// What a GET returned: status, protocol version, body.
fn get(client: &Client, url: &str) -> (StatusCode, Version, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let response = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
        let (status, version) = (response.status(), response.version());
        let body = response.text().await.expect("response body");
        (status, version, body)
    })
}

fn client(build: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder) -> Client {
    build(Client::builder()).build().expect("http client")
}

/// The services grpcurl lists through reflection, on the same port.
fn assert_grpc_lists_services(mut grpcurl: std::process::Command) {
    let out = grpcurl.output().expect("run grpcurl");
    assert!(out.status.success(), "grpcurl list: {}", describe(&out));
    let services = String::from_utf8_lossy(&out.stdout);
    assert!(
        services.lines().any(|l| l.trim() == "scitq.v1.TaskService"),
        "grpcurl list lacks TaskService: {services}"
    );
}

#[test]
fn http_1_1_http_2_and_grpc_share_the_port_in_clear() {
    let server = Server::start(ServerOpts::default());
    let base = format!("http://{}", server.addr());

    let http1 = client(|b| b.http1_only());
    let (status, version, body) = get(&http1, &format!("{base}/healthz"));
    assert_eq!(
        (status, version, body.as_str()),
        (StatusCode::OK, Version::HTTP_11, "ok\n")
    );
    let (status, _, _) = get(&http1, &format!("{base}/no/such/page"));
    assert_eq!(status, StatusCode::NOT_FOUND);

    let http2 = client(|b| b.http2_prior_knowledge());
    let (status, version, body) = get(&http2, &format!("{base}/healthz"));
    assert_eq!(
        (status, version, body.as_str()),
        (StatusCode::OK, Version::HTTP_2, "ok\n")
    );

    // A gRPC call to a service nobody serves still gets the status gRPC clients read.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let response = runtime
        .block_on(
            http2
                .post(format!("{base}/scitq.v1.NoSuchService/Call"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .send(),
        )
        .expect("gRPC POST");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("12"),
        "{:?}",
        response.headers()
    );

    let grpcurl = Grpcurl::find();
    assert_grpc_lists_services(grpcurl.command(
        &server.addr(),
        Some(server.admin_token()),
        &[],
        &["list"],
    ));
}

#[test]
fn http_1_1_http_2_and_grpc_share_the_port_over_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path());
    let path = |name: &str| certs.path().join(name).display().to_string();
    let server = Server::start(
        ServerOpts::default()
            .arg("--tls-cert")
            .arg(&path("cert.pem"))
            .arg("--tls-key")
            .arg(&path("key.pem")),
    );
    let base = format!("https://{}", server.addr());
    let ca = reqwest::Certificate::from_pem(
        &std::fs::read(certs.path().join("ca.pem")).expect("read ca.pem"),
    )
    .expect("parse ca.pem");

    // Offers only http/1.1 in ALPN: the handshake must settle on it.
    let http1 = client(|b| b.tls_certs_only([ca.clone()]).http1_only());
    let (status, version, body) = get(&http1, &format!("{base}/healthz"));
    assert_eq!(
        (status, version, body.as_str()),
        (StatusCode::OK, Version::HTTP_11, "ok\n")
    );

    // Offers h2 and http/1.1, as browsers do: h2 is chosen.
    let any = client(|b| b.tls_certs_only([ca.clone()]));
    let (status, version, body) = get(&any, &format!("{base}/healthz"));
    assert_eq!(
        (status, version, body.as_str()),
        (StatusCode::OK, Version::HTTP_2, "ok\n")
    );

    // A client that does not trust the CA is refused at the handshake.
    let untrusted = client(|b| b.tls_certs_only([]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let refused = runtime.block_on(untrusted.get(format!("{base}/healthz")).send());
    assert!(refused.is_err(), "{refused:?}");

    let grpcurl = Grpcurl::find();
    assert_grpc_lists_services(grpcurl.command_tls(
        Path::new(&path("ca.pem")),
        &server.addr(),
        Some(server.admin_token()),
        &[],
        &["list"],
    ));
}
