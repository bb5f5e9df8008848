//! Parsing of every URI form and rclone remote type, and the errors naming the bad value.

use super::*;

fn parse(raw: &str) -> Result<Location> {
    let remotes = Remotes::parse(
        "[mys3]\ntype = s3\nendpoint = 127.0.0.1:9000\nregion = eu\naccess_key_id = AK\nsecret_access_key = SK\n\
         [box]\ntype = ftp\nhost = ftp.example.org\nuser = bob\n\
         [disk]\ntype = local\n\
         [gd]\ntype = drive\n",
    )
    .unwrap();
    parse_location(raw, &remotes, &EnvDefaults::default())
}

#[test]
fn s3_bucket_and_key() {
    let loc = parse("s3://data/run1/a.fastq").unwrap();
    assert!(matches!(&loc.service, Service::S3 { bucket, .. } if bucket == "data"));
    assert_eq!(loc.path, "run1/a.fastq");
    assert_eq!(loc.uri(), "s3://data/run1/a.fastq");
    assert_eq!(loc.file_name(), Some("a.fastq"));
    assert!(!loc.is_folder_syntax());
    assert!(parse("s3://data/run1/").unwrap().is_folder_syntax());
}

#[test]
fn a_remote_wins_over_the_built_in_scheme_of_its_name() {
    let remotes = Remotes::parse(
        "[s3]\ntype = s3\nendpoint = http://127.0.0.1:9000\naccess_key_id = AK\n\
         [azure]\ntype = s3\nendpoint = http://127.0.0.1:9001\n",
    )
    .unwrap();
    let env = EnvDefaults {
        s3_endpoint: Some("https://aws.example".into()),
        azure_account: Some("acct".into()),
        ..Default::default()
    };
    for (raw, endpoint) in [
        ("s3://bkt/k/x", "http://127.0.0.1:9000"),
        ("s3:bkt/k/x", "http://127.0.0.1:9000"),
        ("azure://bkt/k/x", "http://127.0.0.1:9001"),
    ] {
        let loc = parse_location(raw, &remotes, &env).unwrap();
        assert!(
            matches!(&loc.service, Service::S3 { bucket, endpoint: Some(e), .. }
                if bucket == "bkt" && e == endpoint),
            "{raw}: {loc:?}"
        );
        assert_eq!(loc.path, "k/x");
        assert_eq!(loc.uri(), raw, "listings print URIs as the user wrote them");
    }
    // Without a remote of that name, the built-in scheme takes the environment's settings.
    let loc = parse_location("s3://bkt/k", &Remotes::empty(), &env).unwrap();
    assert!(
        matches!(&loc.service, Service::S3 { endpoint: Some(e), access_key_id: None, .. }
            if e == "https://aws.example"),
        "{loc:?}"
    );
    let loc = parse_location("az://bkt/k", &remotes, &env).unwrap();
    assert!(matches!(loc.service, Service::Azblob { .. }), "{loc:?}");
}

#[test]
fn s3_bad_buckets_are_named() {
    let err = parse("s3:///x").unwrap_err().to_string();
    assert_eq!(err, "invalid uri \"s3:///x\": missing bucket name");
    let err = parse("s3://Bad_Bucket/x").unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid uri \"s3://Bad_Bucket/x\": invalid bucket name Bad_Bucket"
    );
}

#[test]
fn ftp_with_credentials_and_port() {
    let loc = parse("ftp://u%40x:p%3Aw@127.0.0.1:2121/dir/f.txt").unwrap();
    assert_eq!(
        loc.service,
        Service::Ftp {
            endpoint: "ftp://127.0.0.1:2121".into(),
            user: Some("u@x".into()),
            password: Some("p:w".into()),
        }
    );
    assert_eq!(loc.path, "dir/f.txt");
    // The password never appears in printed URIs.
    assert_eq!(loc.uri(), "ftp://u@x@127.0.0.1:2121/dir/f.txt");
}

