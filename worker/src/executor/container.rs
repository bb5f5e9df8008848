//! A task run in a Docker container (bollard), with the same contract as a native run (see
//! `executor/mod.rs`): the work dir's `input/ output/ tmp/` are mounted at `/input /output
//! /tmp`, `resource/` read-only at `/resource`; env `INPUT OUTPUT TEMP RESOURCE CPU` point
//! there; stdout and stderr are appended to the spool files and reported as
//! `ExecEvent::Output`; the exit code goes in the final report.
//!
//! The image is pulled when missing (with the assignment's credentials for its registry),
//! within `--pull-timeout`; a pull failure fails the execution with the registry's message.
//! Output is read with `docker logs --follow` from the container's start, so an agent that
//! restarts re-attaches by reading the logs again and skipping what its spool files hold.
//! Signals from the agent loop arrive on a channel and map to pause, unpause and kill.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::LogsOptionsBuilder;
use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::Signal;
use scitq_proto::container::{ContainerOptions, Gpus, OptionError, Volume};
use tokio::sync::mpsc;

use super::context::{
    ExecContext, ExecEvent, Runner, TIMEOUT_GRACE, TaskRunner, WorkDirError, prepare, timed_out,
    write_state,
};
use super::spool::{Spool, announce_preamble, append};
use crate::docker::{ImageError, LABEL_AGENT, LABEL_EXECUTION, ensure_image, message_of, signal};
use crate::launch::{CommandError, ContainerSpec, Launch};
use crate::state::{
    ExecDir, ExecutionId, Failure, FinalReport, Phase, StateFile, StateWriter, Stream,
};

