//! scitq-storage against real servers on loopback: moto (S3), pyftpdlib (FTP), Python's
//! http.server, and the local file system; then `scitqctl fetch` through the real binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use scitq_storage::{
    EnvDefaults, FetchOutcome, NoProgress, Progress, Remotes, ResourceCache, Storage, StorageError,
    link_into,
};
use scitq_tests::{
    FTP_PASSWORD, FTP_USER, FtpServer, HttpServer, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY,
    S3Server, read_tree, write_tree,
};

/// Storage pointed at `s3` through the environment defaults (as bare `s3://` URIs use).
fn s3_storage(s3: &S3Server, remotes: Remotes) -> Storage {
    let env = EnvDefaults {
        s3_endpoint: Some(s3.endpoint()),
        s3_region: Some(S3_REGION.to_string()),
        s3_access_key_id: Some(S3_ACCESS_KEY.to_string()),
        s3_secret_access_key: Some(S3_SECRET_KEY.to_string()),
        ..EnvDefaults::default()
    };
    Storage::with_env(remotes, env)
}

/// Deterministic, incompressible-enough bytes.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A local tree: relative path → content.
fn sample_tree() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        ("a.txt", b"alpha\n".to_vec()),
        ("sub/b.bin", data(300_000, 7)),
        ("sub/deeper/c.txt", b"".to_vec()),
    ])
}

fn owned(tree: &BTreeMap<&str, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    tree.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *content).unwrap();
    }
    gz(&builder.into_inner().unwrap())
}

/// Counts bytes and files, to check the progress hook sees the whole transfer.
#[derive(Default)]
struct Counter {
    planned: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    finished: std::sync::atomic::AtomicU64,
}

