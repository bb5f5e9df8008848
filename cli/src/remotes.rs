//! Where `scitqctl fetch` finds the rclone remotes its URIs name.
//!
//! - `--rclone-config FILE` or `SCITQ_RCLONE_CONFIG`: that file alone; scitqd is not asked.
//! - Otherwise, and only when a URI names a remote: scitqd's rclone config (the remotes its
//!   agents use, from `StorageService.GetStorageConfig`, when a server and token are known)
//!   over rclone's default file. A remote defined in both is scitqd's, so `fetch` reaches
//!   what tasks reach; a remote only in the local file still works. An unreachable scitqd
//!   costs at most [`SERVER_TIMEOUT`] and is an error only when a remote is found nowhere.
//!
//! A remote wins over a built-in scheme of its name, as on the agents: `s3://bucket/key` is
//! remote `s3`'s when one is found this way, so the same lookup is made for a built-in
//! `scheme://` (but `file://` and `run+fastq://`); found nowhere, the built-in scheme serves
//! (`s3://` with the `AWS_*` variables) and an unreachable scitqd is only a warning.
//! Local paths and `file://` need neither file nor server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scitq_proto::v1::GetStorageConfigRequest;
use scitq_storage::{Remotes, Storage, StorageError};

use crate::client::Client;
use crate::config::Target;
use crate::error::{UsageError, report, usage};

/// How long `fetch` waits for scitqd's rclone config, connection included.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Within [`SERVER_TIMEOUT`]: a server that does not even accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The remotes to use, and where they were looked for.
#[derive(Debug)]
pub struct Found {
    pub remotes: Remotes,
    /// One phrase per place looked in, saying what it held, for an unknown remote's error.
    looked: Vec<String>,
}

impl Found {
    /// A URI refused before anything is sent (exit code 2). An unknown remote, or an unknown
    /// scheme (which might have been a remote's `name://`), says where remotes were looked for.
    pub fn explain(&self, err: StorageError) -> anyhow::Error {
        let looked = self.looked.join("; ");
        match &err {
            StorageError::UnknownRemote { .. } => usage(format!("{err} ({looked})")),
            StorageError::UnknownScheme { scheme, .. } => {
                usage(format!("{err}, and no rclone remote {scheme} ({looked})"))
            }
            _ => usage(err.to_string()),
        }
    }
}

/// Finds the remotes `uris` name. `target` says which scitqd to ask; it is only called when
/// a URI names a remote and no file was given.
pub async fn find(
    explicit: Option<&Path>,
    uris: &[&str],
    target: impl FnOnce() -> Result<Target, UsageError>,
) -> anyhow::Result<Found> {
    if let Some(path) = explicit {
        let remotes = Remotes::load(path).map_err(|e| usage(e.to_string()))?;
        return Ok(Found {
            remotes,
            looked: vec![format!("not in {}", path.display())],
        });
    }
    let needed = needed(uris);
    let shadowable = shadowable(uris);
    if needed.is_empty() && shadowable.is_empty() {
        return Ok(Found {
            remotes: Remotes::empty(),
            looked: Vec::new(),
        });
    }
    let server = match target() {
        Ok(target) => ask(&target).await,
        Err(e) => FromServer::NotAsked(e.0),
    };
    let local = read_local(default_path());
    let (found, notices) = combine(&needed, &shadowable, server, local);
    for notice in notices {
        eprintln!("{notice}");
    }
    Ok(found)
}

/// The names of the remotes `uris` use: what does not parse without any remote. An unknown
/// scheme counts, as `name://path` is a remote too.
fn needed(uris: &[&str]) -> BTreeSet<String> {
    let bare = Storage::new(Remotes::empty());
    uris.iter()
        .filter_map(|uri| match bare.parse(uri) {
            Err(StorageError::UnknownRemote { remote, .. }) => Some(remote),
            Err(StorageError::UnknownScheme { scheme, .. }) => Some(scheme),
            _ => None,
        })
        .collect()
}