/// Why a container run failed before its command could end by itself (the message of its
/// `run` failure; `message`: what Docker said).
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot reach the Docker daemon: {0}")]
    Unreachable(#[source] DockerError),
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{}", refused_mount(volume, allowed))]
    MountRefused {
        volume: Volume,
        allowed: Vec<PathBuf>,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot create a container of {image}: {message}")]
    Create { image: String, message: String },
    #[error("cannot start the container of {image}: {message}")]
    Start { image: String, message: String },
    #[error("container {container} of this execution is gone: {message}")]
    Gone { container: String, message: String },
    #[error("cannot start container {container}: {message}")]
    Restart { container: String, message: String },
    #[error("cannot open {}: {source}", path.display())]
    OpenSpool { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    ReadSpool { path: PathBuf, source: io::Error },
    #[error("cannot wait for container {container}: {wait}")]
    Wait { container: String, wait: String },
    #[error("cannot wait for container {container}: {wait}; {inspect}")]
    WaitNorInspect {
        container: String,
        wait: String,
        inspect: String,
    },
}

/// Runs a task in a container of its image, or re-attaches to the container a previous agent
/// process left.
#[derive(Debug)]
pub(crate) struct InContainer {
    spec: ContainerSpec,
    /// The container to re-attach to instead of creating one.
    reattach: Option<String>,
    /// Signals from the agent loop (see `Handle::Container`).
    signals: Option<mpsc::UnboundedReceiver<Signal>>,
    /// The container, once created: removed after a success.
    container: Option<String>,
}

impl InContainer {
    pub(crate) fn new(
        spec: ContainerSpec,
        reattach: Option<String>,
        signals: Option<mpsc::UnboundedReceiver<Signal>>,
    ) -> InContainer {
        InContainer {
            spec,
            reattach,
            signals,
            container: None,
        }
    }
}

impl TaskRunner for InContainer {
    fn resumes(&self) -> bool {
        self.reattach.is_some()
    }

    async fn run(&mut self, launch: &Launch, ctx: &ExecContext, preamble: Bytes) -> FinalReport {
        let start = match self.reattach.take() {
            Some(container) => Start::Reattach(container),
            None => Start::Fresh { preamble },
        };
        let (report, container) = execute(launch, &self.spec, ctx, &mut self.signals, start).await;
        self.container = container;
        report
    }

    fn state_file(&mut self) -> Option<StateWriter> {
        None
    }

    async fn recorded(&mut self, _id: ExecutionId, _ctx: &ExecContext) {}

    /// A failed container is kept for inspection (the janitor removes it later); a succeeded
    /// one goes now that its report is on disk. After the report, so the slot is free at once.
    async fn reported(self, ctx: &ExecContext, success: bool) {
        if let (Some(container), true) = (self.container, success)
            && let Ok(docker) = ctx.engine.docker().await
        {
            crate::docker::remove(docker, &container).await;
        }
    }
}

/// Whether a task may bind-mount the host path `source`: it is one of the agent's
/// `--allow-mount` folders or below one (component-wise, `..` never allowed).
pub fn mount_allowed(source: &str, allowed: &[PathBuf]) -> bool {
    let source = std::path::Path::new(source);
    if source
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return false;
    }
    allowed.iter().any(|dir| source.starts_with(dir))
}

fn refused_mount(volume: &Volume, allowed: &[PathBuf]) -> String {
    let allowed = if allowed.is_empty() {
        "none".to_owned()
    } else {
        allowed
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "host path {} may not be mounted (-v {volume}): this agent allows {allowed}; \
         start it with --allow-mount {} (or SCITQ_ALLOW_MOUNTS) to allow it",
        volume.source, volume.source
    )
}

/// Where a container run starts from.
#[derive(Debug, Clone)]
enum Start {
    /// A new container; `preamble` goes at the head of its stderr (see `staging`).
    Fresh { preamble: Bytes },
    /// Re-attach to this container, left by a previous agent process.
    Reattach(String),
}

/// Runs the execution in its container. Returns the report and the container, if one was
/// created (the caller removes it once the report is on disk).
async fn execute(
    launch: &Launch,
    spec: &ContainerSpec,
    ctx: &ExecContext,
    signals: &mut Option<mpsc::UnboundedReceiver<Signal>>,
    start: Start,
) -> (FinalReport, Option<String>) {
    let failed = |e: ContainerError| (FinalReport::failed(Failure::Run, e.to_string()), None);
    let docker = match ctx.engine.docker().await {
        Ok(docker) => docker.clone(),
        Err(e) => return failed(ContainerError::Unreachable(e)),
    };
    // What the container's logs start after in the stderr spool, and what of it to announce
    // (a re-attached run announced it already).
    let running = match start {
        Start::Reattach(container) => match reattach(&docker, &ctx.dir, &container).await {
            Ok((spools, ran, skip)) => Running {
                container,
                spools,
                ran,
                head: Head::skip(skip),
            },
            Err(e) => return failed(e),
        },
        Start::Fresh { preamble } => match create(&docker, launch, spec, ctx, &preamble).await {
            Ok((container, spools)) => Running {
                container,
                spools,
                ran: Duration::ZERO,
                head: Head::new(preamble),
            },
            Err((e, container)) => {
                return (FinalReport::failed(Failure::Run, e.to_string()), container);
            }
        },
    };
    let container = running.container.clone();
    let report = follow(&docker, launch, ctx, signals, running).await;
    (report, Some(container))
}

/// A container started (or re-attached to) and what its output continues.
#[derive(Debug)]
struct Running {
    container: String,
    spools: [Spool; 2],
    /// How long it has run already (a re-attached container).
    ran: Duration,
    head: Head,
}

/// The agent's lines at the head of the stderr spool, before the container's own output.
#[derive(Debug)]
struct Head {
    /// Bytes the container's stderr logs come after.
    skip: u64,
    /// The lines still to announce to the agent loop.
    announce: Bytes,
}

impl Head {
    fn new(preamble: Bytes) -> Head {
        Head {
            skip: preamble.len() as u64,
            announce: preamble,
        }
    }

    fn skip(skip: u64) -> Head {
        Head {
            skip,
            announce: Bytes::new(),
        }
    }
}

/// Prepares the work dir (`preamble` at the head of stderr), pulls the image if needed,
/// creates and starts the container.
async fn create(
    docker: &Docker,
    launch: &Launch,
    spec: &ContainerSpec,
    ctx: &ExecContext,
    preamble: &[u8],
) -> Result<(String, [Spool; 2]), (ContainerError, Option<String>)> {
    let Prepared {
        stdout,
        stderr,
        options,
        argv,
    } = prepare_run(docker, launch, spec, ctx, preamble)
        .await
        .map_err(|e| (e, None))?;
    let body = create_body(launch, &spec.image, &options, argv, ctx);
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| {
            let e = ContainerError::Create {
                image: spec.image.clone(),
                message: message_of(&e),
            };
            (e, None)
        })?;
    let container = created.id;
    // Recorded before the start, so that an agent dying now finds it and starts it.
    let running = StateFile {
        execution_id: launch.id,
        task_id: launch.task_id,
        phase: Phase::Running {
            pid: 0,
            container: Some(container.clone()),
            run_timeout_s: launch.run_timeout.map(|limit| limit.as_secs()),
            output: launch.data.output.clone(),
            stderr_preamble: preamble.len() as u64,
        },
    };
    if let Err(e) = write_state(&ctx.dir, running, None).await {
        tracing::warn!(execution_id = %launch.id, "cannot write state.json: {e}");
    }
    if let Err(e) = docker.start_container(&container, None).await {
        let e = ContainerError::Start {
            image: spec.image.clone(),
            message: message_of(&e),
        };
        return Err((e, Some(container)));
    }
    let spools = [
        Spool::new(stdout, 0),
        Spool::new(stderr, preamble.len() as u64),
    ];
    Ok((container, spools))
}