#[test]
fn http_and_file() {
    let loc = parse("https://example.org:8443/a/b%20c.gz").unwrap();
    assert_eq!(
        loc.service,
        Service::Http {
            endpoint: "https://example.org:8443".into()
        }
    );
    assert_eq!(loc.path, "a/b c.gz");
    let loc = parse("file:///tmp/x/").unwrap();
    assert_eq!(loc.service, Service::Fs);
    assert_eq!(loc.local_path().unwrap(), Path::new("/tmp/x/"));
    let err = parse("file://relative/x").unwrap_err().to_string();
    assert!(err.contains("file:///path"), "{err}");
}

#[test]
fn bare_paths_are_local() {
    let loc = parse("/data/in").unwrap();
    assert_eq!(loc.uri(), "file:///data/in");
    let loc = parse("rel/dir/").unwrap();
    assert!(loc.uri().starts_with("file:///") && loc.uri().ends_with("rel/dir/"));
}

#[test]
fn remotes_both_spellings() {
    for raw in ["mys3:bkt/k/x", "mys3://bkt/k/x"] {
        let loc = parse(raw).unwrap();
        assert_eq!(
            loc.service,
            Service::S3 {
                bucket: "bkt".into(),
                endpoint: Some("https://127.0.0.1:9000".into()),
                region: Some("eu".into()),
                access_key_id: Some("AK".into()),
                secret_access_key: Some("SK".into()),
                session_token: None,
            }
        );
        assert_eq!(loc.path, "k/x");
        assert_eq!(loc.uri(), raw);
    }
    let loc = parse("box:in/a").unwrap();
    assert!(
        matches!(loc.service, Service::Ftp { ref endpoint, .. } if endpoint == "ftp://ftp.example.org:21")
    );
    assert_eq!(parse("disk:/srv/x").unwrap().uri(), "file:///srv/x");
}

#[test]
fn unknown_things_are_named() {
    assert_eq!(
        parse("s4://x/y").unwrap_err().to_string(),
        "invalid uri \"s4://x/y\": unknown scheme s4"
    );
    assert_eq!(
        parse("nowhere:x/y").unwrap_err().to_string(),
        "invalid uri \"nowhere:x/y\": unknown rclone remote nowhere"
    );
    assert_eq!(
        parse("gd:x").unwrap_err().to_string(),
        "rclone remote gd: type drive is not supported"
    );
    assert_eq!(
        parse("ftp:///nohost").unwrap_err().to_string(),
        "invalid uri \"ftp:///nohost\": missing host"
    );
    assert!(parse("").is_err());
    assert!(
        parse("http://h/x?y=1")
            .unwrap_err()
            .to_string()
            .contains("query")
    );
}

#[test]
fn sftp_uris_are_absolute_and_refuse_passwords() {
    let loc = parse("sftp://bob@127.0.0.1:2222/srv/data/a.fq").unwrap();
    assert_eq!(
        loc.service,
        Service::Sftp {
            endpoint: "ssh://127.0.0.1:2222".into(),
            user: Some("bob".into()),
            key: None,
            root: "/".into(),
            strict_host_key: false,
        }
    );
    assert_eq!(loc.path, "srv/data/a.fq");
    assert_eq!(loc.uri(), "sftp://bob@127.0.0.1:2222/srv/data/a.fq");
    let err = parse("sftp://bob:pw@h/x").unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid uri \"sftp://bob@h/x\": sftp passwords are not supported: \
         use a key (rclone key_file) or an ssh agent",
        "the password is not printed"
    );
}

fn sftp_remote(extra: &str) -> Result<Location> {
    let conf = format!(
        "[box]\ntype = sftp\nhost = 10.0.0.5\nport = 2022\nuser = alice\nkey_file = /k/id\n{extra}"
    );
    let remotes = Remotes::parse(&conf).unwrap();
    parse_location("box:in/a.txt", &remotes, &EnvDefaults::default())
}

