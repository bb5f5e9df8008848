//! Runs one execution in a Docker container (bollard), with the same contract as the native
//! executor (see the top of `executor.rs`): the work dir's `input/ output/ tmp/` are mounted
//! at `/input /output /tmp`, `resource/` read-only at `/resource`; env `INPUT OUTPUT TEMP
//! RESOURCE CPU` point there; stdout and stderr are appended to the spool files and reported
//! as `ExecEvent::Output`; the exit code goes in the final report.
//!
//! The image is pulled when missing (with the assignment's credentials for its registry),
//! within `--pull-timeout`; a pull failure fails the execution with the registry's message.
//! Output is read with `docker logs --follow` from the container's start, so an agent that
//! restarts re-attaches by reading the logs again and skipping what its spool files hold.
//! Signals from the agent loop arrive on a channel and map to pause, unpause and kill.
//!
//! Containers carry the labels [`LABEL_AGENT`] (the agent's work dir) and
//! [`LABEL_EXECUTION`], which the janitor (`janitor.rs`) uses to find them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::Signal;
use scitq_proto::container::{ContainerOptions, Gpus, Network, registry_of};
use scitq_proto::v1::RegistryCredential;
use tokio::sync::mpsc;

use crate::executor::{ExecContext, ExecEvent, Spool, TIMEOUT_GRACE};
use crate::launch::{ContainerSpec, Launch};
use crate::state::{ExecDir, Failure, FinalReport, Phase, StateFile, Stream};

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

/// Whether a task may bind-mount the host path `source`: it is one of the agent's
/// `--allow-mount` folders or below one (component-wise, `..` never allowed).
pub fn mount_allowed(source: &str, allowed: &[std::path::PathBuf]) -> bool {
    let source = std::path::Path::new(source);
    if source
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return false;
    }
    allowed.iter().any(|dir| source.starts_with(dir))
}

fn refused_mount(
    volume: &scitq_proto::container::Volume,
    allowed: &[std::path::PathBuf],
) -> String {
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

/// The message Docker or the registry gave, without bollard's wrapping.
pub fn message_of(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Where a container run starts from.
#[derive(Debug, Clone)]
pub enum Start {
    /// A new container; `preamble` goes at the head of its stderr (see `staging`).
    Fresh { preamble: Bytes },
    /// Re-attach to this container, left by a previous agent process.
    Reattach(String),
}

/// Runs the execution in its container. Returns the report and the container, if one was
/// created (the caller removes it once the report is on disk).
pub async fn execute(
    launch: &Launch,
    spec: &ContainerSpec,
    ctx: &mut ExecContext,
    start: Start,
) -> (FinalReport, Option<String>) {
    let failed = |message: String| (FinalReport::failed(Failure::Run, message), None);
    let docker = match ctx.engine.docker().await {
        Ok(docker) => docker.clone(),
        Err(e) => return failed(format!("cannot reach the Docker daemon: {e}")),
    };
    // What the container's logs start after in the stderr spool, and what of it to announce
    // (a re-attached run announced it already).
    let (container, spools, ran, head) = match start {
        Start::Reattach(container) => match reattach(&docker, &ctx.dir, &container).await {
            Ok((spools, ran, skip)) => (container, spools, ran, Head::skip(skip)),
            Err(message) => return failed(message),
        },
        Start::Fresh { preamble } => match create(&docker, launch, spec, ctx, &preamble).await {
            Ok((container, spools)) => (container, spools, Duration::ZERO, Head::new(preamble)),
            Err((message, container)) => {
                return (FinalReport::failed(Failure::Run, message), container);
            }
        },
    };
    let report = follow(&docker, launch, ctx, &container, spools, ran, head).await;
    (report, Some(container))
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
) -> Result<(String, [Spool; 2]), (String, Option<String>)> {
    let (stdout, mut stderr) = crate::executor::prepare(ctx.dir.clone(), ctx.spares.clone())
        .await
        .map_err(|e| {
            (
                format!("cannot prepare {}: {e}", ctx.dir.root().display()),
                None,
            )
        })?;
    crate::executor::append(&mut stderr, preamble)
        .await
        .map_err(|e| {
            let path = ctx.dir.log(Stream::Stderr);
            (format!("cannot write {}: {e}", path.display()), None)
        })?;
    let options = spec.options.clone().map_err(|e| (e.to_string(), None))?;
    if let Some(volume) = options
        .volumes
        .iter()
        .find(|v| !mount_allowed(&v.source, &ctx.engine.allowed_mounts))
    {
        return Err((refused_mount(volume, &ctx.engine.allowed_mounts), None));
    }
    let argv = launch.argv.clone().map_err(|e| (e.to_string(), None))?;
    ensure_image(
        docker,
        &spec.image,
        &spec.credentials,
        ctx.engine.pull_timeout,
    )
    .await
    .map_err(|m| (m, None))?;
    let body = create_body(launch, &spec.image, &options, argv, ctx);
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| {
            let message = format!(
                "cannot create a container of {}: {}",
                spec.image,
                message_of(&e)
            );
            (message, None)
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
    if let Err(e) = crate::executor::write_state(&ctx.dir, running, None).await {
        tracing::warn!(execution_id = %launch.id, "cannot write state.json: {e}");
    }
    if let Err(e) = docker.start_container(&container, None).await {
        let message = format!(
            "cannot start the container of {}: {}",
            spec.image,
            message_of(&e)
        );
        return Err((message, Some(container)));
    }
    let spools = [
        Spool::new(stdout, 0),
        Spool::new(stderr, preamble.len() as u64),
    ];
    Ok((container, spools))
}

/// Opens the spool files of a container left running (or exited) by a previous agent, and
/// starts it if it was created but never started. Also returns how long it has run and the
/// length of the agent's lines at the head of stderr.
async fn reattach(
    docker: &Docker,
    dir: &ExecDir,
    container: &str,
) -> Result<([Spool; 2], Duration, u64), String> {
    let state = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| {
            format!(
                "container {container} of this execution is gone: {}",
                message_of(&e)
            )
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
            .map_err(|e| format!("cannot start container {container}: {}", message_of(&e)))?;
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
async fn reopen(dir: &ExecDir, stream: Stream) -> Result<Spool, String> {
    let path = dir.log(stream);
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    Ok(Spool::new(file, size))
}

/// Pulls `image` unless the daemon has it, within `limit`.
pub(crate) async fn ensure_image(
    docker: &Docker,
    image: &str,
    credentials: &[RegistryCredential],
    limit: Duration,
) -> Result<(), String> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(format!("cannot inspect image {image}: {}", message_of(&e))),
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
            step.map_err(|e| format!("cannot pull image {image}: {}", message_of(&e)))?;
        }
        Ok(())
    };
    match tokio::time::timeout(limit, pull).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "cannot pull image {image}: no result after {}",
            humantime::format_duration(limit)
        )),
    }
}