/// Everything a container needs before it is created: the work dir prepared (`preamble` at
/// the head of stderr), its options and command valid, its mounts allowed, its image there.
async fn prepare_run(
    docker: &Docker,
    launch: &Launch,
    spec: &ContainerSpec,
    ctx: &ExecContext,
    preamble: &[u8],
) -> Result<Prepared, ContainerError> {
    let (stdout, mut stderr) = prepare(&ctx.dir, ctx.spares.clone()).await?;
    append(&mut stderr, preamble)
        .await
        .map_err(|source| WorkDirError::Write {
            path: ctx.dir.log(Stream::Stderr),
            source,
        })?;
    let options = spec.options.clone()?;
    let allowed = &ctx.engine.allowed_mounts;
    if let Some(volume) = options
        .volumes
        .iter()
        .find(|v| !mount_allowed(&v.source, allowed))
    {
        return Err(ContainerError::MountRefused {
            volume: volume.clone(),
            allowed: allowed.clone(),
        });
    }
    let argv = launch.argv.clone()?;
    ensure_image(
        docker,
        &spec.image,
        &spec.credentials,
        ctx.engine.pull_timeout,
    )
    .await?;
    Ok(Prepared {
        stdout,
        stderr,
        options,
        argv,
    })
}

/// A container run ready to be created: its spool files, options and command.
struct Prepared {
    stdout: tokio::fs::File,
    stderr: tokio::fs::File,
    options: ContainerOptions,
    argv: Vec<String>,
}

/// Opens the spool files of a container left running (or exited) by a previous agent, and
/// starts it if it was created but never started. Also returns how long it has run and the
/// length of the agent's lines at the head of stderr.
async fn reattach(
    docker: &Docker,
    dir: &ExecDir,
    container: &str,
) -> Result<([Spool; 2], Duration, u64), ContainerError> {
    let state = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| ContainerError::Gone {
            container: container.to_owned(),
            message: message_of(&e),
        })?
        .state
        .unwrap_or_default();
    let ran = state
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    if state.status == Some(bollard::models::ContainerStateStatusEnum::CREATED) {
        docker
            .start_container(container, None)
            .await
            .map_err(|e| ContainerError::Restart {
                container: container.to_owned(),
                message: message_of(&e),
            })?;
    }
    let stdout = reopen(dir, Stream::Stdout).await?;
    let stderr = reopen(dir, Stream::Stderr).await?;
    let state_dir = dir.clone();
    let preamble = match tokio::task::spawn_blocking(move || StateFile::read(&state_dir)).await {
        Ok(Ok(StateFile {
            phase: Phase::Running {
                stderr_preamble, ..
            },
            ..
        })) => stderr_preamble,
        _ => 0,
    };
    Ok(([stdout, stderr], ran, preamble))
}

/// Opens a spool file for appending, its stream's total being what it holds already.
async fn reopen(dir: &ExecDir, stream: Stream) -> Result<Spool, ContainerError> {
    let path = dir.log(stream);
    let file = match tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .await
    {
        Ok(file) => file,
        Err(source) => return Err(ContainerError::OpenSpool { path, source }),
    };
    let size = match file.metadata().await {
        Ok(metadata) => metadata.len(),
        Err(source) => return Err(ContainerError::ReadSpool { path, source }),
    };
    Ok(Spool::new(file, size))
}

