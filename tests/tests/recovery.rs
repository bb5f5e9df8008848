//! An agent that dies mid-task: its execution is failed as lost when its lease expires, and
//! the task runs again elsewhere within its retry budget.

use std::time::Duration;

use scitq_tests::{Agent, Server, ServerOpts, as_id, poll, str_field, touch, wait_for_file_sh};

const CONNECT: Duration = Duration::from_secs(60);

#[test]
fn task_of_an_agent_killed_mid_task_succeeds_on_another_agent_after_the_lease() {
    let server = Server::start(ServerOpts::default().lease("3s"));
    let c = server.client();
    let mut first = Agent::start(&server, "first", 1, &[]);
    let first_id = c.wait_worker_online("first", CONNECT);

    let flag = c.scratch_path("lost-flag");
    let script = format!("echo started; {}; echo finished", wait_for_file_sh(&flag));
    let id = c.create_sh("lost", &script, &["--retry", "1"]);
    poll(
        CONNECT,
        format!("task {id} to run on the first agent"),
        || {
            let task = c.task(id);
            if task["status"] == "running" && c.output(id) == "started\n" {
                Ok(())
            } else {
                Err(task.to_string())
            }
        },
    );

    first.kill9();
    let _second = Agent::start(&server, "second", 1, &[]);
    let second_id = c.wait_worker_online("second", CONNECT);
    poll(
        Duration::from_secs(60),
        format!("a second execution of task {id} to run on the second agent"),
        || {
            let task = c.task(id);
            let execs = task["executions"].as_array().cloned().unwrap_or_default();
            match execs.as_slice() {
                [_, again]
                    if again["state"] == "running" && as_id(&again["worker_id"]) == second_id =>
                {
                    Ok(())
                }
                _ => Err(task.to_string()),
            }
        },
    );
    touch(&flag);

    let task = c.wait_task(id, "succeeded", Duration::from_secs(60));
    assert_eq!(as_id(&task["worker_id"]), second_id, "{task:#}");
    assert_eq!(task["retry_left"], 0, "{task:#}");
    let execs = task["executions"].as_array().expect("executions array");
    assert_eq!(execs.len(), 2, "{task:#}");
    let (lost, relaunched) = (&execs[0], &execs[1]);
    assert_eq!(as_id(&lost["worker_id"]), first_id, "{lost:#}");
    assert_eq!(lost["state"], "failed", "{lost:#}");
    assert_eq!(
        str_field(lost, "failure").to_lowercase(),
        "lost",
        "{lost:#}"
    );
    assert_eq!(relaunched["state"], "succeeded", "{relaunched:#}");
    assert_eq!(relaunched["worker_name"], "second", "{relaunched:#}");
    assert_eq!(c.output(id), "started\nfinished\n");

    let workers = c.workers();
    let gone = workers
        .iter()
        .find(|w| w["name"] == "first")
        .expect("the killed worker is still listed");
    assert_eq!(gone["status"], "lost", "{gone:#}");
}

#[test]
fn an_agent_restarted_after_sigkill_gets_its_lost_task_requeued_at_once_not_after_the_lease() {
    // A lease of an hour: only the restarted agent's Hello can end the lost execution.
    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let mut agent = Agent::start(&server, "phoenix", 1, &[]);
    c.wait_worker_online("phoenix", CONNECT);

    let flag = c.scratch_path("phoenix-flag");
    let script = format!("echo started; {}; echo finished", wait_for_file_sh(&flag));
    let id = c.create_sh("rebirth", &script, &["--retry", "1"]);
    c.wait_task(id, "running", CONNECT);

    agent.kill9();
    // A new agent process on a new work dir (it holds nothing), with the worker's credential.
    let _again = Agent::start_as(&server, &agent, 1, &[]);
    poll(CONNECT, format!("task {id} to run a second time"), || {
        let task = c.task(id);
        let execs = task["executions"].as_array().cloned().unwrap_or_default();
        match execs.as_slice() {
            [first, second] if second["state"] == "running" => Ok(first.clone()),
            _ => Err(task.to_string()),
        }
    });
    touch(&flag);
    let task = c.wait_task(id, "succeeded", CONNECT);
    let first = &task["executions"][0];
    assert_eq!(first["failure"], "lost", "{task:#}");
    assert!(
        str_field(first, "message").contains("no longer holds"),
        "{task:#}"
    );
}

#[test]
fn a_task_killed_while_assigned_stays_killed_after_the_agent_restarts() {
    use nix::sys::signal::{Signal, kill};

    let server = Server::start(ServerOpts::default().lease("1h"));
    let c = server.client();
    let mut agent = Agent::start(&server, "frozen", 1, &[]);
    c.wait_worker_online("frozen", CONNECT);

    // A stopped agent never sees the assignment: the task stays assigned.
    kill(agent.pid(), Signal::SIGSTOP).expect("SIGSTOP the agent");
    let ran = c.scratch_path("killed-task-ran");
    let id = c.create_sh("killed", &format!("touch {}", ran.display()), &[]);
    c.wait_task(id, "assigned", CONNECT);
    let said = c.ctl_ok(["task", "kill", &id.to_string()]);
    assert!(said.contains("killed by an operator"), "{said}");

    // The agent dies before it ever got the task (or the kill), and comes back.
    agent.kill9();
    agent.start_again();
    let task = c.wait_task(id, "canceled", CONNECT);
    let execs = task["executions"].as_array().expect("executions array");
    assert_eq!(execs.len(), 1, "no second execution: {task:#}");
    assert_eq!(execs[0]["state"], "canceled", "{task:#}");
    assert!(
        str_field(&task, "status_reason").contains("killed by an operator"),
        "{task:#}"
    );
    assert!(!ran.exists(), "the killed task ran");
}

