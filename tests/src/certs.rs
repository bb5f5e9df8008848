//! Test certificates: a CA and a server certificate for 127.0.0.1 and localhost (and more
//! names when asked) signed by it.

use std::path::Path;
use std::process::Command;

use crate::describe;

/// Writes `ca.pem`, `cert.pem` and `key.pem` (and openssl's leftovers) in `dir`: a CA and a
/// server certificate for 127.0.0.1 and localhost signed by it, made with openssl.
pub fn make_certs(dir: &Path) {
    make_certs_for(dir, &[]);
}

/// Like [`make_certs`], the certificate also valid for the DNS names `names` (e.g. a
/// container's name, which other containers on its network reach it by).
pub fn make_certs_for(dir: &Path, names: &[&str]) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", describe(&out));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=scitq test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=localhost",
    ]);
    let mut alt_names = "IP:127.0.0.1,DNS:localhost".to_owned();
    for name in names {
        alt_names.push_str(&format!(",DNS:{name}"));
    }
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={alt_names}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("write ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
