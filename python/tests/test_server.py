"""Every public method of scitq.lib.Server against a real scitqd and agent."""

import contextlib
from argparse import Namespace

import pytest

from cluster import wait_for
from scitq.errors import (
    FailedPrecondition,
    InvalidArgument,
    JoinError,
    NotFound,
    PermissionDenied,
    RecruitmentUnavailable,
    ScitqError,
    Unsupported,
)
from scitq.lib import Server


@contextlib.contextmanager
def stopped_batch(server, batch):
    """Tasks created in the block stay pending: `batch` is stopped before it has any task
    (stopping a batch that does not exist yet creates it stopped)."""
    stopped = server.batch_stop(batch)
    assert (stopped["batch"], stopped["status"]) == (batch, "stopped")
    yield


def test_task_create_keeps_every_argument_under_the_originals_names(server, batch):
    with stopped_batch(server, batch):
        first = server.task_create("true", batch=batch)
    task = server.task_create(
        command="cat /input/a.txt",
        name="full",
        batch=batch,
        input="file:///tmp/in/a.txt file:///tmp/in/b.txt",
        output="file:///tmp/out/",
        container="busybox:latest",
        container_options="--cpus 1 --memory 1g",
        resource=["file:///tmp/res.tgz|untar"],
        required_task_ids=[first],
        shell="bash",
        retry=2,
        priority=5,
        run_timeout=30,
    )
    assert task["task_id"] > first["task_id"]
    expected = {
        "name": "full", "batch": batch, "command": "cat /input/a.txt", "shell": "bash",
        "input": "file:///tmp/in/a.txt file:///tmp/in/b.txt",
        "inputs": ["file:///tmp/in/a.txt", "file:///tmp/in/b.txt"],
        "output": "file:///tmp/out/", "container": "busybox:latest",
        "container_options": ["--cpus", "1", "--memory", "1g"],
        "resource": "file:///tmp/res.tgz|untar", "resources": ["file:///tmp/res.tgz|untar"],
        "required_task_ids": [first["task_id"]], "retry": 2, "retry_left": 2, "priority": 5,
        "run_timeout": 30, "status": "waiting", "execution_id": None, "return_code": None,
    }
    assert {k: task[k] for k in expected} == expected
    assert task["creation_date"].tzinfo is not None
    assert server.task_get(task["task_id"]) == task


def test_task_create_refuses_what_this_server_cannot_do(server, batch):
    with pytest.raises(Unsupported, match="download_timeout=10 is not supported"):
        server.task_create("true", batch=batch, download_timeout=10)
    with pytest.raises(Unsupported, match="status='debug'"):
        server.task_create("true", batch=batch, status="debug")
    with pytest.raises(Unsupported, match="invalid shell 'zsh'"):
        server.task_create("true", batch=batch, shell="zsh")
    with pytest.raises(InvalidArgument) as caught:
        server.task_create("true", batch=batch, input="s4://bucket/x")
    assert caught.value.code == "INVALID_ARGUMENT"
    assert "s4://bucket/x" in caught.value.message
    assert server.tasks(batch=batch) == []


def test_tasks_filters_and_task_status(server, batch):
    with stopped_batch(server, batch):
        a = server.task_create("true", name="align-1", batch=batch)
    b = server.task_create("true", name="align-2", batch=batch)
    c = server.task_create("true", name="count-1", batch=batch)
    server.task_pause(c)
    ids = [t["task_id"] for t in (a, b, c)]
    assert [t["task_id"] for t in server.tasks(batch=batch)] == ids
    assert [t["name"] for t in server.tasks(batch=batch, name="align-*")] == ["align-1", "align-2"]
    assert [t["task_id"] for t in server.tasks(batch=batch, status="paused")] == [c["task_id"]]
    assert len(server.tasks(batch=batch, status=["pending", "paused"])) == 3
    assert [t["task_id"] for t in server.tasks(task_id=[b, c["task_id"]])] == ids[1:]
    assert server.task_status([c, a]) == ["paused", "pending"]
    with pytest.raises(Unsupported, match="invalid task status 'done'"):
        server.tasks(status="done")


