//! The agent's Docker daemon, shared by everything that runs containers: task containers
//! (`executor/container.rs`), the `fasterq-dump` fallback (`sra.rs`), the janitor and the
//! supervisor's fence. The connection is opened on first use, so an agent that never runs a
//! container never needs a daemon; images are pulled here, containers signalled and removed.
//!
//! Containers carry the labels [`LABEL_AGENT`] (the agent's work dir) and
//! [`LABEL_EXECUTION`], which the janitor (`janitor.rs`) uses to find them.

use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use nix::sys::signal::Signal;
use scitq_proto::container::{Network, registry_of};
use scitq_proto::v1::RegistryCredential;

/// Label naming the work dir of the agent that owns a container.
pub const LABEL_AGENT: &str = "scitq.agent";
/// Label holding the execution id of a container.
pub const LABEL_EXECUTION: &str = "scitq.execution";

/// The agent's connection to the Docker daemon, opened (and the API version negotiated) on
/// first use, so an agent that never runs a container never needs a daemon.
#[derive(Debug)]
pub struct Engine {
    docker: tokio::sync::OnceCell<Docker>,
    /// Network mode of containers whose task does not say.
    pub network: Network,
    /// Longest time an image pull may take.
    pub pull_timeout: Duration,
    /// The value of [`LABEL_AGENT`] on this agent's containers.
    pub scope: String,
    /// Host folders a task may bind-mount with `-v` (`--allow-mount`).
    pub allowed_mounts: Vec<std::path::PathBuf>,
}

impl Engine {
    pub fn new(network: Network, pull_timeout: Duration, scope: String) -> Engine {
        Engine {
            docker: tokio::sync::OnceCell::new(),
            network,
            pull_timeout,
            scope,
            allowed_mounts: Vec::new(),
        }
    }

    pub async fn docker(&self) -> Result<&Docker, DockerError> {
        self.docker
            .get_or_try_init(|| async {
                Docker::connect_with_local_defaults()?
                    .negotiate_version()
                    .await
            })
            .await
    }
}

/// The message Docker or the registry gave, without bollard's wrapping.
pub fn message_of(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

pub(crate) fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Why an image is not there to run (`message`: what Docker or the registry said).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("cannot inspect image {image}: {message}")]
    Inspect { image: String, message: String },
    #[error("cannot pull image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("cannot pull image {image}: no result after {}", humantime::format_duration(*limit))]
    PullTimedOut { image: String, limit: Duration },
}

/// Pulls `image` unless the daemon has it, within `limit`.
pub(crate) async fn ensure_image(
    docker: &Docker,
    image: &str,
    credentials: &[RegistryCredential],
    limit: Duration,
) -> Result<(), ImageError> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => {
            return Err(ImageError::Inspect {
                image: image.to_owned(),
                message: message_of(&e),
            });
        }
    }
    let registry = registry_of(image);
    let auth = credentials
        .iter()
        .find(|c| Some(c.registry.as_str()) == registry)
        .map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.registry.clone()),
            ..DockerCredentials::default()
        });
    // Without a tag Docker would pull every tag of the repository.
    let reference = if has_tag_or_digest(image) {
        image.to_owned()
    } else {
        format!("{image}:latest")
    };
    tracing::info!(
        image,
        registry,
        authenticated = auth.is_some(),
        "pulling image"
    );
    let options = CreateImageOptionsBuilder::default()
        .from_image(&reference)
        .build();
    let pull = async {
        let mut progress = docker.create_image(Some(options), None, auth);
        while let Some(step) = progress.next().await {
            step.map_err(|e| ImageError::Pull {
                image: image.to_owned(),
                message: message_of(&e),
            })?;
        }
        Ok(())
    };
    match tokio::time::timeout(limit, pull).await {
        Ok(result) => result,
        Err(_) => Err(ImageError::PullTimedOut {
            image: image.to_owned(),
            limit,
        }),
    }
}

fn has_tag_or_digest(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || last.contains(':')
}

/// Kills a container now, unpausing it first (SIGKILL does not reach a paused one).
pub(crate) async fn kill(docker: &Docker, container: &str) {
    signal(docker, container, Signal::SIGCONT).await;
    signal(docker, container, Signal::SIGKILL).await;
}

/// Maps a signal to the container: SIGSTOP pauses, SIGCONT unpauses, others are sent.
pub(crate) async fn signal(docker: &Docker, container: &str, signal: Signal) {
    let result = match signal {
        Signal::SIGSTOP => docker.pause_container(container).await,
        Signal::SIGCONT => docker.unpause_container(container).await,
        other => {
            let options = KillContainerOptionsBuilder::default()
                .signal(other.as_str())
                .build();
            docker.kill_container(container, Some(options)).await
        }
    };
    match result {
        Ok(()) => tracing::debug!(container, %signal, "signal applied"),
        // Not paused, not running: nothing to do (Docker 20.10 says so with a 500).
        Err(e)
            if status_of(&e) == Some(409)
                || message_of(&e).contains("is not paused")
                || message_of(&e).contains("is not running") =>
        {
            tracing::debug!(container, %signal, "signal not applied: {}", message_of(&e));
        }
        Err(e) => tracing::warn!(container, %signal, "cannot signal container: {}", message_of(&e)),
    }
}

/// Removes a container and its anonymous volumes; one already gone is not an error.
pub async fn remove(docker: &Docker, container: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(container, Some(options)).await {
        Ok(()) => tracing::debug!(container, "container removed"),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => tracing::warn!(container, "cannot remove container: {}", message_of(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_errors_name_the_image() {
        let timed_out = ImageError::PullTimedOut {
            image: "busybox:1".into(),
            limit: Duration::from_secs(3),
        };
        assert_eq!(
            timed_out.to_string(),
            "cannot pull image busybox:1: no result after 3s"
        );
        let denied = ImageError::Pull {
            image: "127.0.0.1:5000/tiny:1".into(),
            message: "unauthorized".into(),
        };
        assert_eq!(
            denied.to_string(),
            "cannot pull image 127.0.0.1:5000/tiny:1: unauthorized"
        );
    }

    #[test]
    fn tags_and_digests() {
        assert!(has_tag_or_digest("busybox:1"));
        assert!(has_tag_or_digest("127.0.0.1:5000/tiny:1"));
        assert!(has_tag_or_digest("x@sha256:abc"));
        assert!(!has_tag_or_digest("127.0.0.1:5000/tiny"));
        assert!(!has_tag_or_digest("busybox"));
    }
}
