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
    let _again = Agent::start(&server, "phoenix", 1, &[]);
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
