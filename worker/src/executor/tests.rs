use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use scitq_proto::v1::{Shell, TaskSpec};
use tokio::sync::mpsc;

use super::*;
use crate::launch::argv_of;
use crate::process_group::signal_group;
use crate::spares::Spares;
use crate::state::{ExecDir, ExecutionId, Stream};
use crate::supervisor::Supervisor;

struct Ran {
    events: Vec<ExecEvent>,
    report: FinalReport,
    dir: ExecDir,
}

impl Ran {
    fn output(&self, stream: Stream) -> Vec<u8> {
        let mut out = Vec::new();
        for event in &self.events {
            if let ExecEvent::Output {
                stream: s,
                offset,
                data,
                ..
            } = event
                && *s == stream
            {
                assert_eq!(*offset, out.len() as u64, "offsets follow each other");
                out.extend_from_slice(data);
            }
        }
        out
    }

    fn spool(&self, stream: Stream) -> Vec<u8> {
        std::fs::read(self.dir.log(stream)).unwrap()
    }
}

fn launch(command: &str, shell: Shell) -> Launch {
    let spec = TaskSpec {
        command: command.to_owned(),
        shell: shell as i32,
        ..TaskSpec::default()
    };
    Launch {
        id: ExecutionId(1),
        task_id: 10,
        argv: argv_of(&spec),
        run_timeout: None,
        container: None,
        data: crate::staging::DataSpec::default(),
    }
}

fn test_engine() -> Arc<crate::docker::Engine> {
    Arc::new(crate::docker::Engine::new(
        scitq_proto::container::Network::None,
        Duration::from_secs(60),
        "test".into(),
    ))
}

async fn context(work: &Path) -> (ExecContext, mpsc::Receiver<ExecEvent>) {
    let (events, rx) = mpsc::channel(1024);
    let supervisor = Supervisor::connect_or_start(work).await.unwrap();
    let ctx = ExecContext {
        dir: ExecDir::new(work, ExecutionId(1)),
        cpu: 3,
        killed: Arc::new(AtomicBool::new(false)),
        spares: Arc::new(Spares::new(work, 4)),
        events,
        engine: test_engine(),
        signals: None,
        reattach: None,
        stager: Err(Arc::new(crate::staging::StagingError::NotConfigured)),
        staged: None,
        supervisor: Arc::new(supervisor),
        adopt: None,
    };
    (ctx, rx)
}

async fn collect(mut rx: mpsc::Receiver<ExecEvent>, dir: ExecDir) -> Ran {
    let mut events = Vec::new();
    while let Some(event) = rx.recv().await {
        if let ExecEvent::Finished { report, .. } = &event {
            let report = report.clone();
            events.push(event);
            return Ran {
                events,
                report,
                dir,
            };
        }
        events.push(event);
    }
    panic!("executor ended without a Finished event");
}

async fn run_to_end(command: &str, shell: Shell) -> (Ran, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let (ctx, rx) = context(work.path()).await;
    let dir = ctx.dir.clone();
    let task = tokio::spawn(run(launch(command, shell), ctx));
    let ran = collect(rx, dir).await;
    task.await.unwrap();
    (ran, work)
}

#[tokio::test]
async fn echo_output_reaches_events_and_spool() {
    let (ran, _work) = run_to_end("echo hello world", Shell::None).await;
    assert!(
        matches!(ran.events[0], ExecEvent::Started { runner: Runner::Group(pid), .. } if pid > 1)
    );
    assert_eq!(ran.output(Stream::Stdout), b"hello world\n");
    assert_eq!(ran.spool(Stream::Stdout), b"hello world\n");
    assert_eq!(ran.spool(Stream::Stderr), b"");
    assert_eq!(ran.report.failure, None);
    assert_eq!(ran.report.exit_code, Some(0));
    assert_eq!((ran.report.stdout_bytes, ran.report.stderr_bytes), (12, 0));
    let state = StateFile::read(&ran.dir).unwrap();
    assert!(matches!(
        state.phase,
        Phase::Finished {
            acknowledged: false,
            ..
        }
    ));
    for sub in [
        ran.dir.input(),
        ran.dir.output(),
        ran.dir.tmp(),
        ran.dir.resource(),
    ] {
        assert!(sub.is_dir(), "{}", sub.display());
    }
}

#[tokio::test]
async fn exit_code_and_stderr_are_reported() {
    let (ran, _work) = run_to_end("echo oops >&2; exit 3", Shell::Sh).await;
    assert_eq!(ran.output(Stream::Stderr), b"oops\n");
    assert_eq!(ran.spool(Stream::Stderr), b"oops\n");
    assert_eq!(ran.report.failure, Some(Failure::Run));
    assert_eq!(ran.report.exit_code, Some(3));
    assert_eq!(ran.report.stderr_bytes, 5);
}

#[tokio::test]
async fn bash_mode_runs_bash() {
    let (ran, _work) = run_to_end("echo ${BASH_VERSION:+bash}", Shell::Bash).await;
    assert_eq!(ran.output(Stream::Stdout), b"bash\n");
}

