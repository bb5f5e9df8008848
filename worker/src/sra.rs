//! The second source of a `run+fastq://ACCESSION` input, used when ENA cannot deliver the run:
//! NCBI's `fasterq-dump`, run in a container of `--sra-tools-image` (pulled when missing,
//! like a task's image), then gzipped so the task finds what ENA would have given it.
//!
//! The container gets the execution's `input/` folder at `/input` and writes into a scratch
//! folder there (`input/.scitq-sra-ACCESSION/`, its temp files too), as the agent's own user
//! so the agent can read and remove what it wrote. `--split-3` names files as ENA does:
//! `ACC_1.fastq` and `ACC_2.fastq` for pairs, `ACC.fastq` for single or unmated reads. Each is
//! then compressed by the agent (flate2, streaming, fast level: the images have no parallel
//! gzip, and a FASTQ compresses nearly as well at level 1) into `input/ACC_1.fastq.gz`
//! and so on, and the scratch folder is removed.
//!
//! The container carries the agent's labels, so the janitor removes it if the agent dies
//! before it does; it is removed as soon as it ends, or when staging is abandoned.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;
use scitq_proto::container::Network;

use crate::docker::{
    Engine, ImageError, LABEL_AGENT, LABEL_EXECUTION, ensure_image, message_of, remove,
};
use crate::state::ExecutionId;

/// Bytes of the container's output kept for the error message.
const TAIL: usize = 2048;

/// Why `fasterq-dump` gave no run.
#[derive(Debug, thiserror::Error)]
pub enum FasterqError {
    #[error("the fasterq-dump fallback needs Docker: cannot reach the Docker daemon: {0}")]
    NoDocker(#[source] bollard::errors::Error),
    #[error("fasterq-dump fallback ({image}): {step}")]
    Failed { image: String, step: DumpError },
}

/// The step of a dump that failed (`message`: what Docker said).
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot create {}: {source}", path.display())]
    Scratch { path: PathBuf, source: io::Error },
    #[error("cannot create a container of {image}: {message}")]
    Create { image: String, message: String },
    #[error("cannot start a container of {image}: {message}")]
    Start { image: String, message: String },
    #[error("cannot wait for fasterq-dump's container: {message}")]
    Wait { message: String },
    #[error("the Docker daemon ended the wait without a status")]
    WaitEnded,
    #[error("fasterq-dump exited with code {code}: {last_line}")]
    Exit { code: i64, last_line: String },
    #[error("cannot gzip what fasterq-dump wrote: {0}")]
    Gzip(#[source] io::Error),
    #[error("fasterq-dump wrote no FASTQ file")]
    NoFastq,
}

/// Where the fallback runs: the agent's Docker engine and the image with `fasterq-dump`.
#[derive(Debug, Clone)]
pub struct Fasterq {
    pub engine: std::sync::Arc<Engine>,
    pub image: String,
}

impl Fasterq {
    /// Dumps the run `accession` into `input` as gzipped FASTQ files; returns their paths.
    /// The error says what failed, Docker's absence included, and names the image.
    pub async fn dump(
        &self,
        id: ExecutionId,
        input: &Path,
        accession: &str,
    ) -> Result<Vec<PathBuf>, FasterqError> {
        let docker = self.engine.docker().await.map_err(FasterqError::NoDocker)?;
        self.dump_with(docker, id, input, accession)
            .await
            .map_err(|step| FasterqError::Failed {
                image: self.image.clone(),
                step,
            })
    }

    async fn dump_with(
        &self,
        docker: &Docker,
        id: ExecutionId,
        input: &Path,
        accession: &str,
    ) -> Result<Vec<PathBuf>, DumpError> {
        ensure_image(docker, &self.image, &[], self.engine.pull_timeout).await?;
        let scratch_name = format!(".scitq-sra-{accession}");
        let scratch = input.join(&scratch_name);
        let fresh = scratch.clone();
        blocking(move || {
            match std::fs::remove_dir_all(&fresh) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::create_dir_all(&fresh)
        })
        .await
        .map_err(|source| DumpError::Scratch {
            path: scratch.clone(),
            source,
        })?;
        let inside = format!("/input/{scratch_name}");
        let body = self.create_body(id, input, &inside, accession);
        let ran = run(docker, body).await;
        let written = match ran {
            Ok(()) => {
                let (from, to) = (scratch.clone(), input.to_path_buf());
                blocking(move || gzip_fastqs(&from, &to))
                    .await
                    .map_err(DumpError::Gzip)
            }
            Err(e) => Err(e),
        };
        let cleanup = scratch.clone();
        if let Err(e) = blocking(move || std::fs::remove_dir_all(cleanup)).await {
            tracing::warn!(execution_id = %id, "cannot remove {}: {e}", scratch.display());
        }
        match written? {
            paths if paths.is_empty() => Err(DumpError::NoFastq),
            paths => Ok(paths),
        }
    }