fn create_body(
    launch: &Launch,
    image: &str,
    options: &ContainerOptions,
    argv: Vec<String>,
    ctx: &ExecContext,
) -> ContainerCreateBody {
    let dir = &ctx.dir;
    let mut env = vec![
        "INPUT=/input".to_owned(),
        "OUTPUT=/output".to_owned(),
        "TEMP=/tmp".to_owned(),
        "RESOURCE=/resource".to_owned(),
        format!("CPU={}", ctx.cpu),
    ];
    env.extend(options.env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut binds = vec![
        format!("{}:/input", dir.input().display()),
        format!("{}:/output", dir.output().display()),
        format!("{}:/tmp", dir.tmp().display()),
        format!("{}:/resource:ro", dir.resource().display()),
    ];
    binds.extend(options.volumes.iter().map(ToString::to_string));
    let device_requests = options.gpus.as_ref().map(|gpus| {
        let (count, device_ids) = match gpus {
            Gpus::All => (Some(-1), None),
            Gpus::Count(n) => (Some(i64::from(*n)), None),
            Gpus::Devices(ids) => (None, Some(ids.clone())),
        };
        vec![DeviceRequest {
            driver: Some(String::new()),
            count,
            device_ids,
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            options: None,
        }]
    });
    let network = options.network.unwrap_or(ctx.engine.network);
    let labels = HashMap::from([
        (LABEL_AGENT.to_owned(), ctx.engine.scope.clone()),
        (LABEL_EXECUTION.to_owned(), launch.id.to_string()),
    ]);
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(argv),
        env: Some(env),
        user: options.user.clone(),
        working_dir: options.workdir.clone(),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            // An init process as PID 1 forwards SIGTERM to the command, as a native run gets
            // it (PID 1 ignores signals it has no handler for), and reaps what it leaves.
            init: Some(true),
            binds: Some(binds),
            network_mode: Some(network.as_str().to_owned()),
            shm_size: options.shm_size,
            memory: options.memory,
            nano_cpus: options.nano_cpus,
            device_requests,
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Streams the container's output to the spool files and the agent loop, applies signals,
/// enforces the time limit, and returns the report once the container exited.
async fn follow(
    docker: &Docker,
    launch: &Launch,
    ctx: &ExecContext,
    signals: &mut Option<mpsc::UnboundedReceiver<Signal>>,
    running: Running,
) -> FinalReport {
    let Running {
        container,
        spools,
        ran,
        head,
    } = running;
    let container = container.as_str();
    let id = launch.id;
    let _ = ctx
        .events
        .send(ExecEvent::Started {
            id,
            runner: Runner::Container(container.to_owned()),
        })
        .await;
    announce_preamble(id, head.announce, &ctx.events).await;
    let events = ctx.events.clone();
    let output = pump_logs(docker, container, spools, head.skip, id, events);
    let exit = async {
        let (status, spools) = tokio::join!(wait_exit(docker, container), output);
        (status, spools)
    };
    let mut exit = std::pin::pin!(exit);
    // A re-attached container has used part of its time already.
    let deadline = launch.run_timeout.map(|limit| {
        let left = limit.saturating_sub(ran);
        (tokio::time::Instant::now() + left, limit)
    });
    let mut stopped_at = None;
    let (status, totals) = loop {
        let at = deadline.map(|(at, _)| at);
        tokio::select! {
            done = &mut exit => break done,
            Some(sig) = recv(signals) => signal(docker, container, sig).await,
            _ = tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now)),
                if at.is_some() && stopped_at.is_none() =>
            {
                let limit = deadline.map(|(_, l)| l).unwrap_or_default();
                stopped_at = Some(limit);
                signal(docker, container, Signal::SIGTERM).await;
                signal(docker, container, Signal::SIGCONT).await;
                let escalate = async {
                    tokio::time::sleep(TIMEOUT_GRACE).await;
                    signal(docker, container, Signal::SIGKILL).await;
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    done = &mut exit => break done,
                    _ = escalate => unreachable!(),
                }
            }
        }
    };
    let killed = ctx.killed.load(Ordering::Acquire);
    let mut report = report_of(status, stopped_at, killed);
    report.stdout_bytes = totals[0];
    report.stderr_bytes = totals[1];
    report
}

/// The report of a container that exited with `status` (or could not be waited for).
fn report_of(
    status: Result<i32, ContainerError>,
    stopped_at: Option<Duration>,
    killed: bool,
) -> FinalReport {
    match (status, stopped_at) {
        (status, Some(limit)) => timed_out(limit, status.ok()),
        (Ok(0), None) => FinalReport {
            failure: None,
            exit_code: Some(0),
            message: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            uploaded: Vec::new(),
            inputs: Vec::new(),
        },
        (Ok(code), None) => {
            let failure = if killed {
                Failure::Killed
            } else {
                Failure::Run
            };
            FinalReport {
                exit_code: Some(code),
                ..FinalReport::failed(failure, format!("exited with code {code}"))
            }
        }
        (Err(e), None) => FinalReport::failed(Failure::Run, e.to_string()),
    }
}