#[tokio::test]
async fn shell_none_does_not_interpret_shell_syntax() {
    let (ran, _work) = run_to_end("echo $HOME '|' x", Shell::None).await;
    assert_eq!(ran.output(Stream::Stdout), b"$HOME | x\n");
}

#[tokio::test]
async fn spawn_failure_names_the_program() {
    let (ran, _work) = run_to_end("no-such-program-xyz --flag", Shell::None).await;
    assert!(
        !ran.events
            .iter()
            .any(|e| matches!(e, ExecEvent::Started { .. }))
    );
    assert_eq!(ran.report.failure, Some(Failure::Run));
    assert_eq!(ran.report.exit_code, None);
    let message = &ran.report.message;
    assert!(
        message.contains("no-such-program-xyz") && message.contains("No such file"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_command_fails_with_its_reason() {
    let (ran, _work) = run_to_end("echo 'unbalanced", Shell::None).await;
    assert_eq!(ran.report.failure, Some(Failure::Run));
    assert!(
        ran.report.message.contains("cannot split command"),
        "{}",
        ran.report.message
    );
}

#[tokio::test]
async fn environment_points_into_the_work_dir() {
    let (ran, work) = run_to_end(
        r#"printf '%s\n' "$INPUT" "$OUTPUT" "$TEMP" "$RESOURCE" "$CPU" "$PWD""#,
        Shell::Sh,
    )
    .await;
    let root = work.path().join("exec-1");
    let expected = format!(
        "{0}/input\n{0}/output\n{0}/tmp\n{0}/resource\n3\n{0}\n",
        root.display()
    );
    assert_eq!(
        String::from_utf8(ran.output(Stream::Stdout)).unwrap(),
        expected
    );
}

#[tokio::test]
async fn a_run_past_its_time_limit_is_stopped_as_timeout() {
    let work = tempfile::tempdir().unwrap();
    let (ctx, rx) = context(work.path()).await;
    let dir = ctx.dir.clone();
    let mut slow = launch("echo begun; sleep 30", Shell::Sh);
    slow.run_timeout = Some(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let task = tokio::spawn(run(slow, ctx));
    let ran = collect(rx, dir).await;
    task.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM stopped it"
    );
    assert_eq!(ran.report.failure, Some(Failure::Timeout));
    assert!(
        ran.report.message.contains("time limit"),
        "{}",
        ran.report.message
    );
    assert_eq!(ran.output(Stream::Stdout), b"begun\n");
}

#[tokio::test]
async fn stdin_is_empty() {
    let (ran, _work) = run_to_end("wc -c", Shell::None).await;
    assert_eq!(
        String::from_utf8(ran.output(Stream::Stdout))
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn large_output_is_chunked_and_complete() {
    let (ran, _work) = run_to_end("head -c 300000 /dev/zero", Shell::None).await;
    let chunks = ran
        .events
        .iter()
        .filter(|e| matches!(e, ExecEvent::Output { data, .. } if data.len() <= CHUNK))
        .count();
    assert!(chunks >= 5);
    assert_eq!(ran.output(Stream::Stdout).len(), 300_000);
    assert_eq!(ran.report.stdout_bytes, 300_000);
}

#[tokio::test]
async fn killing_the_group_kills_children_and_reports_killed() {
    let work = tempfile::tempdir().unwrap();
    let (ctx, mut rx) = context(work.path()).await;
    let killed = ctx.killed.clone();
    let task = tokio::spawn(run(
        launch("sleep 60 & sleep 60; echo never", Shell::Sh),
        ctx,
    ));
    let pid = match rx.recv().await.unwrap() {
        ExecEvent::Started {
            runner: Runner::Group(pid),
            ..
        } => pid,
        other => panic!("unexpected {other:?}"),
    };
    let started = Instant::now();
    killed.store(true, Ordering::Release);
    signal_group(pid, Signal::SIGTERM).unwrap();
    let ran = collect(rx, ExecDir::new(work.path(), ExecutionId(1))).await;
    task.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ran.report.failure, Some(Failure::Killed));
    assert_eq!(ran.report.message, "killed by signal 15");
    assert!(ran.output(Stream::Stdout).is_empty());
}

#[tokio::test]
async fn output_arrives_while_the_task_runs() {
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("gate");
    let (ctx, mut rx) = context(work.path()).await;
    // The task prints, then waits for the test: its first line must arrive before it ends.
    let script = format!(
        "echo first; while [ -d '{}' ] && [ ! -e '{}' ]; do sleep 0.05; done; echo second",
        work.path().display(),
        gate.display()
    );
    let task = tokio::spawn(run(launch(&script, Shell::Sh), ctx));
    let pid = match rx.recv().await.unwrap() {
        ExecEvent::Started {
            runner: Runner::Group(pid),
            ..
        } => pid,
        other => panic!("unexpected {other:?}"),
    };
    match rx.recv().await.unwrap() {
        ExecEvent::Output {
            data, offset: 0, ..
        } => assert_eq!(&data[..], b"first\n"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!task.is_finished(), "the first line came only at the end");
    signal_group(pid, Signal::SIGKILL).unwrap();
    task.await.unwrap();
}

#[test]
fn signalling_a_gone_group_is_fine() {
    assert!(signal_group(0x3fff_fff0, Signal::SIGTERM).is_ok());
    assert!(signal_group(0, Signal::SIGTERM).is_ok());
}

fn bare_rate(n: i64, concurrency: i64) -> f64 {
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    std::process::Command::new("true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn executor_rate(work: &Path, n: i64) -> f64 {
    let spares = Arc::new(Spares::new(work, 16));
    let supervisor = Arc::new(Supervisor::connect_or_start(work).await.unwrap());
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let (events, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    for i in 0..n {
        if set.len() >= 4 {
            set.join_next().await;
        }
        let ctx = ExecContext {
            dir: ExecDir::new(work, ExecutionId(i)),
            cpu: 1,
            killed: Arc::new(AtomicBool::new(false)),
            spares: spares.clone(),
            events: events.clone(),
            engine: test_engine(),
            signals: None,
            reattach: None,
            stager: Err(Arc::new(crate::staging::StagingError::NotConfigured)),
            staged: None,
            supervisor: supervisor.clone(),
            adopt: None,
        };
        let launch = Launch {
            id: ExecutionId(i),
            task_id: i,
            argv: Ok(vec!["true".into()]),
            run_timeout: None,
            container: None,
            data: crate::staging::DataSpec::default(),
        };
        let recycle = (spares.clone(), ctx.dir.clone());
        set.spawn(async move {
            run(launch, ctx).await;
            tokio::task::spawn_blocking(move || recycle.0.recycle(&recycle.1))
                .await
                .unwrap();
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}

/// The executor alone against a bare spawn loop, interleaved (the machine may be shared).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn executor_throughput() {
    for round in 0..3 {
        let work = tempfile::tempdir().unwrap();
        let bare = tokio::task::spawn_blocking(|| bare_rate(2000, 4))
            .await
            .unwrap();
        let exec = executor_rate(work.path(), 2000).await;
        println!(
            "round {round}: executor {exec:.0}/s, bare {bare:.0}/s, ratio {:.2}",
            exec / bare
        );
    }
}

/// A supervisor that answers the agent's connection, reads the execution's `state.json` when
/// the spawn request comes, and refuses the request. Returns what it read.
async fn supervisor_reading_the_state_at_spawn(
    work: std::path::PathBuf,
) -> std::io::Result<StateFile> {
    use crate::supervisor::wire::{self, Channel, Reply, Request, SpawnError};
    let listener = wire::watch(crate::supervisor::serve::listen(&work)?)?;
    let fd = loop {
        let mut ready = listener.readable().await?;
        let flags = rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC;
        if let Ok(accepted) = ready.try_io(|fd| Ok(rustix::net::accept_with(fd.get_ref(), flags)?))
        {
            break accepted?;
        }
    };
    let agent = Channel::new(fd)?;
    let hello = Reply::Hello {
        version: wire::VERSION,
        held: Vec::new(),
    };
    agent.send(&hello, &[]).await?;
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    let Some((Request::Spawn { id, .. }, _fds)) = agent.recv::<Request>(&mut buf).await? else {
        return Err(std::io::Error::other("no spawn request"));
    };
    let state = StateFile::read(&ExecDir::new(&work, id));
    let error = SpawnError::Earlier {
        message: "refused by the test".into(),
    };
    agent.send(&Reply::SpawnError { id, error }, &[]).await?;
    state
}

/// The supervisor may start a task as soon as it reads the request: an agent killed then must
/// find the execution in `state.json` to adopt it from the supervisor (unrecorded, the server
/// would count it lost and run it elsewhere while it still ran here: seen in the chaos test).
#[tokio::test]
async fn a_native_task_is_recorded_running_before_the_supervisor_is_asked_to_start_it() {
    let work = tempfile::tempdir().unwrap();
    let supervisor = tokio::spawn(supervisor_reading_the_state_at_spawn(
        work.path().to_owned(),
    ));
    // Let it listen before the agent side looks for a supervisor.
    while !work.path().join(crate::supervisor::SOCKET).exists() {
        tokio::task::yield_now().await;
    }
    let (ctx, rx) = context(work.path()).await;
    let dir = ctx.dir.clone();
    let task = tokio::spawn(run(launch("true", Shell::None), ctx));
    let ran = collect(rx, dir).await;
    task.await.unwrap();
    let state = supervisor
        .await
        .unwrap()
        .expect("state.json at the spawn request");
    assert_eq!(state.execution_id, ExecutionId(1));
    assert!(
        matches!(
            state.phase,
            Phase::Running {
                pid: 0,
                container: None,
                ..
            }
        ),
        "{state:?}"
    );
    // The refused spawn ends the run as a failure, recorded over the early `Running`.
    assert_eq!(ran.report.failure, Some(Failure::Run));
    assert!(
        ran.report.message.contains("refused by the test"),
        "{}",
        ran.report.message
    );
    let state = StateFile::read(&ran.dir).unwrap();
    assert!(matches!(state.phase, Phase::Finished { .. }), "{state:?}");
}