    fn create_body(
        &self,
        id: ExecutionId,
        input: &Path,
        inside: &str,
        accession: &str,
    ) -> ContainerCreateBody {
        let cmd = [
            "fasterq-dump",
            "--split-3",
            "--outdir",
            inside,
            "--temp",
            inside,
            accession,
        ];
        let labels = HashMap::from([
            (LABEL_AGENT.to_owned(), self.engine.scope.clone()),
            (LABEL_EXECUTION.to_owned(), id.to_string()),
        ]);
        // It downloads from NCBI: an agent whose tasks get no network still lets it out.
        let network = match self.engine.network {
            Network::None => Network::Bridge,
            other => other,
        };
        let user = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            // sra-tools keeps its settings under $HOME, which the agent's user may lack.
            env: Some(vec![format!("HOME={inside}")]),
            user: Some(user),
            working_dir: Some(inside.to_owned()),
            labels: Some(labels),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(HostConfig {
                init: Some(true),
                binds: Some(vec![format!("{}:/input", input.display())]),
                network_mode: Some(network.as_str().to_owned()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}

/// Removes the container when dropped, unless it was removed already: staging may be
/// abandoned (the task canceled) while `fasterq-dump` runs.
struct Guard {
    docker: Docker,
    container: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            let docker = self.docker.clone();
            // `remove` logs its own failure.
            tokio::spawn(async move { remove(&docker, &container).await });
        }
    }
}

/// Creates, starts and waits for the container, then removes it. Err when it could not run or
/// exited with a code other than 0 (with the end of its output).
async fn run(docker: &Docker, body: ContainerCreateBody) -> Result<(), DumpError> {
    let image = body.image.clone().unwrap_or_default();
    let created = match docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
    {
        Ok(created) => created,
        Err(e) => {
            let message = message_of(&e);
            return Err(DumpError::Create { image, message });
        }
    };
    let mut guard = Guard {
        docker: docker.clone(),
        container: Some(created.id.clone()),
    };
    let container = created.id;
    if let Err(e) = docker.start_container(&container, None).await {
        let message = message_of(&e);
        return Err(DumpError::Start { image, message });
    }
    let (code, tail) = tokio::join!(wait(docker, &container), output_tail(docker, &container));
    guard.container = None;
    remove(docker, &container).await;
    match code? {
        0 => Ok(()),
        code => {
            let last = tail.lines().rev().find(|l| !l.trim().is_empty());
            let last_line = last.unwrap_or("no output").trim().to_owned();
            Err(DumpError::Exit { code, last_line })
        }
    }
}

async fn wait(docker: &Docker, container: &str) -> Result<i64, DumpError> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(DumpError::Wait {
            message: message_of(&e),
        }),
        None => Err(DumpError::WaitEnded),
    }
}

/// The last [`TAIL`] bytes of the container's output, both streams.
async fn output_tail(docker: &Docker, container: &str) -> String {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(container, Some(options));
    let mut tail: Vec<u8> = Vec::new();
    while let Some(piece) = logs.next().await {
        let message = match piece {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => message,
            Ok(_) => continue,
            Err(_) => break,
        };
        tail.extend_from_slice(&message);
        if tail.len() > TAIL {
            tail.drain(..tail.len() - TAIL);
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Compresses every `*.fastq` file of `from` into `to/NAME.fastq.gz` (sorted by name), each
/// streamed; returns the paths written. Blocking.
fn gzip_fastqs(from: &Path, to: &Path) -> io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(from)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".fastq"))
        .collect();
    names.sort();
    let mut written = Vec::new();
    for name in names {
        let target = to.join(format!("{name}.gz"));
        let mut source = BufReader::with_capacity(1 << 20, std::fs::File::open(from.join(&name))?);
        let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&target)?);
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        io::copy(&mut source, &mut encoder)?;
        encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        written.push(target);
    }
    Ok(written)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn fastq_files_are_gzipped_under_enas_names() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("SRR1_2.fastq"), "@r/2\nTT\n+\nII\n").unwrap();
        std::fs::write(from.path().join("SRR1_1.fastq"), "@r/1\nAA\n+\nII\n").unwrap();
        std::fs::write(from.path().join("notes.txt"), "not a fastq").unwrap();
        std::fs::create_dir(from.path().join("fasterq.tmp.x")).unwrap();
        let written = gzip_fastqs(from.path(), to.path()).unwrap();
        assert_eq!(
            written,
            [
                to.path().join("SRR1_1.fastq.gz"),
                to.path().join("SRR1_2.fastq.gz")
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&written[1]).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "@r/2\nTT\n+\nII\n");
        assert!(gzip_fastqs(&from.path().join("missing"), to.path()).is_err());
    }
}
