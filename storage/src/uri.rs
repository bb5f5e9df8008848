//! Storage URIs: which service holds an object, and where inside it.
//!
//! Accepted forms: `s3://bucket/key`, `azure://container/blob`, `ftp://[user[:pass]@]host[:port]/path`,
//! `sftp://[user@]host[:port]/path`, `http(s)://host[:port]/path`, `file:///abs/path`, a bare
//! local path (`/abs`, `./rel`, `rel`), and rclone remotes (`name:path` or `name://path`).
//! A path ending in `/` names a folder. A remote wins over a built-in scheme of the same name
//! (`s3://bucket/key` is remote `s3`'s when the rclone.conf has one), as in the original scitq.

use std::path::Path;

use percent_encoding::percent_decode_str;

use crate::error::{Result, StorageError};
use crate::rclone::{Remote, Remotes};

/// A service an operator is built for (one bucket, one container, one host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Service {
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
    },
    Azblob {
        container: String,
        endpoint: String,
        account: Option<String>,
        key: Option<String>,
        sas_token: Option<String>,
    },
    Ftp {
        endpoint: String,
        user: Option<String>,
        password: Option<String>,
    },
    Sftp {
        endpoint: String,
        user: Option<String>,
        key: Option<String>,
        /// `/` when paths are absolute; empty when they are relative to the folder the server
        /// starts a session in (the login's home), as rclone reads `remote:path`.
        root: String,
        /// Whether the ssh client must find the server's host key in the known_hosts files
        /// (rclone's `known_hosts_file`); otherwise any host key is accepted, as rclone does.
        strict_host_key: bool,
    },
    Http {
        endpoint: String,
    },
    /// The local file system, rooted at `/`.
    Fs,
    /// A public sequencing run (`run+fastq://ACCESSION`), resolved through ENA; downloads only.
    Ena {
        accession: String,
        report_url: String,
        fastq_scheme: String,
    },
}

/// Credentials and endpoints taken from the environment for URIs that name no remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvDefaults {
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_session_token: Option<String>,
    pub azure_account: Option<String>,
    pub azure_key: Option<String>,
    pub azure_endpoint: Option<String>,
    /// ENA's file report URL for `run+fastq://` (default [`crate::DEFAULT_ENA_URL`]).
    pub ena_url: Option<String>,
    /// Scheme put before ENA's scheme-less FASTQ locations (default `https`).
    pub ena_fastq_scheme: Option<String>,
}

impl EnvDefaults {
    /// The usual AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL`) and Azure's (`AZURE_STORAGE_ACCOUNT`, `AZURE_STORAGE_KEY`,
    /// `AZURE_STORAGE_ENDPOINT`); `SCITQ_ENA_URL` and `SCITQ_ENA_FASTQ_SCHEME` for
    /// `run+fastq://`.
    pub fn from_env() -> EnvDefaults {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        EnvDefaults {
            s3_endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            s3_region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
            s3_access_key_id: var("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            s3_session_token: var("AWS_SESSION_TOKEN"),
            azure_account: var("AZURE_STORAGE_ACCOUNT"),
            azure_key: var("AZURE_STORAGE_KEY"),
            azure_endpoint: var("AZURE_STORAGE_ENDPOINT"),
            ena_url: var("SCITQ_ENA_URL"),
            ena_fastq_scheme: var("SCITQ_ENA_FASTQ_SCHEME"),
        }
    }
}

/// A parsed location: the service, the path inside it, and how to print paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub(crate) service: Service,
    /// Path inside the service, without a leading `/`; ends with `/` for a folder.
    pub(crate) path: String,
    /// Prefix that, followed by a path inside the service, gives a URI the user can reuse.
    pub(crate) base: String,
}

impl Location {
    /// The URI of this location, as the user would write it.
    pub fn uri(&self) -> String {
        format!("{}{}", self.base, self.path)
    }

    /// The URI of another path inside the same service.
    pub(crate) fn uri_of(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Whether the text explicitly named a folder (trailing `/`) or the service root.
    pub fn is_folder_syntax(&self) -> bool {
        self.path.is_empty() || self.path.ends_with('/')
    }

    /// The same location seen as a folder (trailing `/`).
    pub(crate) fn as_folder(&self) -> Location {
        let mut folder = self.clone();
        if !folder.is_folder_syntax() {
            folder.path.push('/');
        }
        folder
    }

    /// The child `name` (relative, `/`-separated) of this folder.
    pub(crate) fn join(&self, name: &str) -> Location {
        let mut child = self.as_folder();
        child.path.push_str(name.trim_start_matches('/'));
        child
    }

    /// The last path component (without a trailing `/`), if any.
    pub fn file_name(&self) -> Option<&str> {
        self.path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
    }

    /// The local path, for `file://` locations.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        matches!(self.service, Service::Fs).then(|| Path::new("/").join(&self.path))
    }
}