def test_task_update_edits_pauses_resumes_and_relaunches(server, batch):
    with stopped_batch(server, batch):
        task = server.task_create("echo one", batch=batch)
    edited = server.task_update(task["task_id"], command="echo two", name="renamed",
                                input=["file:///tmp/x"], retry=1, priority=3,
                                container_options=["--cpus", "2"], shell=True)
    assert (edited["command"], edited["name"], edited["inputs"], edited["retry"],
            edited["priority"], edited["container_options"], edited["shell"]) == (
        "echo two", "renamed", ["file:///tmp/x"], 1, 3, ["--cpus", "2"], "sh")
    assert server.task_update(task, input=[], status="paused")["status"] == "paused"
    assert server.task_update(task, status="pending")["status"] == "pending"
    # Moved to another batch, which is created; the task keeps waiting there while that
    # batch is stopped too, and runs once it goes on.
    server.batch_stop(batch + "-moved")
    moved = server.task_update(task, batch=batch + "-moved")
    assert (moved["batch"], moved["status"]) == (batch + "-moved", "pending")
    assert server.tasks(batch=batch) == []
    server.task_update(task, batch=batch)
    with pytest.raises(Unsupported, match="status='running' cannot be set"):
        server.task_update(task, status="running")

    server.batch_go(batch)
    server.join([task])
    assert server.task_output(task) == "two\n"
    # A finished task set back to pending runs again, here with a new command.
    again = server.task_update(task, command="echo three", status="pending")
    assert again["command"] == "echo three"
    server.join([task])
    assert server.task_output(task) == "three\n"
    with pytest.raises(FailedPrecondition) as caught:
        server.task_update(task, command="echo four")
    assert caught.value.code == "FAILED_PRECONDITION"


def test_relaunch_kill_explain_and_delete(server, batch):
    with stopped_batch(server, batch):
        task = server.task_create("sh -c 'echo out; echo err >&2; exit 3'", batch=batch)
    reasons = server.task_explain(task)
    assert reasons and any("stop" in r for r in reasons), reasons
    server.batch_go(batch)
    counts = server.join([task])
    assert counts["failed"] == 1
    failed = server.task_get(task["task_id"])
    assert (failed["status"], failed["return_code"]) == ("failed", 3)
    relaunched = server.task_relaunch(task["task_id"], command="echo fixed")
    assert relaunched["status"] in ("pending", "assigned", "accepted", "running", "succeeded")
    server.join([task], check=True)
    assert server.task_output(task) == "fixed\n"
    server.batch_stop(batch)
    waiting = server.task_create("true", batch=batch)
    with pytest.raises(FailedPrecondition, match="can be relaunched"):
        server.task_relaunch(waiting)
    server.batch_go(batch)
    sleeper = server.task_create("sleep 60", batch=batch)
    wait_for("the sleeper to run", lambda: server.task_get(sleeper)["status"] == "running")
    assert server.task_kill(sleeper)["status"] in ("running", "failed")
    wait_for("the kill", lambda: server.task_get(sleeper)["status"] == "failed")
    # A task others depend on (and that have not ended) cannot be deleted.
    server.join([waiting], check=True)
    server.batch_stop(batch)
    base = server.task_create("true", batch=batch)
    dependant = server.task_create("true", batch=batch, required_task_ids=[base])
    with pytest.raises(FailedPrecondition, match=f"task\\(s\\) {dependant['task_id']} depend on it"):
        server.task_delete(base)
    for gone in (dependant, base, sleeper, task):
        server.task_delete(gone)
    assert [t["task_id"] for t in server.tasks(batch=batch)] == [waiting["task_id"]]
    assert {e["task_id"] for e in server.executions(batch=batch, output=False)} == {
        waiting["task_id"]}
    with pytest.raises(NotFound):
        server.task_delete(task)
    # A running task deleted is canceled on its worker, which then takes other work.
    server.batch_go(batch)
    running = server.task_create("sleep 60", batch=batch)
    wait_for("the task to run", lambda: server.task_get(running)["status"] == "running")
    server.task_delete(running)
    after = server.task_create("echo after", batch=batch)
    server.join([after], check=True)
    assert server.task_output(after) == "after\n"