async fn recv(signals: &mut Option<mpsc::UnboundedReceiver<Signal>>) -> Option<Signal> {
    match signals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for the container to stop and returns its exit code.
async fn wait_exit(docker: &Docker, container: &str) -> Result<i32, ContainerError> {
    let mut wait = docker.wait_container(container, None);
    let waited = match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(message_of(&e)),
        None => Err("the Docker daemon ended the wait without a status".to_owned()),
    };
    match waited {
        Ok(code) => Ok(i32::try_from(code).unwrap_or(i32::MAX)),
        Err(wait) => {
            // The wait can break (daemon restart): ask for the state instead.
            let state = docker
                .inspect_container(container, None)
                .await
                .map_err(|e| ContainerError::WaitNorInspect {
                    container: container.to_owned(),
                    wait: wait.clone(),
                    inspect: message_of(&e),
                })?
                .state
                .unwrap_or_default();
            state
                .exit_code
                .filter(|_| state.running != Some(true))
                .map(|c| c as i32)
                .ok_or_else(|| ContainerError::Wait {
                    container: container.to_owned(),
                    wait,
                })
        }
    }
}

/// Copies the container's logs from its start to the spool files, skipping what they hold
/// already (the stderr file starts with `stderr_head` bytes of the agent's own), and reports
/// each piece. Returns the total bytes per stream.
async fn pump_logs(
    docker: &Docker,
    container: &str,
    mut spools: [Spool; 2],
    stderr_head: u64,
    id: ExecutionId,
    events: mpsc::Sender<ExecEvent>,
) -> [u64; 2] {
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(container, Some(options));
    // Bytes of each stream's spool file accounted for so far: the agent's head, then the logs
    // from the container's start.
    let mut seen = [0, stderr_head];
    while let Some(piece) = logs.next().await {
        let (stream, message) = match piece {
            Ok(LogOutput::StdOut { message }) => (Stream::Stdout, message),
            Ok(LogOutput::StdErr { message }) => (Stream::Stderr, message),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(execution_id = %id, "cannot read the container's output: {}", message_of(&e));
                break;
            }
        };
        let spool = &mut spools[stream.index()];
        let start = seen[stream.index()];
        seen[stream.index()] += message.len() as u64;
        if seen[stream.index()] <= spool.total {
            continue;
        }
        let skip = spool.total.saturating_sub(start) as usize;
        let data: Bytes = message.slice(skip..);
        spool.write(id, stream, data, &events).await;
    }
    [spools[0].total, spools[1].total]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_host_folders_may_be_mounted() {
        let allowed = vec![
            std::path::PathBuf::from("/data"),
            std::path::PathBuf::from("/scratch/shared"),
        ];
        for (source, ok) in [
            ("/data", true),
            ("/data/refs/hg38", true),
            ("/scratch/shared/x", true),
            ("/", false),
            ("/database", false),
            ("/data/../etc", false),
            ("/scratch", false),
        ] {
            assert_eq!(mount_allowed(source, &allowed), ok, "{source}");
        }
        assert!(
            !mount_allowed("/data", &[]),
            "nothing is allowed by default"
        );
        let volume = scitq_proto::container::Volume {
            source: "/".into(),
            target: "/host".into(),
            read_only: false,
        };
        assert_eq!(
            refused_mount(&volume, &[]),
            "host path / may not be mounted (-v /:/host:rw): this agent allows none; start it \
             with --allow-mount / (or SCITQ_ALLOW_MOUNTS) to allow it"
        );
    }

    #[test]
    fn reports_of_exits() {
        assert_eq!(report_of(Ok(0), None, false).failure, None);
        let run = report_of(Ok(3), None, false);
        assert_eq!((run.failure, run.exit_code), (Some(Failure::Run), Some(3)));
        assert_eq!(run.message, "exited with code 3");
        let killed = report_of(Ok(137), None, true);
        assert_eq!(killed.failure, Some(Failure::Killed));
        let late = report_of(Ok(143), Some(Duration::from_secs(2)), false);
        assert_eq!(late.failure, Some(Failure::Timeout));
        assert_eq!(late.message, "ran past its time limit of 2s");
        let lost = ContainerError::Wait {
            container: "abc".into(),
            wait: "daemon gone".into(),
        };
        let lost = report_of(Err(lost), None, false);
        assert_eq!(
            (lost.failure, lost.message.as_str()),
            (
                Some(Failure::Run),
                "cannot wait for container abc: daemon gone"
            )
        );
    }
}