/// Parses the location part of a URI (no `|actions`).
///
/// A `..` in the path (after percent-decoding) is refused: such a path names something
/// outside where it points, and opendal's local lister loops forever on one.
pub fn parse_location(raw: &str, remotes: &Remotes, env: &EnvDefaults) -> Result<Location> {
    let loc = parse_location_unchecked(raw, remotes, env)?;
    if has_parent_component(&loc.path) {
        return Err(StorageError::MalformedUri {
            uri: raw.to_string(),
            reason: "a path may not contain \"..\"".to_string(),
        });
    }
    Ok(loc)
}

/// Whether a `/`-separated path has a `..` component.
pub(crate) fn has_parent_component(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

fn parse_location_unchecked(raw: &str, remotes: &Remotes, env: &EnvDefaults) -> Result<Location> {
    let malformed = |reason: &str| StorageError::MalformedUri {
        uri: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.trim().is_empty() {
        return Err(malformed("empty uri"));
    }
    if raw.trim() != raw {
        return Err(malformed("leading or trailing spaces"));
    }
    if let Some((scheme, rest)) = raw.split_once("://") {
        if !valid_name(scheme) {
            return Err(malformed("bad scheme"));
        }
        // As in the original scitq, a remote of the rclone.conf wins over a built-in scheme of
        // the same name: with a remote named `s3` (an OVH or MinIO endpoint, say),
        // `s3://bucket/key` is that remote's `s3:bucket/key`, not AWS.
        if let Some(remote) = remotes.get(scheme) {
            return from_remote(raw, remote, rest, &format!("{scheme}://"));
        }
        return match scheme {
            "s3" => parse_s3(raw, rest, env),
            "azure" | "az" => parse_azure(raw, rest, env),
            "ftp" | "sftp" | "http" | "https" => parse_url_like(raw, scheme),
            "file" => parse_file(raw, rest),
            "run+fastq" => {
                if !crate::ena::valid_accession(rest) {
                    return Err(malformed(
                        "not a run accession (SRR, ERR or DRR and digits)",
                    ));
                }
                Ok(Location {
                    service: Service::Ena {
                        accession: rest.to_string(),
                        report_url: env
                            .ena_url
                            .clone()
                            .unwrap_or_else(|| crate::ena::DEFAULT_ENA_URL.to_string()),
                        fastq_scheme: env
                            .ena_fastq_scheme
                            .clone()
                            .unwrap_or_else(|| "https".to_string()),
                    },
                    path: String::new(),
                    base: format!("run+fastq://{rest}"),
                })
            }
            name => Err(StorageError::UnknownScheme {
                uri: raw.to_string(),
                scheme: name.to_string(),
            }),
        };
    }
    if raw.starts_with('/') || raw.starts_with('.') || !raw.contains(':') {
        return local_location(raw);
    }
    let (name, rest) = raw.split_once(':').expect("checked above");
    if !valid_name(name) {
        return Err(malformed("bad remote name"));
    }
    match remotes.get(name) {
        Some(remote) => from_remote(raw, remote, rest, &format!("{name}:")),
        None => Err(StorageError::UnknownRemote {
            uri: raw.to_string(),
            remote: name.to_string(),
        }),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
}

fn decode(raw: &str, text: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| StorageError::MalformedUri {
            uri: raw.to_string(),
            reason: "percent-encoding is not utf-8".to_string(),
        })
}

/// Splits `first/rest` into a bucket or container name and a path inside it.
fn split_bucket<'a>(raw: &str, rest: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
    let ok = (1..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        let reason = if bucket.is_empty() {
            format!("missing {what} name")
        } else {
            format!("invalid {what} name {bucket}")
        };
        return Err(StorageError::MalformedUri {
            uri: raw.to_string(),
            reason,
        });
    }
    Ok((bucket, path))
}

fn parse_s3(raw: &str, rest: &str, env: &EnvDefaults) -> Result<Location> {
    let (bucket, path) = split_bucket(raw, rest, "bucket")?;
    Ok(Location {
        service: Service::S3 {
            bucket: bucket.to_string(),
            endpoint: env.s3_endpoint.clone(),
            region: env.s3_region.clone(),
            access_key_id: env.s3_access_key_id.clone(),
            secret_access_key: env.s3_secret_access_key.clone(),
            session_token: env.s3_session_token.clone(),
        },
        path: path.to_string(),
        base: format!("s3://{bucket}/"),
    })
}

fn parse_azure(raw: &str, rest: &str, env: &EnvDefaults) -> Result<Location> {
    let (container, path) = split_bucket(raw, rest, "container")?;
    let endpoint = match (&env.azure_endpoint, &env.azure_account) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(account)) => format!("https://{account}.blob.core.windows.net"),
        (None, None) => {
            return Err(StorageError::MalformedUri {
                uri: raw.to_string(),
                reason: "no azure account: set AZURE_STORAGE_ACCOUNT or use an rclone remote"
                    .to_string(),
            });
        }
    };
    Ok(Location {
        service: Service::Azblob {
            container: container.to_string(),
            endpoint,
            account: env.azure_account.clone(),
            key: env.azure_key.clone(),
            sas_token: None,
        },
        path: path.to_string(),
        base: format!("azure://{container}/"),
    })
}