#[test]
fn sftp_remotes_use_rclone_names_and_home_relative_paths() {
    let remotes = Remotes::parse(
        "[box]\ntype = sftp\nhost = 10.0.0.5\nport = 2022\nuser = alice\nkey_file = /k/id\n",
    )
    .unwrap();
    let env = EnvDefaults::default();
    let relative = parse_location("box:in/a.txt", &remotes, &env).unwrap();
    assert_eq!(
        relative.service,
        Service::Sftp {
            endpoint: "ssh://10.0.0.5:2022".into(),
            user: Some("alice".into()),
            key: Some("/k/id".into()),
            root: String::new(),
            strict_host_key: false,
        }
    );
    assert_eq!(relative.path, "in/a.txt");
    assert_eq!(relative.uri(), "box:in/a.txt");
    // A leading slash makes the path absolute, and printed URIs keep it.
    for raw in ["box:/srv/a.txt", "box:///srv/a.txt"] {
        let absolute = parse_location(raw, &remotes, &env).unwrap();
        assert!(
            matches!(&absolute.service, Service::Sftp { root, .. } if root == "/"),
            "{raw}"
        );
        assert_eq!(absolute.path, "srv/a.txt");
        assert_eq!(absolute.uri(), raw);
        assert_eq!(absolute.join("b").uri(), format!("{raw}/b"));
    }
    let port_22 = Remotes::parse("[h]\ntype = sftp\nhost = h.example.org\n").unwrap();
    let loc = parse_location("h:x", &port_22, &env).unwrap();
    assert!(
        matches!(&loc.service, Service::Sftp { endpoint, user: None, key: None, .. }
            if endpoint == "ssh://h.example.org:22")
    );
}

#[test]
fn sftp_remote_host_key_checking_follows_known_hosts_file() {
    let strict = |loc: Location| match loc.service {
        Service::Sftp {
            strict_host_key, ..
        } => strict_host_key,
        other => panic!("not sftp: {other:?}"),
    };
    assert!(!strict(sftp_remote("").unwrap()));
    assert!(strict(
        sftp_remote("known_hosts_file = ~/.ssh/known_hosts\n").unwrap()
    ));
    let err = sftp_remote("known_hosts_file = /etc/other_hosts\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "rclone remote box: known_hosts_file /etc/other_hosts: only ~/.ssh/known_hosts"
        ),
        "{err}"
    );
    let err = sftp_remote("pass = x\n").unwrap();
    assert_eq!(err.uri(), "box:in/a.txt", "a key_file wins over pass");
    let remotes = Remotes::parse("[p]\ntype = sftp\nhost = h\npass = x\n").unwrap();
    let err = parse_location("p:x", &remotes, &EnvDefaults::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rclone remote p: sftp passwords are not supported: use key_file or an ssh agent"
    );
    let remotes = Remotes::parse("[n]\ntype = sftp\nuser = u\n").unwrap();
    let err = parse_location("n:x", &remotes, &EnvDefaults::default()).unwrap_err();
    assert_eq!(err.to_string(), "rclone remote n: no host");
}

fn azure_env(account: Option<&str>, endpoint: Option<&str>) -> EnvDefaults {
    EnvDefaults {
        azure_account: account.map(str::to_string),
        azure_key: account.map(|_| "S2V5".to_string()),
        azure_endpoint: endpoint.map(str::to_string),
        ..EnvDefaults::default()
    }
}

#[test]
fn azure_uris_take_account_key_and_endpoint_from_the_environment() {
    let remotes = Remotes::empty();
    let loc = parse_location(
        "azure://reads/run1/a.fq",
        &remotes,
        &azure_env(Some("lab"), None),
    )
    .unwrap();
    assert_eq!(
        loc.service,
        Service::Azblob {
            container: "reads".into(),
            endpoint: "https://lab.blob.core.windows.net".into(),
            account: Some("lab".into()),
            key: Some("S2V5".into()),
            sas_token: None,
        }
    );
    assert_eq!(loc.path, "run1/a.fq");
    assert_eq!(loc.uri(), "azure://reads/run1/a.fq");
    // `az://` is the same; an explicit endpoint (Azurite, a sovereign cloud) wins.
    let env = azure_env(Some("lab"), Some("http://127.0.0.1:10000/lab"));
    let loc = parse_location("az://reads/x", &remotes, &env).unwrap();
    assert!(
        matches!(&loc.service, Service::Azblob { endpoint, .. } if endpoint == "http://127.0.0.1:10000/lab")
    );
    assert_eq!(loc.uri(), "azure://reads/x");
    let err = parse_location("azure://reads/x", &remotes, &EnvDefaults::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid uri \"azure://reads/x\": no azure account: set AZURE_STORAGE_ACCOUNT or use an rclone remote"
    );
    let err = parse_location(
        "azure://Bad_Name/x",
        &remotes,
        &azure_env(Some("lab"), None),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "invalid uri \"azure://Bad_Name/x\": invalid container name Bad_Name"
    );
}

