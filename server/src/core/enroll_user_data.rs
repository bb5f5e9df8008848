//! The cloud-init user data of a recruited machine: `deploy/cloud-init.yaml` with its
//! `{{key}}`s replaced. Every value is checked first, so none can break out of the YAML or
//! of the shell quoting it lands in (a name, a URL or a token with a quote, a `$` or a
//! newline is refused, not escaped).

use std::fmt::Write as _;

/// The template, as shipped in `deploy/`.
pub const TEMPLATE: &str = include_str!("../../../deploy/cloud-init.yaml");
/// The agent's systemd unit, written on the machine by the user data.
pub const AGENT_UNIT: &str = include_str!("../../../deploy/scitq-agent.service");
/// Where the user data puts scitqd's CA certificate on the machine.
pub const SERVER_CA_PATH: &str = "/etc/scitq/server-ca.pem";

/// What goes into one machine's user data.
#[derive(Clone, Debug)]
pub struct UserData<'a> {
    /// scitqd's address as the machine reaches it (`HOST:PORT` or `https://HOST:PORT`).
    pub server: &'a str,
    /// The instance name: the agent's `--name`, which the token is bound to.
    pub name: &'a str,
    pub enroll_token: &'a str,
    pub concurrency: u32,
    /// `None`: automatic.
    pub prefetch: Option<u32>,
    /// Where the machine downloads scitq-agent from.
    pub agent_url: &'a str,
    /// Hex SHA-256 of that binary.
    pub agent_sha256: &'a str,
    /// PEM of the CA that signed scitqd's certificate, when machines cannot know it.
    pub server_ca_pem: Option<&'a str>,
    /// The only batch its agent takes tasks of.
    pub batch: Option<&'a str>,
}

/// A value the template cannot take.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "cannot put {field} {value:?} in cloud-init user data: it must be non-empty printable \
         text without spaces, quotes, `$`, `\\` or backquotes"
    )]
    Unsafe { field: &'static str, value: String },
    #[error("agent sha256 {0:?} is not 64 hex digits")]
    Sha256(String),
    #[error("the server CA is not a PEM certificate (BEGIN CERTIFICATE ... END CERTIFICATE)")]
    CaPem,
}

