//! `[[provider]]` blocks and `[recruit]` in scitqd's config file: the clouds (or the local
//! machine) scitqd recruits workers on, their credentials and quotas. Checked at start: a
//! bad key names the provider and the key, and nothing starts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::recruit::{Flavor, Quota};

/// One `[[provider]]` block as written. Keys that do not apply to its `kind` are refused.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub name: String,
    /// `local`, `openstack` or `azure`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    pub image: Option<String>,
    pub network: Option<String>,
    pub ssh_key: Option<String>,
    pub max_instances: Option<u32>,
    pub max_cores: Option<u32>,
    pub max_memory_gib: Option<u64>,
    /// How long a new machine may take to connect before it is destroyed (default 10m).
    pub deploy_timeout: Option<String>,
    // OpenStack.
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub user_domain: Option<String>,
    pub project: Option<String>,
    pub project_domain: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<String>,
    pub application_credential_secret_env: Option<String>,
    // Azure.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub subnet_id: Option<String>,
    pub admin_username: Option<String>,
    pub spot: Option<bool>,
    pub authority_host: Option<String>,
    pub endpoint: Option<String>,
    // Local.
    /// Flavors a local provider offers (default: one, `local`, this machine's size).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flavor: Vec<FlavorFile>,
    /// More arguments for a local instance's agent (e.g. `["--reconnect-max", "2s"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_args: Vec<String>,
}

/// A `[[provider.flavor]]` of a local provider.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FlavorFile {
    pub name: String,
    pub cpu: u32,
    pub memory_gib: u64,
    #[serde(default)]
    pub disk_gib: u64,
    #[serde(default)]
    pub gpu: u32,
}

/// `[recruit]`: the recruiter loop.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RecruitFile {
    /// Time between two passes (default 10s).
    pub interval: Option<String>,
}

/// A provider's credentials and settings by kind.
#[derive(Clone)]
pub enum ProviderKind {
    Local {
        flavors: Vec<Flavor>,
        agent_args: Vec<String>,
    },
    OpenStack {
        auth_url: String,
        credentials: scitq_provisioner::openstack::Credentials,
    },
    Azure {
        tenant_id: String,
        client_id: String,
        client_secret: String,
        subscription_id: String,
        resource_group: String,
        subnet_id: String,
        admin_username: String,
        spot: bool,
        authority_host: String,
        endpoint: String,
    },
}

impl ProviderKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Local { .. } => "local",
            ProviderKind::OpenStack { .. } => "openstack",
            ProviderKind::Azure { .. } => "azure",
        }
    }
}

impl std::fmt::Debug for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.write_str(self.as_str())
    }
}

/// A validated `[[provider]]`.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Regions, the default first (`local` for a local provider).
    pub regions: Vec<String>,
    pub image: Option<String>,
    pub network: Option<String>,
    pub ssh_key: Option<String>,
    pub quota: Quota,
    pub deploy_timeout: Duration,
    /// The block as written, for `--print-config` (secrets hidden).
    file: ProviderFile,
}

/// The validated `[recruit]`.
#[derive(Clone, Debug)]
pub struct Recruit {
    pub interval: Duration,
}

impl Default for Recruit {
    fn default() -> Recruit {
        Recruit {
            interval: Duration::from_secs(10),
        }
    }
}

/// A `[[provider]]` or `[recruit]` key that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("[[provider]] {name:?}: {detail}")]
    Invalid { name: String, detail: String },
    #[error("[[provider]] name {0:?} is used twice")]
    Duplicate(String),
    #[error("invalid [recruit] interval {value:?}: {reason} (examples: 5s, 1m)")]
    Interval { value: String, reason: String },
}

fn duration(name: &str, key: &str, value: &str) -> Result<Duration, ProviderConfigError> {
    let d = humantime::parse_duration(value).map_err(|e| ProviderConfigError::Invalid {
        name: name.to_owned(),
        detail: format!("invalid {key} {value:?}: {e} (examples: 90s, 10m)"),
    })?;
    if d.is_zero() {
        return Err(ProviderConfigError::Invalid {
            name: name.to_owned(),
            detail: format!("{key} must be more than zero"),
        });
    }
    Ok(d)
}

