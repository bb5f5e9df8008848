//! Registry credentials from the server's configuration (`[[registry]]` in the TOML file).
//! An assignment carries the credential of its image's registry only: an agent never gets
//! credentials its tasks do not need.

use scitq_proto::container::registry_of;
use serde::{Deserialize, Serialize};

/// One `[[registry]]` entry.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Host and port as image references spell them, e.g. `registry.example.org:5000`.
    pub host: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A registry login an assignment carries.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The configured registries.
#[derive(Clone, Debug, Default)]
pub struct Registries(Vec<Registry>);

impl Registries {
    pub fn new(registries: Vec<Registry>) -> Registries {
        Registries(registries)
    }

    /// The credential for `image`'s registry, if the server has one.
    pub fn for_image(&self, image: &str) -> Vec<RegistryCredential> {
        let Some(registry) = registry_of(image) else {
            return Vec::new();
        };
        self.0
            .iter()
            .filter(|r| r.host == registry)
            .take(1)
            .map(|r| RegistryCredential {
                registry: r.host.clone(),
                username: r.username.clone(),
                password: r.password.clone(),
            })
            .collect()
    }

    /// Checks the entries: hosts non-empty, without scheme or path, not repeated.
    pub fn validate(registries: &[Registry]) -> Result<(), String> {
        for (i, r) in registries.iter().enumerate() {
            if r.host.is_empty() || r.host.contains("://") || r.host.contains('/') {
                return Err(format!(
                    "registry host {:?} must be HOST or HOST:PORT, without scheme or path",
                    r.host
                ));
            }
            if registries[..i].iter().any(|o| o.host == r.host) {
                return Err(format!("registry host {:?} is listed twice", r.host));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(host: &str) -> Registry {
        Registry {
            host: host.into(),
            username: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn only_the_image_registry_credential_is_handed_out() {
        let registries = Registries::new(vec![
            registry("127.0.0.1:5000"),
            registry("registry.example.org"),
        ]);
        let got = registries.for_image("127.0.0.1:5000/tiny:1");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].registry, "127.0.0.1:5000");
        assert!(registries.for_image("busybox").is_empty());
        assert!(registries.for_image("127.0.0.1:5001/tiny:1").is_empty());
        assert!(registries.for_image("").is_empty());
        assert!(!format!("{:?}", registry("h")).contains("\"p\""));
    }

    #[test]
    fn bad_hosts_are_named() {
        let err = Registries::validate(&[registry("https://h/x")]).unwrap_err();
        assert!(err.contains("\"https://h/x\""), "{err}");
        let err = Registries::validate(&[registry("h"), registry("h")]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
