//! The address of scitqd as users write it: `HOST`, `HOST:PORT`, `http://HOST:PORT` or
//! `https://HOST:PORT`, a missing port meaning [`scitq_proto::DEFAULT_PORT`].

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// Why a server address could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    input: String,
    reason: String,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid server address {:?}: {}",
            self.input, self.reason
        )
    }
}

impl std::error::Error for AddressError {}

/// A parsed, checked server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    tls: bool,
    /// Host name or IP address; IPv6 addresses keep their brackets.
    host: String,
    port: u16,
}

impl ServerAddress {
    /// True for `https://` addresses.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The URI tonic connects to.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// True when the host is this machine (`localhost`, 127.0.0.0/8, `::1`): a token sent
    /// there in clear never crosses a network.
    pub fn is_loopback(&self) -> bool {
        let host = self.host_name();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The host name, without brackets for IPv6 (the TLS server name).
    pub fn host_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            write!(f, "https://{}:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddress {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        parse(input).map_err(|reason| AddressError {
            input: input.to_owned(),
            reason,
        })
    }
}

fn parse(input: &str) -> Result<ServerAddress, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("empty address".into());
    }
    let (tls, rest) = match trimmed.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => return Err(format!("unknown scheme {scheme} (use http or https)")),
        None => (false, trimmed),
    };
    // A trailing slash is harmless; any other path is not something a gRPC address has.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("a server address has no path".into());
    }
    if rest.is_empty() {
        return Err("missing host".into());
    }
    let (host, port) = split_host_port(rest)?;
    let port = match port {
        None => scitq_proto::DEFAULT_PORT,
        Some(port) => parse_port(port)?,
    };
    Ok(ServerAddress { tls, host, port })
}

/// Splits `host[:port]`, with IPv6 hosts in brackets (`[::1]:5000`) or bare (`::1`).
fn split_host_port(rest: &str) -> Result<(String, Option<&str>), String> {
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unclosed [ in IPv6 address".to_owned())?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| format!("{ip} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the IPv6 address"))?,
            ),
        };
        return Ok((format!("[{ip}]"), port));
    }
    if rest.parse::<Ipv6Addr>().is_ok() {
        return Ok((format!("[{rest}]"), None));
    }
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if port.is_some_and(|port| port.contains(':')) {
        return Err("too many colons (write IPv6 addresses in brackets: [::1]:5000)".into());
    }
    check_host(host)?;
    Ok((host.to_owned(), port))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host".into());
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    match host.chars().find(|&c| !valid(c)) {
        Some(bad) => Err(format!("invalid character {bad:?} in host {host}")),
        None => Ok(()),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("missing port after ':'".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 is not a port one can connect to".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("port {port} is out of range (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> ServerAddress {
        input.parse().unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    fn reason(input: &str) -> String {
        input.parse::<ServerAddress>().unwrap_err().to_string()
    }

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(ok("example.org").uri(), "http://example.org:5000");
        assert_eq!(ok("127.0.0.1:6000").uri(), "http://127.0.0.1:6000");
        assert_eq!(ok("http://10.0.0.1:7000").uri(), "http://10.0.0.1:7000");
        assert_eq!(ok("http://10.0.0.1").uri(), "http://10.0.0.1:5000");
        let secure = ok("https://scitq.example.org:443/");
        assert!(secure.tls());
        assert_eq!(secure.uri(), "https://scitq.example.org:443");
        assert_eq!(secure.host_name(), "scitq.example.org");
    }

    #[test]
    fn accepts_ipv6() {
        assert_eq!(ok("[::1]:5001").uri(), "http://[::1]:5001");
        assert_eq!(ok("[::1]").uri(), "http://[::1]:5000");
        assert_eq!(ok("::1").uri(), "http://[::1]:5000");
        assert_eq!(ok("https://[::1]").host_name(), "::1");
    }

    #[test]
    fn display_is_what_users_typed_with_the_port() {
        assert_eq!(ok("localhost").to_string(), "localhost:5000");
        assert_eq!(ok("https://h:1").to_string(), "https://h:1");
    }

    #[test]
    fn rejects_garbage_naming_the_input() {
        assert_eq!(
            reason("foo:bar:baz"),
            r#"invalid server address "foo:bar:baz": too many colons (write IPv6 addresses in brackets: [::1]:5000)"#
        );
        assert_eq!(
            reason("http://"),
            r#"invalid server address "http://": missing host"#
        );
        assert_eq!(
            reason("127.0.0.1:99999"),
            r#"invalid server address "127.0.0.1:99999": port 99999 is out of range (1-65535)"#
        );
        assert!(reason("host:abc").contains("port abc is not a number"));
        assert!(reason("host:").contains("missing port"));
        assert!(reason("host:0").contains("port 0"));
        assert!(reason("ftp://host").contains("unknown scheme ftp"));
        assert!(reason(":5000").contains("missing host"));
        assert!(reason("").contains("empty address"));
        assert!(reason("host/path").contains("no path"));
        assert!(reason("bad host").contains("invalid character ' '"));
        assert!(reason("[::1").contains("unclosed"));
        assert!(reason("[nothost]:1").contains("not an IPv6 address"));
    }
}
