//! The `scitq.v1` gRPC protocol shared by `scitqd`, `scitq-agent` and `scitqctl`.
//!
//! Generated from `proto/scitq/v1/scitq.proto` at build time with protox, so a fresh
//! checkout builds with cargo alone. [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("scitq.v1");
}

/// The encoded descriptor set of the whole protocol, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scitq_descriptor.bin"));

/// Port scitqd listens on when none is given.
pub const DEFAULT_PORT: u16 = 5000;

/// Name of the batch a task lands in when none is given.
pub const DEFAULT_BATCH: &str = "Default";

/// Most tasks a worker may run at once. The database keeps worker settings as 32-bit signed
/// integers; anything past this is a typo, not a machine.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// Most tasks a worker may hold ahead of its free slots (same reason as [`MAX_CONCURRENCY`]).
pub const MAX_PREFETCH: u32 = 1_000_000;

/// Most input files one final update records (`ExecutionUpdate.inputs`, all inputs together),
/// so that it stays small whatever a task reads: the agent records each input, in order,
/// that still fits, and scitqd keeps no more. An input left out is compared at a resume by
/// its modification times.
pub const MAX_INPUT_FILES_SEEN: usize = 10_000;

/// Each of `inputs`, in order, whose `files` still fit in [`MAX_INPUT_FILES_SEEN`].
pub fn within_input_files_seen<T>(
    inputs: impl IntoIterator<Item = T>,
    files: impl Fn(&T) -> usize,
) -> impl Iterator<Item = T> {
    let mut room = MAX_INPUT_FILES_SEEN;
    inputs
        .into_iter()
        .filter(move |input| match room.checked_sub(files(input)) {
            Some(left) => {
                room = left;
                true
            }
            None => false,
        })
}

/// A worker's prefetch as given on a command line: `auto` (the agent adapts it to how fast
/// its tasks end) or a fixed number of tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchSetting {
    Auto,
    Fixed(u32),
}

impl std::str::FromStr for PrefetchSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Ok(PrefetchSetting::Auto);
        }
        let n: u32 = text
            .trim()
            .parse()
            .map_err(|_| format!("prefetch {text:?} is neither \"auto\" nor a number of tasks"))?;
        if n > MAX_PREFETCH {
            return Err(format!(
                "prefetch {n} is too large: it must be at most {MAX_PREFETCH}"
            ));
        }
        Ok(PrefetchSetting::Fixed(n))
    }
}

impl std::fmt::Display for PrefetchSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrefetchSetting::Auto => f.write_str("auto"),
            PrefetchSetting::Fixed(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PrefetchSetting;

    #[test]
    fn prefetch_reads_auto_or_a_bounded_number() {
        assert_eq!("auto".parse(), Ok(PrefetchSetting::Auto));
        assert_eq!("AUTO".parse(), Ok(PrefetchSetting::Auto));
        assert_eq!("12".parse(), Ok(PrefetchSetting::Fixed(12)));
        assert_eq!("0".parse(), Ok(PrefetchSetting::Fixed(0)));
        let err = "3000000000".parse::<PrefetchSetting>().unwrap_err();
        assert!(
            err.contains("3000000000") && err.contains("1000000"),
            "{err}"
        );
        let err = "lots".parse::<PrefetchSetting>().unwrap_err();
        assert!(err.contains("\"lots\""), "{err}");
        assert_eq!(PrefetchSetting::Auto.to_string(), "auto");
        assert_eq!(PrefetchSetting::Fixed(3).to_string(), "3");
    }
}

pub mod container;

/// Selects rustls's ring crypto provider for the process. Call it first thing in `main`:
/// the workspace enables two providers (tonic's ring, the storage clients' aws-lc-rs), and
/// rustls then refuses to guess, panicking at the first TLS connection.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