fn parse_url_like(raw: &str, scheme: &str) -> Result<Location> {
    let malformed = |reason: String| StorageError::MalformedUri {
        uri: raw.to_string(),
        reason,
    };
    // The url crate would read `ftp:///x` as host `x`.
    if raw[scheme.len() + 3..].starts_with('/') {
        return Err(malformed("missing host".to_string()));
    }
    let url = url::Url::parse(raw).map_err(|e| malformed(e.to_string()))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| malformed("missing host".to_string()))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(malformed(
            "query strings and fragments are not supported".to_string(),
        ));
    }
    let host_port = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let user = Some(decode(raw, url.username())?).filter(|u| !u.is_empty());
    let password = url.password().map(|p| decode(raw, p)).transpose()?;
    let path = decode(raw, url.path())?.trim_start_matches('/').to_string();
    let (service, base) = match scheme {
        "ftp" => {
            let service = Service::Ftp {
                endpoint: format!("ftp://{host_port}"),
                user: user.clone(),
                password,
            };
            let userinfo = user.map(|u| format!("{u}@")).unwrap_or_default();
            (service, format!("ftp://{userinfo}{host_port}/"))
        }
        "sftp" => {
            if password.is_some() {
                // The refused password is not echoed (errors end up in task records).
                let mut shown = url.clone();
                let _ = shown.set_password(None);
                return Err(StorageError::MalformedUri {
                    uri: shown.to_string(),
                    reason: "sftp passwords are not supported: use a key (rclone key_file) or an ssh agent"
                        .to_string(),
                });
            }
            let userinfo = user.clone().map(|u| format!("{u}@")).unwrap_or_default();
            let service = Service::Sftp {
                endpoint: format!("ssh://{host_port}"),
                user,
                key: None,
                root: "/".to_string(),
                strict_host_key: false,
            };
            (service, format!("sftp://{userinfo}{host_port}/"))
        }
        _ => {
            if user.is_some() {
                return Err(malformed(
                    "credentials in http uris are not supported".to_string(),
                ));
            }
            let endpoint = format!("{scheme}://{host_port}");
            (
                Service::Http {
                    endpoint: endpoint.clone(),
                },
                format!("{endpoint}/"),
            )
        }
    };
    Ok(Location {
        service,
        path,
        base,
    })
}

fn parse_file(raw: &str, rest: &str) -> Result<Location> {
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return Err(StorageError::MalformedUri {
            uri: raw.to_string(),
            reason: "file uris need an absolute path (file:///path)".to_string(),
        });
    }
    Ok(fs_location(&decode(raw, rest)?))
}

fn local_location(raw: &str) -> Result<Location> {
    let path = Path::new(raw);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| StorageError::local(".", e))?
            .join(path)
    };
    // A local path is the user's own: `../data.txt` is fine, resolved here (lexically, as
    // the shell does) so no `..` reaches a listing.
    let mut normal = std::path::PathBuf::from("/");
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::Normal(name) => normal.push(name),
            _ => {}
        }
    }
    let mut text = normal.to_string_lossy().into_owned();
    if raw.ends_with('/') && !text.ends_with('/') {
        text.push('/');
    }
    Ok(fs_location(&text))
}

fn fs_location(abs: &str) -> Location {
    Location {
        service: Service::Fs,
        path: abs.trim_start_matches('/').to_string(),
        base: "file:///".to_string(),
    }
}