#[test]
fn azureblob_remotes_map_account_key_sas_url_and_endpoint() {
    let remotes = Remotes::parse(
        "[acct]\ntype = azureblob\naccount = lab\nkey = S2V5\n\
         [sas]\ntype = azureblob\nsas_url = https://lab.blob.core.windows.net/reads?sv=2024&sig=abc%3D\n\
         [emu]\ntype = azureblob\naccount = devstoreaccount1\nkey = a2V5\nendpoint = http://127.0.0.1:10000/devstoreaccount1/\n\
         [bare]\ntype = azureblob\n",
    )
    .unwrap();
    let env = EnvDefaults::default();
    let loc = parse_location("acct:reads/run1/a.fq", &remotes, &env).unwrap();
    assert_eq!(
        loc.service,
        Service::Azblob {
            container: "reads".into(),
            endpoint: "https://lab.blob.core.windows.net".into(),
            account: Some("lab".into()),
            key: Some("S2V5".into()),
            sas_token: None,
        }
    );
    assert_eq!(loc.path, "run1/a.fq");
    assert_eq!(loc.uri(), "acct:reads/run1/a.fq");

    let loc = parse_location("sas:reads/x", &remotes, &env).unwrap();
    assert_eq!(
        loc.service,
        Service::Azblob {
            container: "reads".into(),
            endpoint: "https://lab.blob.core.windows.net".into(),
            account: None,
            key: None,
            sas_token: Some("sv=2024&sig=abc%3D".into()),
        }
    );

    let loc = parse_location("emu://reads/x", &remotes, &env).unwrap();
    assert!(
        matches!(&loc.service, Service::Azblob { endpoint, account, .. }
        if endpoint == "http://127.0.0.1:10000/devstoreaccount1"
            && account.as_deref() == Some("devstoreaccount1"))
    );

    let err = parse_location("bare:reads/x", &remotes, &env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rclone remote bare: needs account, endpoint or sas_url"
    );
    let bad = Remotes::parse("[b]\ntype = azureblob\nsas_url = not a url\n").unwrap();
    let err = parse_location("b:reads/x", &bad, &env)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("rclone remote b: sas_url: "), "{err}");
}

#[test]
fn join_and_folders() {
    let loc = parse("s3://b/dir").unwrap();
    assert_eq!(loc.as_folder().path, "dir/");
    assert_eq!(loc.join("sub/f").uri(), "s3://b/dir/sub/f");
    assert_eq!(parse("s3://b").unwrap().join("f").uri(), "s3://b/f");
}

#[test]
fn dot_dot_in_a_uri_is_refused_naming_it() {
    for raw in [
        "file:///some/dir/../data.txt",
        "s3://bucket/a/../../b",
        "http://host/x/..%2F..%2Fescape",
        "mys3:bucket/../x",
        "disk:/tmp/../etc",
        "box:a/../../x",
    ] {
        let err = parse(raw).unwrap_err().to_string();
        assert!(
            err.contains(raw) && err.contains(".."),
            "{raw} should be refused naming it: {err}"
        );
    }
    assert!(parse("s3://bucket/a..b/c..").is_ok());
    // URLs are normalised by the url crate, which never goes above the host's root.
    for (raw, path) in [
        ("https://host/a/%2E%2E/b", "b"),
        ("ftp://host/../x", "x"),
        ("sftp://host/a/../../etc/shadow", "etc/shadow"),
    ] {
        assert_eq!(parse(raw).unwrap().path, path, "{raw}");
    }
}

#[test]
fn dot_dot_in_a_local_path_is_resolved() {
    assert_eq!(parse("/data/x/../in").unwrap().uri(), "file:///data/in");
    assert_eq!(parse("/data/./in/").unwrap().uri(), "file:///data/in/");
    assert_eq!(parse("/../../etc").unwrap().uri(), "file:///etc");
}
