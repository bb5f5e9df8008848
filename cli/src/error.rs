//! How a failed command is told to the user: one lowercase line on stderr and an exit code
//! (2 for a command line or configuration the CLI refuses before sending anything, 1 for
//! everything else).

use std::fmt;

use tonic::{Code, Status};

use crate::address::ServerAddress;

/// A mistake in what the user asked for, found before anything was sent: exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for an `anyhow::Error` carrying a [`UsageError`].
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Where the first invalid UTF-8 sequence of `bytes` is: its 1-based line, its byte offset in
/// that line (0-based) and in the whole text; `None` when `bytes` are valid UTF-8.
pub fn utf8_error_position(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let offset = std::str::from_utf8(bytes).err()?.valid_up_to();
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    Some((line, offset - line_start, offset))
}

/// Refuses an argument list with a non-UTF-8 argument, naming which one and where (clap
/// would only say that one of them is).
pub fn check_utf8_args(args: &[std::ffi::OsString]) -> Result<(), UsageError> {
    use std::os::unix::ffi::OsStrExt as _;
    for (index, arg) in args.iter().enumerate().skip(1) {
        if let Some((_, _, offset)) = utf8_error_position(arg.as_bytes()) {
            return Err(UsageError(format!(
                "argument {index} ({:?}) is not valid UTF-8 at byte {offset}",
                arg.to_string_lossy()
            )));
        }
    }
    Ok(())
}

/// What to print and how to exit for a failed command.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// `None` when nothing should be said (stdout closed by the reader, as in `| head`).
    pub message: Option<String>,
    pub code: u8,
}

/// Turns an error into its message and exit code. `server` is the address scitqctl talked
/// to, if it got that far, so an unreachable server can be named.
pub fn report(err: &anyhow::Error, server: Option<&ServerAddress>) -> Report {
    let code = if err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    };
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(status) = cause.downcast_ref::<Status>() {
            parts.push(describe_status(status, server));
            // A status' own sources repeat its message.
            break;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return Report {
                message: None,
                code: 0,
            };
        }
        let text = cause.to_string();
        // Many errors print their source in their own message (opendal's, and ours that wrap
        // one): saying it again would print it twice.
        if parts
            .last()
            .is_some_and(|outer: &String| outer.contains(&text))
        {
            continue;
        }
        parts.push(text);
    }
    Report {
        message: Some(parts.join(": ")),
        code,
    }
}

fn describe_status(status: &Status, server: Option<&ServerAddress>) -> String {
    let message = status.message();
    let detail = |prefix: &str| {
        if message.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}: {message}")
        }
    };
    match status.code() {
        // The server's own message may already say it; do not say it twice.
        Code::Unauthenticated if message.contains("token") => message.to_owned(),
        Code::Unauthenticated => detail("bad token"),
        Code::PermissionDenied if !message.is_empty() => message.to_owned(),
        Code::PermissionDenied => "permission denied (an admin token is needed)".to_owned(),
        Code::Unavailable => match server {
            Some(addr) => detail(&format!("cannot reach scitqd at {addr}")),
            None => detail("cannot reach scitqd"),
        },
        Code::DeadlineExceeded => detail("timed out"),
        Code::Unimplemented => detail("the server does not support this request"),
        _ if message.is_empty() => status.code().description().to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn usage_errors_exit_2() {
        let report = report(&usage("empty command"), None);
        assert_eq!(report.code, 2);
        assert_eq!(report.message.as_deref(), Some("empty command"));
    }

    #[test]
    fn statuses_say_what_happened() {
        let addr: ServerAddress = "h:1".parse().unwrap();
        let err = anyhow::Error::from(Status::unauthenticated("unknown token"));
        assert_eq!(
            report(&err, Some(&addr)).message.as_deref(),
            Some("unknown token")
        );
        let err = anyhow::Error::from(Status::unauthenticated("rejected"));
        assert_eq!(
            report(&err, Some(&addr)).message.as_deref(),
            Some("bad token: rejected")
        );
        let err = anyhow::Error::from(Status::unavailable("connection refused"));
        assert_eq!(
            report(&err, Some(&addr)).message.as_deref(),
            Some("cannot reach scitqd at h:1: connection refused")
        );
        let err =
            anyhow::Error::from(Status::not_found("no batch \"x\"")).context("cannot stop batch x");
        let report = report(&err, Some(&addr));
        assert_eq!(
            report.message.as_deref(),
            Some("cannot stop batch x: no batch \"x\"")
        );
        assert_eq!(report.code, 1);
    }

    #[test]
    fn closed_stdout_is_quiet() {
        let err = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing output");
        assert_eq!(
            report(&err, None),
            Report {
                message: None,
                code: 0
            }
        );
    }

    #[test]
    fn plain_errors_keep_their_context() {
        let err = Err::<(), _>(std::io::Error::other("disk on fire"))
            .context("cannot read tasks.txt")
            .unwrap_err();
        assert_eq!(
            report(&err, None).message.as_deref(),
            Some("cannot read tasks.txt: disk on fire")
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        assert_eq!(utf8_error_position(b"fine\nalso fine"), None);
        assert_eq!(
            utf8_error_position(b"echo ok\necho \xff bad\n"),
            Some((2, 5, 13))
        );
        assert_eq!(utf8_error_position(b"\xc3"), Some((1, 0, 0)));
        let args = ["scitqctl", "task", "x"].map(std::ffi::OsString::from);
        assert!(check_utf8_args(&args).is_ok());
        use std::os::unix::ffi::OsStringExt as _;
        let bad = vec![
            "scitqctl".into(),
            "--".into(),
            std::ffi::OsString::from_vec(b"ab\xffc".to_vec()),
        ];
        let err = check_utf8_args(&bad).unwrap_err().0;
        assert!(
            err.contains("argument 2") && err.contains("byte 2"),
            "{err}"
        );
    }
}