fn from_remote(raw: &str, remote: &Remote, rest: &str, base: &str) -> Result<Location> {
    let bad = |reason: String| StorageError::BadRemote {
        remote: remote.name.clone(),
        reason,
    };
    match remote.kind.as_str() {
        "s3" => {
            let (bucket, path) = split_bucket(raw, rest.trim_start_matches('/'), "bucket")?;
            let endpoint = remote.get("endpoint").map(with_https);
            let env_auth = remote.get("env_auth") == Some("true");
            let env = if env_auth {
                EnvDefaults::from_env()
            } else {
                EnvDefaults::default()
            };
            Ok(Location {
                service: Service::S3 {
                    bucket: bucket.to_string(),
                    endpoint: endpoint.or(env.s3_endpoint),
                    region: remote.get("region").map(str::to_string).or(env.s3_region),
                    access_key_id: remote
                        .get("access_key_id")
                        .map(str::to_string)
                        .or(env.s3_access_key_id),
                    secret_access_key: remote
                        .get("secret_access_key")
                        .map(str::to_string)
                        .or(env.s3_secret_access_key),
                    session_token: remote
                        .get("session_token")
                        .map(str::to_string)
                        .or(env.s3_session_token),
                },
                path: path.to_string(),
                base: format!("{base}{bucket}/"),
            })
        }
        "azureblob" => {
            let (container, path) = split_bucket(raw, rest.trim_start_matches('/'), "container")?;
            let (mut endpoint, mut sas_token) = (None, None);
            if let Some(sas_url) = remote.get("sas_url") {
                let url = url::Url::parse(sas_url).map_err(|e| bad(format!("sas_url: {e}")))?;
                let host = url.host_str().unwrap_or_default();
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                endpoint = Some(format!("{}://{host}{port}", url.scheme()));
                sas_token = url.query().map(str::to_string);
            }
            let account = remote.get("account").map(str::to_string);
            let endpoint = remote
                .get("endpoint")
                .map(with_https)
                .or(endpoint)
                .or_else(|| {
                    account
                        .as_ref()
                        .map(|a| format!("https://{a}.blob.core.windows.net"))
                })
                .ok_or_else(|| bad("needs account, endpoint or sas_url".to_string()))?;
            Ok(Location {
                service: Service::Azblob {
                    container: container.to_string(),
                    endpoint,
                    account,
                    key: remote.get("key").map(str::to_string),
                    sas_token,
                },
                path: path.to_string(),
                base: format!("{base}{container}/"),
            })
        }
        "ftp" => {
            let host = remote.get("host").ok_or_else(|| bad("no host".into()))?;
            let port = remote.get("port").unwrap_or("21");
            Ok(Location {
                service: Service::Ftp {
                    endpoint: format!("ftp://{host}:{port}"),
                    user: remote.get("user").map(str::to_string),
                    password: remote.revealed("pass")?,
                },
                path: rest.trim_start_matches('/').to_string(),
                base: base.to_string(),
            })
        }
        "sftp" => {
            let host = remote.get("host").ok_or_else(|| bad("no host".into()))?;
            let port = remote.get("port").unwrap_or("22");
            if remote.get("pass").is_some() && remote.get("key_file").is_none() {
                return Err(bad(
                    "sftp passwords are not supported: use key_file or an ssh agent".to_string(),
                ));
            }
            // As for rclone, `remote:path` is relative to the login's home and
            // `remote:/path` absolute.
            let (root, base) = if rest.starts_with('/') {
                ("/", format!("{base}/"))
            } else {
                ("", base.to_string())
            };
            Ok(Location {
                service: Service::Sftp {
                    endpoint: format!("ssh://{host}:{port}"),
                    user: remote.get("user").map(str::to_string),
                    key: remote.get("key_file").map(str::to_string),
                    root: root.to_string(),
                    strict_host_key: sftp_strict_host_key(remote)?,
                },
                path: rest.trim_start_matches('/').to_string(),
                base,
            })
        }
        "http" => {
            let url = remote.get("url").ok_or_else(|| bad("no url".into()))?;
            let url = url.trim_end_matches('/');
            Ok(Location {
                service: Service::Http {
                    endpoint: url.to_string(),
                },
                path: rest.trim_start_matches('/').to_string(),
                base: base.to_string(),
            })
        }
        "local" => {
            let path = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            Ok(fs_location(&path))
        }
        other => Err(bad(format!("type {other} is not supported"))),
    }
}

/// rclone checks host keys only when `known_hosts_file` is set. The ssh client that opendal
/// drives reads the known_hosts files of its own config (`~/.ssh/known_hosts` unless
/// `~/.ssh/config` says otherwise) and cannot be handed another file, so only that file is
/// accepted: a remote naming another one is refused rather than silently left unchecked.
fn sftp_strict_host_key(remote: &Remote) -> Result<bool> {
    let Some(file) = remote.get("known_hosts_file") else {
        return Ok(false);
    };
    let home_file = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".ssh/known_hosts"))
        .filter(|path| path.is_absolute());
    if file == "~/.ssh/known_hosts" || home_file.is_some_and(|h| h == Path::new(file)) {
        return Ok(true);
    }
    Err(StorageError::BadRemote {
        remote: remote.name.clone(),
        reason: format!(
            "known_hosts_file {file}: only ~/.ssh/known_hosts is supported \
             (the ssh client checks host keys against its own known_hosts files)"
        ),
    })
}

fn with_https(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", endpoint.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests;
