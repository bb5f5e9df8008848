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
    """Tasks created in the block stay pending: the workers are paused while they are created
    (a batch exists only once it has a task), then `batch` is stopped."""
    workers = [w["worker_id"] for w in server.workers()]
    for worker in workers:
        server.worker_update(worker, status="paused")
    try:
        yield
        server.batch_stop(batch)
    finally:
        for worker in workers:
            server.worker_update(worker, status="running")


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
    with pytest.raises(Unsupported, match="batch='other'"):
        server.task_update(task, batch="other")
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
    with pytest.raises(Unsupported, match="deletes tasks by batch"):
        server.task_delete(task)


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
    with pytest.raises(Unsupported, match="needs task_id"):
        server.executions()


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
    finally:
        restored = server.worker_update(worker, concurrency=4, prefetch=0, status="running",
                                        batch="")
    assert (restored["concurrency"], restored["paused"], restored["batch"]) == (4, False, None)
    with pytest.raises(RecruitmentUnavailable, match="flavor='b2-7'"):
        server.worker_update(worker["worker_id"], flavor="b2-7")
    with pytest.raises(NotFound):
        server.worker_delete(999999)
    with pytest.raises(NotFound):
        server.worker_drain(999999)


def test_recruitment_is_refused_clearly(server):
    for call in (lambda: server.recruiter_create("b", 1, 1, "auto", 1),
                 lambda: server.worker_deploy(1, "b", "GRA11", "b2-7", 1, "ovh"),
                 server.recruiters, server.flavors):
        with pytest.raises(RecruitmentUnavailable, match="recruitment is not available") as caught:
            call()
        assert isinstance(caught.value, NotImplementedError)


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