/// The built-in schemes of `uris` (`s3` of `s3://b/k`...) that a remote of the same name would
/// take over: every `scheme://` that parses without remotes but `file://` and `run+fastq://`.
fn shadowable(uris: &[&str]) -> BTreeSet<String> {
    let bare = Storage::new(Remotes::empty());
    uris.iter()
        .filter(|uri| bare.parse(uri).is_ok())
        .filter_map(|uri| uri.split_once("://").map(|(scheme, _)| scheme))
        .filter(|scheme| !matches!(*scheme, "file" | "run+fastq"))
        .map(str::to_owned)
        .collect()
}

/// rclone's own default: `$XDG_CONFIG_HOME/rclone/rclone.conf`, else
/// `$HOME/.config/rclone/rclone.conf`.
pub fn default_path() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let base = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME")?).join(".config"),
    };
    Some(base.join("rclone").join("rclone.conf"))
}

/// What scitqd said about its remotes.
#[derive(Debug)]
enum FromServer {
    /// No server or token known: not an error, scitq may not be in use at all.
    NotAsked(String),
    /// Asked and failed: unreachable, refused, silent, or a config that does not parse.
    Failed(String),
    Config {
        address: String,
        remotes: Remotes,
    },
}

/// Asks scitqd for its rclone config, within [`SERVER_TIMEOUT`].
async fn ask(target: &Target) -> FromServer {
    let address = target.address.to_string();
    let call = async {
        let client = Client::connect_within(target, CONNECT_TIMEOUT).await?;
        let reply = client
            .storage()
            .get_storage_config(GetStorageConfigRequest {})
            .await?;
        anyhow::Ok(reply.into_inner().rclone_config)
    };
    let text = match tokio::time::timeout(SERVER_TIMEOUT, call).await {
        Ok(Ok(text)) => text,
        Ok(Err(err)) => {
            let message = report(&err, Some(&target.address))
                .message
                .unwrap_or_default();
            return FromServer::Failed(if message.contains(&address) {
                message
            } else {
                format!("scitqd at {address}: {message}")
            });
        }
        Err(_) => {
            return FromServer::Failed(format!(
                "scitqd at {address}: no answer within {}s",
                SERVER_TIMEOUT.as_secs()
            ));
        }
    };
    match Remotes::parse(&text) {
        Ok(remotes) => FromServer::Config { address, remotes },
        Err(e) => FromServer::Failed(format!(
            "scitqd at {address} sent an invalid rclone config: {e}"
        )),
    }
}

/// What rclone's default file held.
#[derive(Debug)]
enum FromLocal {
    NoHome,
    Absent(PathBuf),
    Broken(String),
    Loaded { path: PathBuf, remotes: Remotes },
}

fn read_local(path: Option<PathBuf>) -> FromLocal {
    let Some(path) = path else {
        return FromLocal::NoHome;
    };
    if !path.is_file() {
        return FromLocal::Absent(path);
    }
    match Remotes::load(&path) {
        Ok(remotes) => FromLocal::Loaded { path, remotes },
        Err(e) => FromLocal::Broken(e.to_string()),
    }
}