impl Progress for Counter {
    fn plan(&self, _files: u64, bytes: u64) {
        self.planned
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn finish(&self, _name: &str) {
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_folder_round_trip_list_and_delete() {
    let s3 = S3Server::start(&["data"]);
    let storage = s3_storage(&s3, Remotes::empty());
    let local = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    write_tree(&local.path().join("out"), &tree);

    let counter = Counter::default();
    let uploaded = storage
        .upload_dir(&local.path().join("out"), "s3://data/run1/", &counter)
        .await
        .unwrap();
    let uris: Vec<_> = uploaded.iter().map(|u| (u.uri.as_str(), u.size)).collect();
    assert_eq!(
        uris,
        [
            ("s3://data/run1/a.txt", 6),
            ("s3://data/run1/sub/b.bin", 300_000),
            ("s3://data/run1/sub/deeper/c.txt", 0)
        ]
    );
    let total = 300_006;
    assert_eq!(
        counter.bytes.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
    assert_eq!(
        counter.planned.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
    assert_eq!(
        counter.finished.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // The server holds the bytes (read back without scitq-storage).
    assert_eq!(
        s3.get_object("data", "run1/sub/b.bin").unwrap(),
        tree["sub/b.bin"]
    );

    let listed = storage.list("s3://data/run1", true).await.unwrap();
    let paths: Vec<_> = listed.iter().map(|e| (e.path.as_str(), e.size)).collect();
    assert_eq!(
        paths,
        [
            ("a.txt", 6),
            ("sub/b.bin", 300_000),
            ("sub/deeper/c.txt", 0)
        ]
    );
    assert!(listed[0].etag.is_some() && listed[0].last_modified.is_some());
    let shallow = storage.list("s3://data/run1/", false).await.unwrap();
    let names: Vec<_> = shallow
        .iter()
        .map(|e| (e.path.as_str(), e.is_dir))
        .collect();
    assert_eq!(names, [("a.txt", false), ("sub/", true)]);

    // A folder without a trailing slash lands under its own name, with one: its content.
    let down = tempfile::tempdir().unwrap();
    let paths = storage
        .download("s3://data/run1", down.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(paths, [down.path().join("run1")]);
    assert_eq!(read_tree(&down.path().join("run1")), owned(&tree));
    let flat = tempfile::tempdir().unwrap();
    storage
        .download("s3://data/run1/sub/", flat.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        read_tree(flat.path()).keys().collect::<Vec<_>>(),
        ["b.bin", "deeper/c.txt"]
    );

    assert_eq!(storage.delete("s3://data/run1").await.unwrap(), 3);
    let err = storage.list("s3://data/run1", true).await.unwrap_err();
    assert_eq!(err.to_string(), "s3://data/run1: no such object");
    assert_eq!(s3.get_object("data", "run1/a.txt"), Err(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_file_streams_in_parts_and_verifies() {
    let s3 = S3Server::start(&["big"]);
    let storage = s3_storage(&s3, Remotes::empty());
    let dir = tempfile::tempdir().unwrap();
    // Bigger than two chunks: a multipart upload and concurrent ranged reads.
    let content = data(20 * 1024 * 1024 + 123, 3);
    std::fs::write(dir.path().join("reads.fq"), &content).unwrap();
    let report = storage
        .copy(
            dir.path().join("reads.fq").to_str().unwrap(),
            "s3://big/in/",
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(report.copied[0].uri, "s3://big/in/reads.fq");
    assert_eq!(report.copied[0].size, content.len() as u64);
    let back = tempfile::tempdir().unwrap();
    let paths = storage
        .download("s3://big/in/reads.fq", back.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(paths, [back.path().join("reads.fq")]);
    assert!(
        std::fs::read(&paths[0]).unwrap() == content,
        "content differs after the round trip"
    );
    // A single-part object's etag is its md5: the download checks it.
    s3.put_object("big", "small.txt", b"checked by md5");
    storage
        .download("s3://big/small.txt", back.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(back.path().join("small.txt")).unwrap(),
        b"checked by md5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_through_an_rclone_remote_and_actions() {
    let s3 = S3Server::start(&["refs"]);
    let remotes = Remotes::parse(&s3.rclone_section("lab")).unwrap();
    // No environment defaults: everything comes from the remote.
    let storage = Storage::with_env(remotes, EnvDefaults::default());
    s3.put_object(
        "refs",
        "db.tar.gz",
        &tar_gz(&[("db/index.txt", b"idx"), ("db/seq.fa", b">x\nACGT\n")]),
    );
    s3.put_object("refs", "reads.fq.gz", &gz(b"@r\nACGT\n+\nIIII\n"));

    let input = tempfile::tempdir().unwrap();
    let paths = storage
        .download("lab:refs/db.tar.gz|untar|mv:ref", input.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(paths, [input.path().join("ref/db")]);
    assert_eq!(
        std::fs::read(input.path().join("ref/db/seq.fa")).unwrap(),
        b">x\nACGT\n"
    );
    assert!(
        !input.path().join("db.tar.gz").exists(),
        "the archive is removed once extracted"
    );

    let paths = storage
        .download("lab://refs/reads.fq.gz|gunzip", input.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(paths, [input.path().join("reads.fq")]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), b"@r\nACGT\n+\nIIII\n");

    // An action that does not fit the file fails naming both.
    let err = storage
        .download("lab:refs/reads.fq.gz|unzip", input.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("action unzip on "), "{err}");
    assert!(err.to_string().contains("reads.fq.gz"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_copies_what_differs_and_deletes_only_when_asked() {
    let s3 = S3Server::start(&["sync"]);
    let storage = s3_storage(&s3, Remotes::empty());
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &sample_tree());
    let src_uri = format!("{}/", src.path().display());

    let first = storage
        .sync(&src_uri, "s3://sync/mirror", false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(first.copied.len(), 3);
    let again = storage
        .sync(&src_uri, "s3://sync/mirror", false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (again.copied.len(), again.skipped),
        (0, 3),
        "nothing changed: nothing copied"
    );

    std::fs::write(src.path().join("a.txt"), b"alpha, longer now\n").unwrap();
    std::fs::remove_file(src.path().join("sub/deeper/c.txt")).unwrap();
    let changed = storage
        .sync(&src_uri, "s3://sync/mirror", false, &NoProgress)
        .await
        .unwrap();
    let copied: Vec<_> = changed.copied.iter().map(|c| c.uri.as_str()).collect();
    assert_eq!(copied, ["s3://sync/mirror/a.txt"]);
    assert!(changed.deleted.is_empty());
    assert_eq!(
        s3.get_object("sync", "mirror/sub/deeper/c.txt"),
        Ok(Vec::new()),
        "kept without the flag"
    );

    let pruned = storage
        .sync(&src_uri, "s3://sync/mirror", true, &NoProgress)
        .await
        .unwrap();
    assert_eq!(pruned.deleted, ["s3://sync/mirror/sub/deeper/c.txt"]);
    assert_eq!(s3.get_object("sync", "mirror/sub/deeper/c.txt"), Err(404));
    assert_eq!(
        s3.get_object("sync", "mirror/a.txt").unwrap(),
        b"alpha, longer now\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_round_trip_remote_and_denied_login() {
    let ftp = FtpServer::start();
    let storage = Storage::with_env(Remotes::empty(), EnvDefaults::default());
    let local = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    write_tree(local.path(), &tree);
    let uploaded = storage
        .upload_dir(local.path(), &ftp.uri("results/"), &NoProgress)
        .await
        .unwrap();
    assert_eq!(uploaded.len(), 3);
    // The bytes are on the server's disk.
    assert_eq!(
        std::fs::read(ftp.local("results/sub/b.bin")).unwrap(),
        tree["sub/b.bin"]
    );

    let down = tempfile::tempdir().unwrap();
    storage
        .download(&ftp.uri("results/"), down.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(read_tree(down.path()), owned(&tree));

    // The same server through an rclone remote whose password rclone itself obscured.
    let obscured = rclone_obscure(FTP_PASSWORD);
    let conf = format!(
        "[box]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {FTP_USER}\npass = {obscured}\n",
        ftp.port()
    );
    let storage = Storage::with_env(Remotes::parse(&conf).unwrap(), EnvDefaults::default());
    let listed = storage.list("box:results/sub", true).await.unwrap();
    let paths: Vec<_> = listed.iter().map(|e| (e.path.as_str(), e.size)).collect();
    assert_eq!(paths, [("b.bin", 300_000), ("deeper/c.txt", 0)]);

    let bad = format!(
        "ftp://{FTP_USER}:wrong@127.0.0.1:{}/results/a.txt",
        ftp.port()
    );
    let err = storage
        .download(&bad, down.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Denied { .. }), "{err:?}");
    let shown = format!(
        "ftp://{FTP_USER}@127.0.0.1:{}/results/a.txt: access denied",
        ftp.port()
    );
    assert!(err.to_string().starts_with(&shown), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password is not printed: {err}"
    );
}

fn rclone() -> PathBuf {
    scitq_tests::find_tool("RCLONE", "rclone")
}

fn rclone_obscure(clear: &str) -> String {
    let out = Command::new(rclone())
        .args(["obscure", clear])
        .output()
        .unwrap();
    assert!(out.status.success(), "rclone obscure: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_download_and_missing_object() {
    let http = HttpServer::start();
    std::fs::write(http.root().join("genome.fa.gz"), gz(b">chr1\nACGT\n")).unwrap();
    let storage = Storage::with_env(Remotes::empty(), EnvDefaults::default());
    let dest = tempfile::tempdir().unwrap();
    let paths = storage
        .download(
            &format!("{}|gunzip", http.url("genome.fa.gz")),
            dest.path(),
            &NoProgress,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), b">chr1\nACGT\n");

    let missing = http.url("nope.fa");
    let err = storage
        .download(&missing, dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("{missing}: no such object"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_uris_copy_and_unzip() {
    let storage = Storage::with_env(Remotes::empty(), EnvDefaults::default());
    let src = tempfile::tempdir().unwrap();
    let zip_path = src.path().join("bundle.zip");
    let status = Command::new("python3")
        .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], 'w'); z.writestr('x/y.txt', 'zipped'); z.close()"])
        .arg(&zip_path)
        .status()
        .unwrap();
    assert!(status.success());
    let dest = tempfile::tempdir().unwrap();
    let uri = format!("file://{}|unzip|mv:unpacked", zip_path.display());
    let paths = storage
        .download(&uri, dest.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(paths, [dest.path().join("unpacked/x")]);
    assert_eq!(
        std::fs::read(dest.path().join("unpacked/x/y.txt")).unwrap(),
        b"zipped"
    );
    assert!(zip_path.exists(), "the source is untouched");

    let copy_to = format!("file://{}/copied.zip", dest.path().display());
    let report = storage
        .copy(zip_path.to_str().unwrap(), &copy_to, &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.copied[0].uri, copy_to);
    assert_eq!(
        std::fs::read(dest.path().join("copied.zip")).unwrap(),
        std::fs::read(&zip_path).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_name_the_value() {
    let s3 = S3Server::start(&["data"]);
    let storage = s3_storage(&s3, Remotes::parse("[lab]\ntype = s3\n").unwrap());
    let dest = tempfile::tempdir().unwrap();
    let cases = [
        (
            "s4://data/x",
            "invalid uri \"s4://data/x\": unknown scheme s4",
        ),
        (
            "nowhere:data/x",
            "invalid uri \"nowhere:data/x\": unknown rclone remote nowhere",
        ),
        (
            "s3://Bad_Bucket/x",
            "invalid uri \"s3://Bad_Bucket/x\": invalid bucket name Bad_Bucket",
        ),
        ("ftp:///x", "invalid uri \"ftp:///x\": missing host"),
        (
            "s3://data/missing.txt",
            "s3://data/missing.txt: no such object",
        ),
        (
            "s3://nobucket/x",
            "s3://nobucket/x: no such bucket or container",
        ),
        (
            "s3://data/x|explode",
            "invalid action \"explode\" in \"s3://data/x|explode\": unknown action (known: gunzip, untar, unzip, mv:SUBDIR)",
        ),
        (
            "s3://data/x|mv:../out",
            "invalid action \"mv:../out\" in \"s3://data/x|mv:../out\": the folder must stay inside the destination (no ..)",
        ),
    ];
    for (uri, expected) in cases {
        let err = storage
            .download(uri, dest.path(), &NoProgress)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), expected, "for {uri}");
    }
    // Validation happens before any transfer: nothing was written.
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_cache_refetches_on_change_and_shares_one_download() {
    let s3 = S3Server::start(&["res"]);
    let storage = Arc::new(s3_storage(&s3, Remotes::empty()));
    s3.put_object("res", "db/index.txt", b"version one");
    s3.put_object("res", "db/part/seq.fa", b">a\nAC\n");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(ResourceCache::new(cache_dir.path()).unwrap());

    // Four tasks want the resource at once: one download, the others wait for it.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (cache, storage) = (cache.clone(), storage.clone());
        handles.push(tokio::spawn(async move {
            cache
                .fetch_with_outcome(&storage, "s3://res/db/")
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }
    let downloads = outcomes
        .iter()
        .filter(|(_, o)| *o == FetchOutcome::Downloaded)
        .count();
    assert_eq!(downloads, 1, "{outcomes:?}");
    let cached = outcomes[0].0.clone();
    assert!(outcomes.iter().all(|(p, _)| *p == cached));

    let task1 = tempfile::tempdir().unwrap();
    let linked = link_into(&cached, task1.path()).await.unwrap();
    assert_eq!(
        linked,
        [task1.path().join("index.txt"), task1.path().join("part")]
    );
    let in_task = std::fs::metadata(task1.path().join("index.txt")).unwrap();
    let in_cache = std::fs::metadata(cached.join("index.txt")).unwrap();
    assert_eq!(in_task.ino(), in_cache.ino(), "hard link, not a copy");
    assert_eq!(in_task.mode() & 0o222, 0, "shared files are read-only");
    assert_eq!(
        std::fs::read(task1.path().join("part/seq.fa")).unwrap(),
        b">a\nAC\n"
    );

    // Unchanged remote: no download.
    let (_, outcome) = cache
        .fetch_with_outcome(&storage, "s3://res/db/")
        .await
        .unwrap();
    assert_eq!(outcome, FetchOutcome::Hit);

    // Changed remote (a different size): downloaded again; the first task keeps its version.
    s3.put_object("res", "db/index.txt", b"version two, longer");
    let (fresh, outcome) = cache
        .fetch_with_outcome(&storage, "s3://res/db/")
        .await
        .unwrap();
    assert_eq!(outcome, FetchOutcome::Downloaded);
    assert_eq!(
        std::fs::read(fresh.join("index.txt")).unwrap(),
        b"version two, longer"
    );
    assert_eq!(
        std::fs::read(task1.path().join("index.txt")).unwrap(),
        b"version one"
    );

    // A new cache over the same dir (an agent restart) reuses what is there.
    let reopened = ResourceCache::new(cache_dir.path()).unwrap();
    let (again, outcome) = reopened
        .fetch_with_outcome(&storage, "s3://res/db/")
        .await
        .unwrap();
    assert_eq!((again, outcome), (fresh, FetchOutcome::Hit));

    let err = cache.fetch(&storage, "s3://res/absent/").await.unwrap_err();
    assert_eq!(err.to_string(), "s3://res/absent/: no such object");
}

/// Runs `scitqctl ARGS` with `env`; returns (exit code, stdout, stderr).
fn scitqctl(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(scitq_tests::bin("scitqctl"));
    cmd.args(args).env_remove("SCITQ_RCLONE_CONFIG");
    // No rclone.conf from the machine's user: only what the test gives.
    let home = tempfile::tempdir().unwrap();
    cmd.env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scitqctl_fetch_commands_through_the_binary() {
    let s3 = S3Server::start(&["cli"]);
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("rclone.conf");
    std::fs::write(&conf, s3.rclone_section("lab")).unwrap();
    let conf_env = [("SCITQ_RCLONE_CONFIG", conf.display().to_string())];
    let src = work.path().join("src");
    write_tree(&src, &sample_tree());
    let src_arg = format!("{}/", src.display());

    let (code, stdout, stderr) = scitqctl(&["fetch", "copy", &src_arg, "lab:cli/copy/"], &conf_env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("lab:cli/copy/sub/b.bin"), "{stdout}");
    assert_eq!(
        s3.get_object("cli", "copy/sub/b.bin").unwrap(),
        sample_tree()["sub/b.bin"]
    );

    // Bare s3:// URIs take the endpoint and keys from the AWS variables.
    let aws: Vec<(&str, String)> = s3.env();
    let (code, stdout, stderr) =
        scitqctl(&["--json", "fetch", "list", "-R", "s3://cli/copy"], &aws);
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sizes: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("a.txt".to_string(), 6),
            ("sub/b.bin".to_string(), 300_000),
            ("sub/deeper/c.txt".to_string(), 0)
        ]
    );

    let (code, _, stderr) = scitqctl(
        &["fetch", "sync", &src_arg, "--delete", "lab:cli/copy"],
        &conf_env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("copied 0 file(s), 0 bytes; 3 unchanged; 0 deleted"),
        "{stderr}"
    );

    let dest = work.path().join("dest");
    let (code, _, stderr) = scitqctl(
        &[
            "fetch",
            "copy",
            "lab:cli/copy/a.txt",
            &dest.display().to_string(),
        ],
        &conf_env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"alpha\n");

    let (code, _, stderr) = scitqctl(&["fetch", "delete", "lab:cli/copy"], &conf_env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(s3.get_object("cli", "copy/a.txt"), Err(404));

    // Bad input: a clear line naming the value, and a non-zero exit.
    let missing_conf = work.path().join("absent.conf").display().to_string();
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["fetch", "list", "s4://x/y"],
            2,
            format!("error: invalid uri \"s4://x/y\": unknown scheme s4, and no rclone remote s4 (not in {})", conf.display()),
        ),
        (
            vec!["fetch", "list", "nowhere:x"],
            2,
            format!("error: invalid uri \"nowhere:x\": unknown rclone remote nowhere (not in {})", conf.display()),
        ),
        (vec!["fetch", "list", "lab:cli/none.txt"], 1, "error: lab:cli/none.txt: no such object".into()),
        (
            vec!["fetch", "copy", "lab:cli/x|unpack", "/tmp/"],
            2,
            "error: invalid action \"unpack\" in \"lab:cli/x|unpack\": unknown action (known: gunzip, untar, unzip, mv:SUBDIR)".into(),
        ),
        (
            vec!["fetch", "--rclone-config", &missing_conf, "list", "lab:cli"],
            2,
            format!("error: rclone config: {missing_conf}: No such file or directory (os error 2)"),
        ),
    ];
    for (args, expected_code, expected) in cases {
        let (code, _, stderr) = scitqctl(&args, &conf_env);
        assert_eq!(code, expected_code, "{args:?}: {stderr}");
        assert_eq!(stderr.trim(), expected, "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fastq_resolves_through_a_recorded_ena_report() {
    use md5::Digest;
    let http = HttpServer::start();
    let (r1, r2) = (gz(b"@r1/1\nACGT\n+\nIIII\n"), gz(b"@r1/2\nTGCA\n+\nIIII\n"));
    let dir = http.root().join("vol1/fastq/ERR001");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ERR001_1.fastq.gz"), &r1).unwrap();
    std::fs::write(dir.join("ERR001_2.fastq.gz"), &r2).unwrap();
    let md5 = |b: &[u8]| hex::encode(md5::Md5::digest(b));
    let host = format!("127.0.0.1:{}", http.port());
    // The shape of ENA's answer (TSV, scheme-less locations, `;` between paired files).
    let report = |second_md5: &str| {
        format!(
            "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\n\
             ERR001\t{host}/vol1/fastq/ERR001/ERR001_1.fastq.gz;{host}/vol1/fastq/ERR001/ERR001_2.fastq.gz\t{};{second_md5}\t{};{}\n",
            md5(&r1),
            r1.len(),
            r2.len()
        )
    };
    std::fs::write(http.root().join("filereport"), report(&md5(&r2))).unwrap();
    std::fs::write(
        http.root().join("badreport"),
        report("0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let env = |report: &str| EnvDefaults {
        ena_url: Some(http.url(report)),
        ena_fastq_scheme: Some("http".to_string()),
        ..EnvDefaults::default()
    };

    let storage = Storage::with_env(Remotes::empty(), env("filereport"));
    let dest = tempfile::tempdir().unwrap();
    let paths = storage
        .download("run+fastq://ERR001|gunzip", dest.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        paths,
        [
            dest.path().join("ERR001_1.fastq"),
            dest.path().join("ERR001_2.fastq")
        ]
    );
    assert_eq!(std::fs::read(&paths[1]).unwrap(), b"@r1/2\nTGCA\n+\nIIII\n");

    let err = storage
        .download("run+fastq://ERR999", dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "run+fastq://ERR999: no such object");
    let err = storage
        .download("run+fastq://PRJ1", dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid uri \"run+fastq://PRJ1\": not a run accession (SRR, ERR or DRR and digits)"
    );

    let storage = Storage::with_env(Remotes::empty(), env("badreport"));
    let err = storage
        .download("run+fastq://ERR001", dest.path(), &NoProgress)
        .await
        .unwrap_err();
    let expected = format!(
        "http://{host}/vol1/fastq/ERR001/ERR001_2.fastq.gz: md5 mismatch after transfer: expected 0123456789abcdef0123456789abcdef, got {}",
        md5(&r2)
    );
    assert_eq!(err.to_string(), expected);
    let bad_dest = tempfile::tempdir().unwrap();
    let err = storage
        .download("run+fastq://ERR001", bad_dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::ChecksumMismatch { .. }));
    let left: Vec<_> = std::fs::read_dir(bad_dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["ERR001_1.fastq.gz"],
        "the file that failed its md5 is removed"
    );

    let storage = Storage::with_env(Remotes::empty(), env("no-such-report"));
    let err = storage
        .download("run+fastq://ERR001", dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("run+fastq://ERR001: ENA: file report answered 404"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_object_that_arrives_unlike_its_etag_fails_the_download() {
    let s3 = S3Server::start(&["seal"]);
    let content = b"sealed payload: ORIGINAL bytes".to_vec();
    s3.put_object("seal", "obj.txt", &content);
    // The storage reaches moto through a proxy that damages the body, not the headers: the
    // object arrives with moto's etag (its md5) over bytes that do not match it.
    let proxy = scitq_tests::Proxy::start(&format!("127.0.0.1:{}", s3.port()));
    proxy.rewrite_replies(b"ORIGINAL", b"DAMAGED!");
    let env = EnvDefaults {
        s3_endpoint: Some(format!("http://{}", proxy.addr())),
        s3_region: Some(S3_REGION.to_string()),
        s3_access_key_id: Some(S3_ACCESS_KEY.to_string()),
        s3_secret_access_key: Some(S3_SECRET_KEY.to_string()),
        ..EnvDefaults::default()
    };
    let storage = Storage::with_env(Remotes::empty(), env);
    let dest = tempfile::tempdir().unwrap();
    let err = storage
        .download("s3://seal/obj.txt", dest.path(), &NoProgress)
        .await
        .expect_err("a body unlike its etag must fail the download");
    assert!(
        matches!(err, StorageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("s3://seal/obj.txt"), "{err}");
    assert!(
        !dest.path().join("obj.txt").exists(),
        "the damaged file is not left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ena_file_that_arrives_damaged_is_fetched_once_more_and_no_more() {
    use md5::Digest;
    let http = HttpServer::start();
    let reads = gz(b"@r1/1\nACGT\n+\nIIII\n");
    let dir = http.root().join("vol1/ERR007");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ERR007_1.fastq.gz"), &reads).unwrap();
    let path = "/vol1/ERR007/ERR007_1.fastq.gz";
    let host = format!("127.0.0.1:{}", http.port());
    let report = |md5: &str| {
        format!(
            "run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes\n\
             ERR007\t{host}{path}\t{md5}\t{}\n",
            reads.len()
        )
    };
    let good = hex::encode(md5::Md5::digest(&reads));
    std::fs::write(http.root().join("filereport"), report(&good)).unwrap();
    std::fs::write(
        http.root().join("badreport"),
        report("0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let storage = |report: &str| {
        let env = EnvDefaults {
            ena_url: Some(http.url(report)),
            ena_fastq_scheme: Some("http".to_string()),
            ..EnvDefaults::default()
        };
        Storage::with_env(Remotes::empty(), env)
    };

    // Damaged on the first GET (same size, other bytes), whole on the second.
    let mut damaged = reads.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    http.damage_once(path, &damaged);
    let dest = tempfile::tempdir().unwrap();
    let paths = storage("filereport")
        .download("run+fastq://ERR007", dest.path(), &NoProgress)
        .await
        .expect("the second fetch is whole");
    assert_eq!(std::fs::read(&paths[0]).unwrap(), reads);
    assert_eq!(http.gets(path), 2, "fetched once more after the damage");

    // Always damaged (ENA's md5 is not the file's): two fetches, then the error.
    let dest = tempfile::tempdir().unwrap();
    let err = storage("badreport")
        .download("run+fastq://ERR007", dest.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        http.gets(path),
        4,
        "a damaged file is fetched twice, not more"
    );
}