impl ProviderConfig {
    pub fn from_file(file: ProviderFile) -> Result<ProviderConfig, ProviderConfigError> {
        let name = file.name.clone();
        let bad = |detail: String| ProviderConfigError::Invalid {
            name: name.clone(),
            detail,
        };
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(bad(
                "the name must be 1 to 32 letters, digits, - or _".to_owned()
            ));
        }
        // A key set in a block whose kind does not use it is an error, not silence.
        let set = |key: &'static str, present: bool| present.then_some(key);
        let openstack_keys = [
            set("auth_url", file.auth_url.is_some()),
            set("username", file.username.is_some()),
            set("password", file.password.is_some()),
            set("password_env", file.password_env.is_some()),
            set("user_domain", file.user_domain.is_some()),
            set("project", file.project.is_some()),
            set("project_domain", file.project_domain.is_some()),
            set(
                "application_credential_id",
                file.application_credential_id.is_some(),
            ),
            set(
                "application_credential_secret",
                file.application_credential_secret.is_some(),
            ),
            set(
                "application_credential_secret_env",
                file.application_credential_secret_env.is_some(),
            ),
        ];
        let azure_keys = [
            set("tenant_id", file.tenant_id.is_some()),
            set("client_id", file.client_id.is_some()),
            set("client_secret", file.client_secret.is_some()),
            set("client_secret_env", file.client_secret_env.is_some()),
            set("subscription_id", file.subscription_id.is_some()),
            set("resource_group", file.resource_group.is_some()),
            set("subnet_id", file.subnet_id.is_some()),
            set("admin_username", file.admin_username.is_some()),
            set("spot", file.spot.is_some()),
            set("authority_host", file.authority_host.is_some()),
            set("endpoint", file.endpoint.is_some()),
        ];
        let local_keys = [
            set("flavor", !file.flavor.is_empty()),
            set("agent_args", !file.agent_args.is_empty()),
        ];
        let foreign: Vec<&str> = match file.kind.as_str() {
            "local" => openstack_keys
                .iter()
                .chain(&azure_keys)
                .flatten()
                .copied()
                .collect(),
            "openstack" => azure_keys
                .iter()
                .chain(&local_keys)
                .flatten()
                .copied()
                .collect(),
            "azure" => openstack_keys
                .iter()
                .chain(&local_keys)
                .flatten()
                .copied()
                .collect(),
            other => {
                return Err(bad(format!(
                    "unknown kind {other:?}: use local, openstack or azure"
                )));
            }
        };
        if !foreign.is_empty() {
            return Err(bad(format!(
                "{} not used by kind {:?}",
                foreign.join(", "),
                file.kind
            )));
        }
        let required = |key: &str, value: &Option<String>| -> Result<String, ProviderConfigError> {
            match value {
                Some(v) if !v.trim().is_empty() => Ok(v.clone()),
                _ => Err(bad(format!("{key} is required for kind {:?}", file.kind))),
            }
        };
        // A secret, written in the file or named by an environment variable.
        let secret = |key: &str,
                      value: &Option<String>,
                      env: &Option<String>|
         -> Result<Option<String>, ProviderConfigError> {
            match (value, env) {
                (Some(_), Some(_)) => Err(bad(format!("give {key} or {key}_env, not both"))),
                (Some(v), None) => Ok(Some(v.clone())),
                (None, Some(var)) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Ok(Some(v)),
                    _ => Err(bad(format!(
                        "{key}_env names {var:?}, which is not set in scitqd's environment"
                    ))),
                },
                (None, None) => Ok(None),
            }
        };
        let kind = match file.kind.as_str() {
            "local" => {
                let flavors = file
                    .flavor
                    .iter()
                    .map(|f| {
                        if f.name.is_empty() || f.cpu == 0 || f.memory_gib == 0 {
                            return Err(bad(format!(
                                "flavor {:?}: a name, cpu >= 1 and memory_gib >= 1 are needed",
                                f.name
                            )));
                        }
                        Ok(Flavor {
                            name: f.name.clone(),
                            cpu: f.cpu,
                            memory_mib: f.memory_gib * 1024,
                            disk_gib: f.disk_gib,
                            gpu: f.gpu,
                            price_per_hour: None,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ProviderKind::Local {
                    flavors,
                    agent_args: file.agent_args.clone(),
                }
            }
            "openstack" => {
                let auth_url = required("auth_url", &file.auth_url)?;
                let password = secret("password", &file.password, &file.password_env)?;
                let app_secret = secret(
                    "application_credential_secret",
                    &file.application_credential_secret,
                    &file.application_credential_secret_env,
                )?;
                use scitq_provisioner::openstack::Credentials;
                let credentials = match (&file.application_credential_id, app_secret, password) {
                    (Some(id), Some(secret), None) => Credentials::ApplicationCredential {
                        id: id.clone(),
                        secret,
                    },
                    (None, None, Some(password)) => Credentials::Password {
                        user: required("username", &file.username)?,
                        password,
                        user_domain: file.user_domain.clone().unwrap_or_else(|| "Default".into()),
                        project: required("project", &file.project)?,
                        project_domain: file
                            .project_domain
                            .clone()
                            .unwrap_or_else(|| "Default".into()),
                    },
                    _ => {
                        return Err(bad("give either username, password (or password_env) and \
                             project, or application_credential_id and \
                             application_credential_secret (or its _env)"
                            .to_owned()));
                    }
                };
                ProviderKind::OpenStack {
                    auth_url,
                    credentials,
                }
            }
            _ => {
                let client_secret = secret(
                    "client_secret",
                    &file.client_secret,
                    &file.client_secret_env,
                )?
                .ok_or_else(|| {
                    bad(
                        "client_secret (or client_secret_env) is required for kind \"azure\""
                            .to_owned(),
                    )
                })?;
                use scitq_provisioner::azure::AzureConfig;
                ProviderKind::Azure {
                    tenant_id: required("tenant_id", &file.tenant_id)?,
                    client_id: required("client_id", &file.client_id)?,
                    client_secret,
                    subscription_id: required("subscription_id", &file.subscription_id)?,
                    resource_group: required("resource_group", &file.resource_group)?,
                    subnet_id: required("subnet_id", &file.subnet_id)?,
                    admin_username: file
                        .admin_username
                        .clone()
                        .unwrap_or_else(|| "scitq".into()),
                    spot: file.spot.unwrap_or(false),
                    authority_host: file
                        .authority_host
                        .clone()
                        .unwrap_or_else(|| AzureConfig::AUTHORITY_HOST.to_owned()),
                    endpoint: file
                        .endpoint
                        .clone()
                        .unwrap_or_else(|| AzureConfig::ENDPOINT.to_owned()),
                }
            }
        };
        let regions = match (&kind, file.regions.is_empty()) {
            (ProviderKind::Local { .. }, true) => {
                vec![scitq_provisioner::local::REGION.to_owned()]
            }
            (ProviderKind::Local { .. }, false) => {
                return Err(bad("a local provider has no regions".to_owned()));
            }
            (_, true) => return Err(bad("regions = [...] needs at least one region".to_owned())),
            (_, false) => file.regions.clone(),
        };
        // A local provider's network is the docker mode's: processes have none.
        if matches!(kind, ProviderKind::Local { .. })
            && file.network.is_some()
            && file.image.is_none()
        {
            return Err(bad(
                "network is for the docker mode of kind \"local\": set image too".to_owned(),
            ));
        }
        if !matches!(kind, ProviderKind::Local { .. }) && file.image.is_none() {
            return Err(bad(format!("image is required for kind {:?}", file.kind)));
        }
        let deploy_timeout = match &file.deploy_timeout {
            Some(v) => duration(&name, "deploy_timeout", v)?,
            None => Duration::from_secs(600),
        };
        Ok(ProviderConfig {
            name: name.clone(),
            regions,
            image: file.image.clone(),
            network: file.network.clone(),
            ssh_key: file.ssh_key.clone(),
            quota: Quota {
                instances: file.max_instances,
                cores: file.max_cores,
                memory_mib: file.max_memory_gib.map(|g| g * 1024),
            },
            deploy_timeout,
            kind,
            file,
        })
    }

    /// The block as a config file shows it, secrets hidden.
    pub fn to_file(&self) -> ProviderFile {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<hidden>".to_owned());
        ProviderFile {
            password: hide(&self.file.password),
            application_credential_secret: hide(&self.file.application_credential_secret),
            client_secret: hide(&self.file.client_secret),
            ..self.file.clone()
        }
    }
}

/// Validates every `[[provider]]`: names unique.
pub fn providers(
    files: Vec<ProviderFile>,
) -> Result<BTreeMap<String, ProviderConfig>, ProviderConfigError> {
    let mut out = BTreeMap::new();
    for file in files {
        let config = ProviderConfig::from_file(file)?;
        if out.contains_key(&config.name) {
            return Err(ProviderConfigError::Duplicate(config.name));
        }
        out.insert(config.name.clone(), config);
    }
    Ok(out)
}

impl Recruit {
    pub fn from_file(file: RecruitFile) -> Result<Recruit, ProviderConfigError> {
        let interval = match file.interval {
            Some(value) => {
                let d = humantime::parse_duration(&value).map_err(|e| {
                    ProviderConfigError::Interval {
                        value: value.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if d < Duration::from_millis(100) {
                    return Err(ProviderConfigError::Interval {
                        value,
                        reason: "at least 100ms".to_owned(),
                    });
                }
                d
            }
            None => Duration::from_secs(10),
        };
        Ok(Recruit { interval })
    }

    pub fn to_file(&self) -> RecruitFile {
        RecruitFile {
            interval: Some(humantime::format_duration(self.interval).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, ProviderConfig>, String> {
        #[derive(Deserialize)]
        struct F {
            provider: Vec<ProviderFile>,
        }
        let f: F = toml::from_str(text).map_err(|e| e.to_string())?;
        providers(f.provider).map_err(|e| e.to_string())
    }

    #[test]
    fn a_local_provider_needs_only_its_name_and_kind() {
        let p = parse("[[provider]]\nname = \"local\"\nkind = \"local\"\n").unwrap();
        let local = &p["local"];
        assert_eq!(local.regions, vec!["local"]);
        assert_eq!(local.deploy_timeout, Duration::from_secs(600));
        assert_eq!(local.quota, Quota::default());
        let docker = "[[provider]]\nname = \"d\"\nkind = \"local\"\nimage = \"scitq-agent\"\n";
        let p = parse(&format!("{docker}network = \"scitq-net\"\n")).unwrap();
        assert_eq!(p["d"].network.as_deref(), Some("scitq-net"));
        let err =
            parse(&docker.replace("image = \"scitq-agent\"\n", "network = \"n\"\n")).unwrap_err();
        assert!(err.contains("network is for the docker mode"), "{err}");
    }

    #[test]
    fn openstack_and_azure_blocks_are_checked_key_by_key() {
        let os = "[[provider]]\nname = \"ovh\"\nkind = \"openstack\"\nauth_url = \"http://127.0.0.1:1/v3\"\n\
                  username = \"u\"\npassword = \"secret\"\nproject = \"p\"\nregions = [\"GRA11\"]\n\
                  image = \"Debian 12\"\nmax_instances = 4\nmax_cores = 16\n";
        let p = parse(os).unwrap();
        assert_eq!(p["ovh"].quota.instances, Some(4));
        assert_eq!(p["ovh"].quota.cores, Some(16));
        let printed = toml::to_string(&p["ovh"].to_file()).unwrap();
        assert!(!printed.contains("secret"), "{printed}");

        let err = parse(&os.replace("image = \"Debian 12\"\n", "")).unwrap_err();
        assert!(err.contains("image is required"), "{err}");
        let err = parse(&os.replace("regions = [\"GRA11\"]\n", "")).unwrap_err();
        assert!(err.contains("regions"), "{err}");
        let err = parse(&format!("{os}tenant_id = \"t\"\n")).unwrap_err();
        assert!(
            err.contains("tenant_id not used by kind \"openstack\""),
            "{err}"
        );
        let err = parse(&os.replace(
            "password = \"secret\"",
            "password_env = \"SCITQ_NO_SUCH_VAR\"",
        ))
        .unwrap_err();
        assert!(err.contains("SCITQ_NO_SUCH_VAR"), "{err}");
        let err = parse(&os.replace("kind = \"openstack\"", "kind = \"aws\"")).unwrap_err();
        assert!(err.contains("unknown kind \"aws\""), "{err}");
        let err = parse(&format!("{os}{os}")).unwrap_err();
        assert!(err.contains("used twice"), "{err}");

        let az = "[[provider]]\nname = \"az\"\nkind = \"azure\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
                  client_secret = \"s\"\nsubscription_id = \"sub\"\nresource_group = \"rg\"\n\
                  subnet_id = \"/subscriptions/sub/x\"\nregions = [\"westeurope\"]\nimage = \"img\"\n";
        assert!(parse(az).is_ok());
        let err = parse(&az.replace("resource_group = \"rg\"\n", "")).unwrap_err();
        assert!(err.contains("resource_group is required"), "{err}");
        let err = parse("[[provider]]\nname = \"a b\"\nkind = \"local\"\n").unwrap_err();
        assert!(err.contains("letters, digits"), "{err}");
    }
}