/// Opens a Session as an impostor would: the shared worker token, a live worker's name, no
/// credential. Returns how the server answered: the first message, or the refusal.
fn impostor_session(server: &Server, name: &str) -> Result<String, tonic::Status> {
    use scitq_proto::v1::worker_service_client::WorkerServiceClient;
    use scitq_proto::v1::{AgentMessage, Hello, ProtocolVersion, agent_message};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to scitqd");
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", server.worker_token())
            .parse()
            .expect("token header");
        let mut client =
            WorkerServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", bearer.clone());
                Ok(req)
            });
        let hello = AgentMessage {
            seq: 1,
            kind: Some(agent_message::Kind::Hello(Hello {
                protocol: ProtocolVersion::ProtocolVersion1 as i32,
                name: name.to_owned(),
                host: "impostor".to_owned(),
                concurrency: 1,
                ..Default::default()
            })),
        };
        let mut stream = client
            .session(tokio_stream::iter(vec![hello]))
            .await?
            .into_inner();
        let first = stream.message().await?;
        Ok(format!("{first:?}"))
    })
}

#[test]
fn an_impostor_with_the_worker_token_is_refused_and_the_real_worker_keeps_its_task() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let _victim = Agent::start(&server, "victim", 1, &[]);
    let worker_id = c.wait_worker_online("victim", CONNECT);
    let flag = c.scratch_path("victim-flag");
    let script = format!("echo started; {}; echo finished", wait_for_file_sh(&flag));
    let id = c.create_sh("victim", &script, &[]);
    c.wait_task(id, "running", CONNECT);

    // The shared worker token alone, under the live worker's name.
    let refused = impostor_session(&server, "victim").expect_err("the impostor is let in");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("\"victim\"") && refused.message().contains("credential"),
        "{refused:?}"
    );
    // A whole agent under that name, with a work dir (and so a credential) of its own: its
    // agent stops, saying why.
    let mut other = Agent::start(&server, "victim", 1, &[]);
    let status = other
        .wait_exit(CONNECT)
        .expect("an agent refused for a wrong credential stops");
    assert!(!status.success(), "{status:?}");
    let log = other.log_tail(20);
    assert!(
        log.contains("PermissionDenied") && log.contains("not this worker's"),
        "{log}"
    );

    touch(&flag);
    let task = c.wait_task(id, "succeeded", CONNECT);
    assert_eq!(c.output(id), "started\nfinished\n");
    let execs = task["executions"].as_array().expect("executions array");
    assert_eq!(execs.len(), 1, "the real worker's task ran once: {task:#}");
    assert_eq!(as_id(&execs[0]["worker_id"]), worker_id, "{task:#}");
    let workers = c.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["status"], "online", "{workers:?}");
}

#[test]
fn a_second_agent_with_the_worker_credential_waits_and_a_restarted_one_gets_back_in() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let mut first = Agent::start(&server, "twin", 1, &[]);
    let worker_id = c.wait_worker_online("twin", CONNECT);
    let flag = c.scratch_path("twin-flag");
    let script = format!("echo started; {}; echo finished", wait_for_file_sh(&flag));
    let id = c.create_sh("twin", &script, &[]);
    c.wait_task(id, "running", CONNECT);

    // Another process with the worker's credential, while the first one's session is live:
    // refused with the worker's name and where the live session comes from, and it keeps
    // retrying (the live session could be a dead one the server has not noticed yet).
    let mut second = Agent::start_as(&server, &first, 1, &[]);
    poll(CONNECT, "the second agent to be refused twice", || {
        let log = second.log_tail(200);
        let refusals = log.matches("already has a live session").count();
        if refusals >= 2 { Ok(log) } else { Err(log) }
    });
    assert!(
        second.wait_exit(Duration::ZERO).is_none(),
        "a refusal for a live session is not fatal: {}",
        second.log_tail(20)
    );
    let log = second.log_tail(200);
    assert!(
        log.contains("\"twin\"") && log.contains("127.0.0.1"),
        "{log}"
    );
    drop(second);

    // The first agent, killed and started again on its work dir, presents its stored
    // credential: the same worker, and it adopts its running task.
    first.kill9();
    first.start_again();
    poll(CONNECT, "the restarted agent to be back", || {
        let log = first.log_tail(200);
        if log.contains("connected to") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert_eq!(c.wait_worker_online("twin", CONNECT), worker_id);
    touch(&flag);
    let task = c.wait_task(id, "succeeded", CONNECT);
    let execs = task["executions"].as_array().expect("executions array");
    assert_eq!(execs.len(), 1, "{task:#}");
    assert_eq!(c.workers().len(), 1);
}
