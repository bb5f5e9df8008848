//! Storage remotes read from an rclone.conf, so the same file serves rclone and scitq.

use std::collections::BTreeMap;
use std::path::Path;

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine;

use crate::error::{Result, StorageError};

/// rclone's fixed key for "obscured" passwords (rclone `fs/config/obscure`). Obscuring only
/// keeps passwords from being read over a shoulder; it is not encryption.
const OBSCURE_KEY: [u8; 32] = [
    0x9c, 0x93, 0x5b, 0x48, 0x73, 0x0a, 0x55, 0x4d, 0x6b, 0xfd, 0x7c, 0x63, 0xc8, 0x86, 0xa9, 0x2b,
    0xd3, 0x90, 0x19, 0x8e, 0xb8, 0x12, 0x8a, 0xfb, 0xf4, 0xde, 0x16, 0x2b, 0x8b, 0x95, 0xf6, 0x38,
];

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The named remotes of an rclone.conf: section name → its keys.
///
/// Parsing keeps every section, whatever its type: a config that also holds remotes scitq
/// cannot use (Google Drive, say) still loads, and only using such a remote fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remotes {
    remotes: BTreeMap<String, Remote>,
}

/// One remote: its rclone `type` and its other keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub kind: String,
    keys: BTreeMap<String, String>,
}

impl Remote {
    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The clear text of an obscured key (rclone's `pass`, `key`...).
    pub fn revealed(&self, key: &str) -> Result<Option<String>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        reveal(value)
            .map(Some)
            .map_err(|reason| StorageError::BadRemote {
                remote: self.name.clone(),
                reason: format!("{key} is not an rclone-obscured value: {reason}"),
            })
    }
}

impl Remotes {
    /// No remotes: only the built-in schemes work.
    pub fn empty() -> Remotes {
        Remotes::default()
    }

    /// Parses the text of an rclone.conf (the agent receives it from the server as a string).
    pub fn parse(text: &str) -> Result<Remotes> {
        let ini = ini::Ini::load_from_str(text).map_err(|e| StorageError::RcloneConfig {
            reason: e.to_string(),
        })?;
        let mut remotes = BTreeMap::new();
        for (section, props) in ini.iter() {
            let Some(name) = section else {
                continue;
            };
            let keys: BTreeMap<String, String> = props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let Some(kind) = keys.get("type").cloned() else {
                return Err(StorageError::BadRemote {
                    remote: name.to_string(),
                    reason: "no type key".to_string(),
                });
            };
            let remote = Remote {
                name: name.to_string(),
                kind,
                keys,
            };
            remotes.insert(name.to_string(), remote);
        }
        Ok(Remotes { remotes })
    }

    /// Reads and parses an rclone.conf file.
    pub fn load(path: &Path) -> Result<Remotes> {
        let text = std::fs::read_to_string(path).map_err(|e| StorageError::RcloneConfig {
            reason: format!("{}: {e}", path.display()),
        })?;
        Remotes::parse(&text).map_err(|e| match e {
            StorageError::RcloneConfig { reason } => StorageError::RcloneConfig {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Remote> {
        self.remotes.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.remotes.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// These remotes plus those of `fallback` whose names these lack: a name in both keeps
    /// this side's definition (`scitqctl fetch` puts scitqd's remotes over the local file's).
    pub fn with_fallback(mut self, fallback: Remotes) -> Remotes {
        for (name, remote) in fallback.remotes {
            self.remotes.entry(name).or_insert(remote);
        }
        self
    }
}

/// rclone's `reveal`: base64url (no padding) of a 16-byte IV followed by the AES-256-CTR
/// ciphertext under rclone's published fixed key.
pub fn reveal(obscured: &str) -> std::result::Result<String, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(obscured.trim())
        .map_err(|e| format!("bad base64: {e}"))?;
    if bytes.len() < 16 {
        return Err("too short".to_string());
    }
    let (iv, cipher_text) = bytes.split_at(16);
    let mut plain = cipher_text.to_vec();
    let mut cipher = Aes256Ctr::new(&OBSCURE_KEY.into(), iv.into());
    cipher.apply_keystream(&mut plain);
    String::from_utf8(plain).map_err(|_| "not utf-8 once revealed".to_string())
}

/// rclone's `obscure` with a caller-chosen IV (tests; a config writer would use a random one).
pub fn obscure_with_iv(clear: &str, iv: [u8; 16]) -> String {
    let mut data = clear.as_bytes().to_vec();
    let mut cipher = Aes256Ctr::new(&OBSCURE_KEY.into(), (&iv).into());
    cipher.apply_keystream(&mut data);
    let mut out = iv.to_vec();
    out.extend_from_slice(&data);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_keys() {
        let conf = "[mys3]\ntype = s3\nprovider = Minio\nendpoint = http://127.0.0.1:9000\n\n[box]\ntype = ftp\nhost = h\n";
        let remotes = Remotes::parse(conf).unwrap();
        let names: Vec<_> = remotes.names().collect();
        assert_eq!(names, ["box", "mys3"]);
        let s3 = remotes.get("mys3").unwrap();
        assert_eq!(s3.kind, "s3");
        assert_eq!(s3.get("endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.get("region"), None);
    }

    #[test]
    fn with_fallback_adds_missing_names_and_keeps_its_own() {
        let server = Remotes::parse("[lab]\ntype = s3\nendpoint = http://server\n").unwrap();
        let local =
            Remotes::parse("[lab]\ntype = s3\nendpoint = http://local\n\n[mine]\ntype = local\n")
                .unwrap();
        let merged = server.with_fallback(local);
        assert_eq!(merged.names().collect::<Vec<_>>(), ["lab", "mine"]);
        assert_eq!(
            merged.get("lab").unwrap().get("endpoint"),
            Some("http://server")
        );
        assert_eq!(merged.get("mine").unwrap().kind, "local");
    }

    #[test]
    fn a_section_without_type_is_named() {
        let err = Remotes::parse("[broken]\nhost = x\n").unwrap_err();
        assert_eq!(err.to_string(), "rclone remote broken: no type key");
    }

    #[test]
    fn reveal_undoes_obscure() {
        let obscured = obscure_with_iv("s3cr3t pass", [7; 16]);
        assert_eq!(reveal(&obscured).unwrap(), "s3cr3t pass");
        assert_ne!(obscured, "s3cr3t pass");
    }

    #[test]
    fn matches_rclone_test_vectors() {
        // From rclone's own obscure tests (IV of 16 'a' or 'b').
        assert_eq!(
            obscure_with_iv("potato", [b'a'; 16]),
            "YWFhYWFhYWFhYWFhYWFhYXMaGgIlEQ"
        );
        assert_eq!(
            obscure_with_iv("potato", [b'b'; 16]),
            "YmJiYmJiYmJiYmJiYmJiYp3gcEWbAw"
        );
        assert_eq!(reveal("YWFhYWFhYWFhYWFhYWFhYXMaGgIlEQ").unwrap(), "potato");
    }

    #[test]
    fn reveal_rejects_garbage() {
        assert!(reveal("not base64 !!").is_err());
        assert!(reveal("AAAA").is_err());
    }

    #[test]
    fn revealed_names_remote_and_key() {
        let remotes = Remotes::parse("[f]\ntype = ftp\npass = !!\n").unwrap();
        let err = remotes.get("f").unwrap().revealed("pass").unwrap_err();
        assert!(
            err.to_string().starts_with("rclone remote f: pass is not"),
            "{err}"
        );
    }
}