def test_executions_and_output(server, batch):
    task = server.task_create("sh -c 'echo out; echo err >&2; exit 1'", batch=batch)
    server.join([task])
    server.task_relaunch(task, command="sh -c 'echo second'")
    server.join([task])
    executions = server.executions(task_id=task["task_id"])
    assert [e["status"] for e in executions] == ["failed", "succeeded"]
    first, second = executions
    assert (first["output"], first["error"], first["return_code"], first["failure"]) == (
        "out\n", "err\n", 1, "run")
    assert (second["output"], second["command"]) == ("second\n", "sh -c 'echo second'")
    assert first["task_id"] == task["task_id"] and first["worker_name"] == "py-agent"
    latest = server.executions(task_id=task, latest=True)
    assert [e["execution_id"] for e in latest] == [second["execution_id"]]
    assert server.executions(task_id=task, output=False)[0]["output"] is None
    assert server.task_output(task) == "second\n"
    assert server.task_output(task, error=True) == ""
    with stopped_batch(server, batch + "-never"):
        never = server.task_create("true", batch=batch + "-never")
    assert server.task_output(never) is None
    assert server.executions(task_id=never) == []
    # Across tasks: every execution of the batch, filtered by state and worker.
    everything = server.executions(batch=batch, output=False)
    assert [e["execution_id"] for e in everything] == [first["execution_id"], second["execution_id"]]
    failed = server.executions(batch=batch, status="failed")
    assert [(e["execution_id"], e["output"]) for e in failed] == [(first["execution_id"], "out\n")]
    assert server.executions(status=["failed", "succeeded"], worker_id=first["worker_id"],
                             batch=batch, latest=True, output=False)[0]["execution_id"] == \
        second["execution_id"]
    assert server.executions(batch=batch, worker_id=999999) == []
    mine = [e["execution_id"] for e in server.executions(output=False)
            if e["task_id"] == task["task_id"]]
    assert mine == [first["execution_id"], second["execution_id"]]
    with pytest.raises(Unsupported, match="invalid execution status 'done'"):
        server.executions(batch=batch, status="done")
    with pytest.raises(NotFound):
        server.executions(batch=batch + "-nowhere")


def test_join_relaunches_failed_tasks_up_to_retry(server, batch, tmp_path):
    flag = tmp_path / "second-time"
    flaky = server.task_create(
        f"if [ -e {flag} ]; then echo ok; else touch {flag}; exit 1; fi", shell=True, batch=batch)
    doomed = server.task_create("false", batch=batch)
    with pytest.raises(JoinError) as caught:
        server.join([flaky, doomed], retry=2, check=True)
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.failed == [doomed["task_id"]]
    assert server.task_get(flaky)["status"] == "succeeded"
    assert len(server.executions(task_id=flaky, output=False)) == 2
    assert len(server.executions(task_id=doomed, output=False)) == 3, "1 run + 2 relaunches"
    counts = server.join([flaky, doomed])
    assert (counts["succeeded"], counts["failed"]) == (1, 1)
    with pytest.raises(ValueError):
        server.join([])