/// scitqd's remotes over the local file's. Returns the lines to print on stderr: why a
/// source was left out, and which needed remote scitqd redefines.
fn combine(
    needed: &BTreeSet<String>,
    shadowable: &BTreeSet<String>,
    server: FromServer,
    local: FromLocal,
) -> (Found, Vec<String>) {
    let mut looked = Vec::new();
    let mut notices = Vec::new();
    let (server_remotes, server_failed) = match server {
        FromServer::NotAsked(reason) => {
            // The resolver's advice after ';' is about other commands.
            let reason = reason.split(';').next().unwrap_or_default().to_owned();
            looked.push(format!("no scitqd asked: {reason}"));
            (Remotes::empty(), None)
        }
        FromServer::Failed(reason) => {
            looked.push(reason.clone());
            (Remotes::empty(), Some(reason))
        }
        FromServer::Config { address, remotes } if remotes.is_empty() => {
            looked.push(format!("scitqd at {address} has no rclone config"));
            (Remotes::empty(), None)
        }
        FromServer::Config { address, remotes } => {
            looked.push(format!("not in the rclone config of scitqd at {address}"));
            (remotes, None)
        }
    };
    let (local_remotes, local_path) = match local {
        FromLocal::NoHome => {
            looked.push("no local rclone.conf (HOME is not set)".to_owned());
            (Remotes::empty(), None)
        }
        FromLocal::Absent(path) => {
            looked.push(format!("{} does not exist", path.display()));
            (Remotes::empty(), None)
        }
        FromLocal::Broken(reason) => {
            notices.push(format!("warning: ignored: {reason}"));
            looked.push(reason);
            (Remotes::empty(), None)
        }
        FromLocal::Loaded { path, remotes } => {
            looked.push(format!("not in {}", path.display()));
            (remotes, Some(path))
        }
    };
    for name in needed.iter().chain(shadowable) {
        if let (Some(theirs), Some(ours), Some(path)) = (
            server_remotes.get(name),
            local_remotes.get(name),
            &local_path,
        ) && theirs != ours
        {
            notices.push(format!(
                "note: remote {name}: using scitqd's definition, not the one in {}",
                path.display()
            ));
        }
    }
    let remotes = server_remotes.with_fallback(local_remotes);
    let all_found = needed.iter().all(|name| remotes.get(name).is_some());
    if let (Some(reason), Some(path), true) = (&server_failed, &local_path, all_found) {
        notices.push(format!(
            "warning: {reason}; using the remotes of {}",
            path.display()
        ));
    }
    // scitqd may have a remote of that name that would win, as it does on its agents.
    let built_in: Vec<&str> = shadowable
        .iter()
        .filter(|name| remotes.get(name).is_none())
        .map(String::as_str)
        .collect();
    if let (Some(reason), false) = (&server_failed, built_in.is_empty()) {
        notices.push(format!(
            "warning: {reason}; {} without any remote of that name",
            built_in
                .iter()
                .map(|scheme| format!("{scheme}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    (Found { remotes, looked }, notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remotes(text: &str) -> Remotes {
        Remotes::parse(text).unwrap()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn unknown(found: &Found, uri: &str) -> String {
        let storage = Storage::new(found.remotes.clone());
        let err = storage.parse(uri).unwrap_err();
        found.explain(err).to_string()
    }

    #[test]
    fn only_remote_names_are_needed() {
        let uris = [
            "s3://bucket/key",
            "file:///tmp/x",
            "https://example.org/f",
            "./local/path",
            "/abs/path",
            "lab:data/x.fastq|gunzip",
            "box://dir/f",
            "s3://bad_bucket/x",
        ];
        assert_eq!(needed(&uris), names(&["box", "lab"]));
        assert!(needed(&["s3://b/k", "/tmp/x"]).is_empty());
        assert_eq!(shadowable(&uris), names(&["https", "s3"]));
        assert!(shadowable(&["/tmp/x", "file:///x", "run+fastq://SRR000001"]).is_empty());
    }

    #[test]
    fn a_remote_named_like_a_built_in_scheme_wins_and_is_looked_for() {
        let server = FromServer::Config {
            address: "127.0.0.1:5000".into(),
            remotes: remotes("[s3]\ntype = s3\nendpoint = http://127.0.0.1:9000\n"),
        };
        let (found, notices) = combine(
            &BTreeSet::new(),
            &names(&["s3"]),
            server,
            FromLocal::Absent("/h/rclone.conf".into()),
        );
        assert!(notices.is_empty(), "{notices:?}");
        let location = Storage::new(found.remotes).location("s3://bkt/x").unwrap();
        assert_eq!(location.uri(), "s3://bkt/x");
        assert!(
            format!("{location:?}").contains("http://127.0.0.1:9000"),
            "{location:?}"
        );

        // Found nowhere: the built-in scheme, and a warning if scitqd could not say.
        let failed = FromServer::Failed("cannot reach scitqd at h:5000: refused".into());
        let (found, notices) = combine(
            &BTreeSet::new(),
            &names(&["s3"]),
            failed,
            FromLocal::Absent("/h/rclone.conf".into()),
        );
        assert!(found.remotes.get("s3").is_none());
        assert_eq!(
            notices,
            [
                "warning: cannot reach scitqd at h:5000: refused; s3:// without any remote of that name"
            ]
        );
    }

    #[test]
    fn server_remotes_win_and_local_ones_fill_in() {
        let server = FromServer::Config {
            address: "127.0.0.1:5000".into(),
            remotes: remotes("[lab]\ntype = s3\nendpoint = http://server\n"),
        };
        let local = FromLocal::Loaded {
            path: "/h/rclone.conf".into(),
            remotes: remotes("[lab]\ntype = s3\nendpoint = http://mine\n\n[mine]\ntype = local\n"),
        };
        let (found, notices) = combine(&names(&["lab", "mine"]), &BTreeSet::new(), server, local);
        let lab = found.remotes.get("lab").unwrap();
        assert_eq!(lab.get("endpoint"), Some("http://server"));
        assert!(found.remotes.get("mine").is_some());
        assert_eq!(
            notices,
            ["note: remote lab: using scitqd's definition, not the one in /h/rclone.conf"]
        );
        assert_eq!(
            unknown(&found, "nowhere:x"),
            "invalid uri \"nowhere:x\": unknown rclone remote nowhere (not in the rclone \
             config of scitqd at 127.0.0.1:5000; not in /h/rclone.conf)"
        );
    }

    #[test]
    fn an_unreachable_server_is_a_warning_when_the_local_file_has_the_remote() {
        let failed = || FromServer::Failed("cannot reach scitqd at h:5000: refused".into());
        let local = || FromLocal::Loaded {
            path: "/h/rclone.conf".into(),
            remotes: remotes("[mine]\ntype = local\n"),
        };
        let (found, notices) = combine(&names(&["mine"]), &BTreeSet::new(), failed(), local());
        assert!(found.remotes.get("mine").is_some());
        assert_eq!(
            notices,
            [
                "warning: cannot reach scitqd at h:5000: refused; using the remotes of /h/rclone.conf"
            ]
        );

        // Missing everywhere: no warning, the error says it all.
        let (found, notices) = combine(&names(&["lab"]), &BTreeSet::new(), failed(), local());
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(
            unknown(&found, "lab:x"),
            "invalid uri \"lab:x\": unknown rclone remote lab (cannot reach scitqd at \
             h:5000: refused; not in /h/rclone.conf)"
        );
    }

    #[test]
    fn every_place_looked_in_is_named() {
        let (found, notices) = combine(
            &names(&["s4"]),
            &BTreeSet::new(),
            FromServer::NotAsked("no token: pass --token; scitqd writes...".into()),
            FromLocal::Absent("/h/.config/rclone/rclone.conf".into()),
        );
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(
            unknown(&found, "s4://x/y"),
            "invalid uri \"s4://x/y\": unknown scheme s4, and no rclone remote s4 (no scitqd \
             asked: no token: pass --token; /h/.config/rclone/rclone.conf does not exist)"
        );

        let (found, notices) = combine(
            &names(&["lab"]),
            &BTreeSet::new(),
            FromServer::Config {
                address: "h:5000".into(),
                remotes: Remotes::empty(),
            },
            FromLocal::Broken("rclone config: /h/rclone.conf: bad line".into()),
        );
        assert_eq!(
            notices,
            ["warning: ignored: rclone config: /h/rclone.conf: bad line"]
        );
        assert_eq!(
            unknown(&found, "lab:x"),
            "invalid uri \"lab:x\": unknown rclone remote lab (scitqd at h:5000 has no rclone \
             config; rclone config: /h/rclone.conf: bad line)"
        );
    }

    #[test]
    fn other_uri_errors_are_left_alone() {
        let found = Found {
            remotes: Remotes::empty(),
            looked: vec!["somewhere".into()],
        };
        assert_eq!(
            unknown(&found, "s3://Bad/x"),
            "invalid uri \"s3://Bad/x\": invalid bucket name Bad"
        );
    }
}