fn has_tag_or_digest(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    image.contains('@') || last.contains(':')
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
    ctx: &mut ExecContext,
    container: &str,
    spools: [Spool; 2],
    ran: Duration,
    head: Head,
) -> FinalReport {
    let id = launch.id;
    let _ = ctx
        .events
        .send(ExecEvent::Started {
            id,
            runner: crate::executor::Runner::Container(container.to_owned()),
        })
        .await;
    crate::executor::announce_preamble(id, head.announce, &ctx.events).await;
    let mut signals = ctx.signals.take();
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
    let mut timed_out = None;
    let (status, totals) = loop {
        let at = deadline.map(|(at, _)| at);
        tokio::select! {
            done = &mut exit => break done,
            Some(signal) = recv(&mut signals) => apply(docker, container, signal).await,
            _ = tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now)),
                if at.is_some() && timed_out.is_none() =>
            {
                let limit = deadline.map(|(_, l)| l).unwrap_or_default();
                timed_out = Some(limit);
                apply(docker, container, Signal::SIGTERM).await;
                apply(docker, container, Signal::SIGCONT).await;
                let escalate = async {
                    tokio::time::sleep(TIMEOUT_GRACE).await;
                    apply(docker, container, Signal::SIGKILL).await;
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
    let mut report = report_of(status, timed_out, killed);
    report.stdout_bytes = totals[0];
    report.stderr_bytes = totals[1];
    report
}

/// The report of a container that exited with `status` (or could not be waited for).
fn report_of(
    status: Result<i32, String>,
    timed_out: Option<Duration>,
    killed: bool,
) -> FinalReport {
    match (status, timed_out) {
        (status, Some(limit)) => FinalReport {
            exit_code: status.ok(),
            ..FinalReport::failed(
                Failure::Timeout,
                format!(
                    "ran past its time limit of {}",
                    humantime::format_duration(limit)
                ),
            )
        },
        (Ok(0), None) => FinalReport {
            failure: None,
            exit_code: Some(0),
            message: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            uploaded: Vec::new(),
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
        (Err(message), None) => FinalReport::failed(Failure::Run, message),
    }
}

async fn recv(signals: &mut Option<mpsc::UnboundedReceiver<Signal>>) -> Option<Signal> {
    match signals {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Kills a container now, unpausing it first (SIGKILL does not reach a paused one).
pub(crate) async fn kill(docker: &Docker, container: &str) {
    apply(docker, container, Signal::SIGCONT).await;
    apply(docker, container, Signal::SIGKILL).await;
}

/// Maps a signal to the container: SIGSTOP pauses, SIGCONT unpauses, others are sent.
async fn apply(docker: &Docker, container: &str, signal: Signal) {
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

/// Waits for the container to stop and returns its exit code.
async fn wait_exit(docker: &Docker, container: &str) -> Result<i32, String> {
    let mut wait = docker.wait_container(container, None);
    let waited = match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(message_of(&e)),
        None => Err("the Docker daemon ended the wait without a status".to_owned()),
    };
    match waited {
        Ok(code) => Ok(i32::try_from(code).unwrap_or(i32::MAX)),
        Err(wait_error) => {
            // The wait can break (daemon restart): ask for the state instead.
            let state = docker
                .inspect_container(container, None)
                .await
                .map_err(|e| {
                    format!(
                        "cannot wait for container {container}: {wait_error}; {}",
                        message_of(&e)
                    )
                })?
                .state
                .unwrap_or_default();
            state
                .exit_code
                .filter(|_| state.running != Some(true))
                .map(|c| c as i32)
                .ok_or_else(|| format!("cannot wait for container {container}: {wait_error}"))
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
    id: crate::state::ExecutionId,
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
        let lost = report_of(Err("daemon gone".into()), None, false);
        assert_eq!(
            (lost.failure, lost.message.as_str()),
            (Some(Failure::Run), "daemon gone")
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