def test_batches_stop_go_suspend_and_delete(server, batch):
    with stopped_batch(server, batch):
        task = server.task_create("sleep 30", batch=batch)
    mine = [b for b in server.batches() if b["batch"] == batch]
    assert len(mine) == 1
    assert (mine[0]["status"], mine[0]["pending"], mine[0]["counts"]["pending"]) == ("stopped", 1, 1)
    assert server.batch_go(batch)["status"] == "running"
    wait_for("the task to run", lambda: server.task_get(task)["status"] == "running")
    assert server.batch_stop(batch, signal="suspend")["status"] == "suspended"
    assert server.batch_go(batch)["status"] == "running"
    stopped = server.batch_stop(batch, signal=15)
    assert stopped["stopped"] is True
    wait_for("SIGTERM to end the task", lambda: server.task_get(task)["status"] == "failed")
    with pytest.raises(Unsupported, match="invalid signal 7"):
        server.batch_stop(batch, signal=7)
    assert server.batch_delete(batch) == 1
    assert server.tasks(batch=batch) == []
    with pytest.raises(NotFound) as caught:
        server.task_get(task)
    assert caught.value.code == "NOT_FOUND"


def test_workers_and_worker_update(server):
    (worker,) = [w for w in server.workers() if w["name"] == "py-agent"]
    assert worker["status"] == "online" and worker["concurrency"] == 4
    try:
        updated = server.worker_update(worker["worker_id"], concurrency=3, prefetch=1,
                                       status="paused", batch="elsewhere")
        assert (updated["concurrency"], updated["prefetch"], updated["paused"],
                updated["batch"]) == (3, 1, True, "elsewhere")
        assert updated["prefetch_auto"] is False
    finally:
        restored = server.worker_update(worker, concurrency=4, prefetch="auto", status="running",
                                        batch="")
    assert (restored["concurrency"], restored["paused"], restored["batch"],
            restored["prefetch_auto"]) == (4, False, None, True)
    with pytest.raises(Unsupported, match="invalid prefetch 'lots'"):
        server.worker_update(worker, prefetch="lots")
    with pytest.raises(Unsupported, match="flavor='b2-7' is not supported"):
        server.worker_update(worker["worker_id"], flavor="b2-7")
    with pytest.raises(NotFound):
        server.worker_delete(999999)
    with pytest.raises(NotFound):
        server.worker_drain(999999)


def test_a_scitqd_without_providers_says_it_recruits_nothing(server):
    for call in (lambda: server.recruiter_create("b", 1, 1, "auto", 1, provider="ovh",
                                                 maximum_workers=2),
                 lambda: server.worker_deploy(1, "b", "GRA11", "b2-7", 1, "ovh"),
                 server.flavors):
        with pytest.raises(RecruitmentUnavailable, match=r"no \[\[provider\]\] configured") as caught:
            call()
        assert isinstance(caught.value, FailedPrecondition)
    assert server.recruiters() == [] and server.jobs() == []


def test_object_style_and_errors(cluster, batch):
    s = Server(cluster.addr, token=cluster.token, style="object")
    task = s.task_create("echo hi", batch=batch)
    assert isinstance(task, Namespace) and task.command == "echo hi"
    s.join([task])
    (done,) = s.tasks(status="succeeded", batch=batch)
    assert (done.task_id, done.status) == (task.task_id, "succeeded")
    assert s.executions(task_id=task)[0].output == "hi\n"
    with pytest.raises(NotFound) as caught:
        s.task_get(999999)
    assert isinstance(caught.value, ScitqError) and "999999" in caught.value.message
    wrong = Server(cluster.addr, token="not-the-token")
    with pytest.raises(PermissionDenied) as caught:
        wrong.tasks()
    assert caught.value.code == "UNAUTHENTICATED"


def test_join_shows_a_progress_bar_on_request_and_lines_otherwise(server, batch, capsys):
    tasks = [server.task_create(f"echo {i}", batch=batch) for i in range(3)]
    server.join(tasks, progress=True)
    bar = capsys.readouterr().err
    assert "3/3" in bar and "succeeded: 3" in bar, bar
    server.join(tasks, progress=False)
    assert capsys.readouterr().err == "scitq: succeeded: 3\n"