fn safe(field: &'static str, value: &str) -> Result<(), RenderError> {
    let bad = |c: char| {
        !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '`' | '$' | '\\' | '#' | '{' | '}')
    };
    if value.is_empty() || value.chars().any(bad) {
        return Err(RenderError::Unsafe {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Renders the user data.
/// The agent's environment (`KEY=value` lines, the values checked): what the user data
/// writes to `/etc/scitq/agent.env`, and all a local instance gets (its user data).
pub fn agent_env(data: &UserData<'_>) -> Result<String, RenderError> {
    safe("server", data.server)?;
    safe("name", data.name)?;
    safe("enrollment token", data.enroll_token)?;
    if let Some(batch) = data.batch {
        safe("batch", batch)?;
    }
    let prefetch = data
        .prefetch
        .map_or_else(|| "auto".to_owned(), |p| p.to_string());
    let mut env = format!(
        "SCITQ_SERVER={}\nSCITQ_NAME={}\nSCITQ_ENROLL_TOKEN={}\nSCITQ_CONCURRENCY={}\n\
         SCITQ_PREFETCH={prefetch}\n",
        data.server,
        data.name,
        data.enroll_token,
        data.concurrency.max(1)
    );
    if let Some(batch) = data.batch {
        let _ = writeln!(env, "SCITQ_BATCH={batch}");
    }
    if data.server_ca_pem.is_some() {
        let _ = writeln!(env, "SCITQ_SERVER_CA={SERVER_CA_PATH}");
    }
    Ok(env)
}

pub fn render(data: &UserData<'_>) -> Result<String, RenderError> {
    let env = agent_env(data)?;
    safe("agent URL", data.agent_url)?;
    if data.agent_sha256.len() != 64 || !data.agent_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(RenderError::Sha256(data.agent_sha256.to_owned()));
    }
    let pem = match data.server_ca_pem {
        Some(pem) => {
            let pem = pem.trim();
            let lines_ok = pem
                .lines()
                .all(|l| l.chars().all(|c| c.is_ascii_graphic() || c == ' '));
            if !pem.starts_with("-----BEGIN CERTIFICATE-----")
                || !pem.ends_with("-----END CERTIFICATE-----")
                || !lines_ok
            {
                return Err(RenderError::CaPem);
            }
            pem
        }
        None => "",
    };
    let values: [(&str, &str); 5] = [
        ("agent_env", env.trim_end()),
        ("server_ca_pem", pem),
        ("agent_unit", AGENT_UNIT.trim_end()),
        ("agent_url", data.agent_url),
        ("agent_sha256", data.agent_sha256),
    ];
    let mut out = String::with_capacity(TEMPLATE.len() + AGENT_UNIT.len() + pem.len());
    for line in TEMPLATE.lines() {
        let mut line = line.to_owned();
        for (key, value) in &values {
            let placeholder = format!("{{{{{key}}}}}");
            if !line.contains(&placeholder) {
                continue;
            }
            // A value of several lines keeps the indentation of its placeholder's line
            // (they sit in YAML block scalars).
            let indent: String = line.chars().take_while(|c| *c == ' ').collect();
            let value = value.replace('\n', &format!("\n{indent}"));
            line = line.replace(&placeholder, &value);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn data() -> UserData<'static> {
        UserData {
            server: "https://scitq.example.org:5000",
            name: "scitq-node-1",
            enroll_token: "feedfeedfeedfeedfeedfeedfeedfeed",
            concurrency: 4,
            prefetch: None,
            agent_url: "https://scitq.example.org:5000/agent/scitq-agent",
            agent_sha256: SHA,
            server_ca_pem: None,
            batch: None,
        }
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).expect("the user data is YAML")
    }

    fn file<'a>(doc: &'a serde_yaml::Value, path: &str) -> &'a str {
        doc["write_files"]
            .as_sequence()
            .expect("write_files")
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in write_files"))["content"]
            .as_str()
            .expect("content")
    }

    #[test]
    fn every_placeholder_is_filled_and_the_result_is_cloud_config() {
        let text = render(&data()).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(!text.contains("{{"), "{text}");
        let doc = yaml(&text);
        let env = file(&doc, "/etc/scitq/agent.env");
        for line in [
            "SCITQ_SERVER=https://scitq.example.org:5000",
            "SCITQ_NAME=scitq-node-1",
            "SCITQ_ENROLL_TOKEN=feedfeedfeedfeedfeedfeedfeedfeed",
            "SCITQ_CONCURRENCY=4",
            "SCITQ_PREFETCH=auto",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} not in {env}");
        }
        assert!(!env.contains("SCITQ_SERVER_CA"), "{env}");
        assert_eq!(
            file(&doc, "/etc/systemd/system/scitq-agent.service"),
            AGENT_UNIT
        );
        let script = file(&doc, "/usr/local/lib/scitq/install-agent");
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(script.contains(&format!("sha256='{SHA}'")), "{script}");
        let run = doc["runcmd"][0].as_sequence().expect("runcmd");
        assert!(
            run[2]
                .as_str()
                .unwrap()
                .contains("systemctl enable --now scitq-agent")
        );
    }

    #[test]
    fn a_server_ca_is_written_and_named_to_the_agent() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA==\n-----END CERTIFICATE-----\n";
        let text = render(&UserData {
            server_ca_pem: Some(pem),
            prefetch: Some(3),
            ..data()
        })
        .unwrap();
        let doc = yaml(&text);
        assert_eq!(file(&doc, SERVER_CA_PATH), pem);
        let env = file(&doc, "/etc/scitq/agent.env");
        assert!(
            env.contains("SCITQ_SERVER_CA=/etc/scitq/server-ca.pem\n"),
            "{env}"
        );
        assert!(env.contains("SCITQ_PREFETCH=3\n"), "{env}");
        let bad = render(&UserData {
            server_ca_pem: Some("not a certificate"),
            ..data()
        });
        assert_eq!(bad.unwrap_err(), RenderError::CaPem);
    }

    #[test]
    fn a_batch_reaches_the_agent_and_the_environment_alone_serves_local_machines() {
        let env = agent_env(&UserData {
            batch: Some("rec"),
            ..data()
        })
        .unwrap();
        assert_eq!(
            env,
            "SCITQ_SERVER=https://scitq.example.org:5000\nSCITQ_NAME=scitq-node-1\n\
             SCITQ_ENROLL_TOKEN=feedfeedfeedfeedfeedfeedfeedfeed\nSCITQ_CONCURRENCY=4\n\
             SCITQ_PREFETCH=auto\nSCITQ_BATCH=rec\n"
        );
        let doc = yaml(
            &render(&UserData {
                batch: Some("rec"),
                ..data()
            })
            .unwrap(),
        );
        assert_eq!(file(&doc, "/etc/scitq/agent.env"), env);
        for batch in ["a b", "$x", "a'b"] {
            let err = agent_env(&UserData {
                batch: Some(batch),
                ..data()
            })
            .unwrap_err();
            assert!(
                matches!(err, RenderError::Unsafe { field: "batch", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn values_that_could_break_out_are_refused() {
        for name in ["a'b", "a b", "a$(x)", "a\nb", "", "a\"b", "a`b`"] {
            let err = render(&UserData { name, ..data() }).unwrap_err();
            assert!(
                matches!(err, RenderError::Unsafe { field: "name", .. }),
                "{err}"
            );
        }
        let url = "https://x/'; rm -rf /; '";
        assert!(
            render(&UserData {
                agent_url: url,
                ..data()
            })
            .is_err()
        );
        assert_eq!(
            render(&UserData {
                agent_sha256: "abc",
                ..data()
            })
            .unwrap_err(),
            RenderError::Sha256("abc".into())
        );
    }
}
