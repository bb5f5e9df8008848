"""Recruitment from Python against a real scitqd with a local provider (agents started as
processes on this machine) and no agent of its own: recruiter rules, deployed workers,
flavors, jobs, and a workflow whose steps recruit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from cluster import Cluster, wait_for
from test_readme import examples, run_examples
from scitq.errors import InvalidArgument, Unsupported, WorkflowError
from scitq.lib import Server
from scitq.workflow import Workflow

CONFIG = """
[recruit]
interval = "300ms"

[[provider]]
name = "local"
kind = "local"
max_instances = 4
deploy_timeout = "60s"
agent_args = ["--reconnect-max", "1s", "--heartbeat", "1s"]

[[provider.flavor]]
name = "small"
cpu = 1
memory_gib = 1

[[provider.flavor]]
name = "big"
cpu = 2
memory_gib = 4
"""
#: Long enough for a debug agent to start, enroll and run a few tasks on a busy machine.
LONG = 180.0


def _instances(data: Path) -> list[dict]:
    folder = data / "local-instances" / "local"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


@pytest.fixture(scope="module")
def recruiting(request):
    """scitqd with a local provider and no agent: only recruited agents run tasks. Its data
    dir is short: a local instance's agent puts a unix socket in its folder there, and a
    socket's path holds at most 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="sq"))
    config = root / "scitqd.toml"
    config.write_text(CONFIG)
    c = Cluster(root / "cluster", scitqd_args=("--config", str(config)))
    try:
        yield c
    finally:
        if request.session.testsfailed:
            print(c.logs())
            for log in (c.data / "local-instances" / "local").glob("*.log"):
                print(f"--- {log} ---\n{log.read_text(errors='replace')[-3000:]}")
        c.stop()
        # A failed test may leave recruited agents: their process groups go with it.
        for record in _instances(c.data):
            try:
                os.killpg(int(record["pid"]), signal.SIGKILL)
            except (OSError, KeyError, ValueError):
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def rs(recruiting):
    s = Server(recruiting.addr, token=recruiting.token)
    yield s
    s.close()


def recruited(server: Server) -> list[dict]:
    return [w for w in server.workers() if w["provider"] == "local"]


def machine_names(server: Server) -> set[str]:
    """Every machine scitqd recruited (its worker has its name)."""
    return {j["machine"] for j in server.jobs(limit=1000)}


def ran_on(server: Server, batch: str) -> set[str]:
    """The workers that ran the batch's tasks, by name."""
    return {e["worker_name"] for e in server.executions(batch=batch, output=False)}


def wait_all_destroyed(server: Server) -> None:
    """Every recruited machine destroyed and its worker forgotten; every job ended."""
    def gone():
        jobs = server.jobs(limit=1000)
        return (not recruited(server)
                and all(j["status"] != "running" for j in jobs)
                and sum(j["action"] == "create" and j["status"] == "succeeded" for j in jobs)
                == sum(j["action"] == "destroy" and j["status"] == "succeeded" for j in jobs))
    wait_for("every recruited machine destroyed", gone, timeout=LONG)


def test_flavors_cheapest_first_with_minimums(rs):
    assert [(f["name"], f["cpu"], f["ram"]) for f in rs.flavors()] == [("small", 1, 1.0),
                                                                       ("big", 2, 4.0)]
    assert [f["name"] for f in rs.flavors(min_cpu=2)] == ["big"]
    assert [f["name"] for f in rs.flavors(protofilters="ram>=2")] == ["big"]
    assert [f["name"] for f in rs.flavors(limit=1)] == ["small"]
    assert rs.flavors(min_gpu=1) == []
    with pytest.raises(Unsupported, match="'eviction<=5' is not supported"):
        rs.flavors(protofilters="cpu>=2:eviction<=5")
    with pytest.raises(InvalidArgument, match="unknown provider \"ovh\""):
        rs.flavors(provider="ovh")


def test_recruiter_arguments_are_checked_before_anything_is_made(rs):
    with pytest.raises(Unsupported, match="provider is needed"):
        rs.recruiter_create("x", 1, 2, "small", 2, maximum_workers=1)
    with pytest.raises(Unsupported, match="maximum_workers is needed"):
        rs.recruiter_create("x", 1, 2, "small", 2, provider="local")
    with pytest.raises(Unsupported, match="tasks_per_worker=3 must be a multiple of concurrency"):
        rs.recruiter_create("x", 1, 3, "small", 2, provider="local", maximum_workers=1)
    with pytest.raises(Unsupported, match="minimum_tasks=5"):
        rs.recruiter_create("x", 1, 2, "small", 2, provider="local", maximum_workers=1,
                            minimum_tasks=5)
    with pytest.raises(InvalidArgument, match="no flavor of provider \"local\" matches huge"):
        rs.recruiter_create("x", 1, 2, "huge", 2, provider="local", maximum_workers=1)
    with pytest.raises(InvalidArgument, match="unknown region \"GRA11\""):
        rs.recruiter_create("x", 1, 2, "small", 2, provider="local", region="GRA11",
                            maximum_workers=1)
    assert rs.recruiters() == []


def test_a_rule_recruits_agents_that_run_its_batch_then_go(rs):
    batch = "rule-batch"
    rule = rs.recruiter_create(batch, 1, 4, "auto:cpu>=2", 2, provider="local",
                               maximum_workers=2, idle_timeout=2)
    assert {k: rule[k] for k in ("batch", "worker_provider", "worker_flavor", "worker_concurrency",
                                 "rounds", "tasks_per_worker", "maximum_workers", "idle_timeout")
            } == {"batch": batch, "worker_provider": "local", "worker_flavor": "auto:cpu>=2",
                  "worker_concurrency": 2, "rounds": 2, "tasks_per_worker": 4,
                  "maximum_workers": 2, "idle_timeout": 2}
    # rank=1 again replaces the batch's rule, as the original's update of rank 1 did.
    again = rs.recruiter_create(batch, 1, 4, "auto:cpu>=2", 2, provider="local",
                                maximum_workers=2, idle_timeout=2)
    assert [r["recruiter_id"] for r in rs.recruiters(batch)] == [again["recruiter_id"]]
    # Only now does the batch have tasks: the replaced rule never wanted a machine.
    tasks = [rs.task_create(f"sleep 0.5; echo {i}", shell=True, batch=batch) for i in range(8)]

    # Seen while its tasks wait, so before it can idle out.
    (first, *_) = wait_for("a recruited agent online", lambda: [
        w for w in recruited(rs) if w["status"] == "online"], timeout=LONG)
    assert (first["flavor"], first["region"], first["batch"], first["concurrency"]) == (
        "big", "local", batch, 2), first
    counts = rs.join(tasks, check=True, progress=False)
    assert counts["succeeded"] == 8
    workers = ran_on(rs, batch)
    assert workers and workers <= machine_names(rs), workers
    assert len(workers) <= 2
    assert rs.recruiters(batch)[0]["failures"] == 0

    wait_all_destroyed(rs)
    assert rs.recruiter_delete(batch) == 1
    assert rs.recruiters(batch) == []


def test_worker_deploy_by_hand_then_worker_delete_destroys_it(rs):
    (machine,) = rs.worker_deploy(1, "deployed", None, "auto:cpu>=1", 1, "local")
    assert (machine["flavor"], machine["provider"], machine["batch"]) == ("small", "local",
                                                                          "deployed")
    worker = wait_for("the deployed agent online", lambda: [
        w for w in recruited(rs) if w["name"] == machine["name"] and w["status"] == "online"],
        timeout=LONG)[0]
    assert (worker["concurrency"], worker["batch"]) == (1, "deployed")
    task = rs.task_create("echo by hand", batch="deployed")
    rs.join([task], check=True, progress=False)
    assert rs.task_get(task)["worker_id"] == worker["worker_id"]
    assert rs.worker_delete(worker["worker_id"]) == machine["name"]
    wait_all_destroyed(rs)
    jobs = [j for j in rs.jobs() if j["machine"] == machine["name"]]
    assert sorted((j["action"], j["status"]) for j in jobs) == [("create", "succeeded"),
                                                                ("destroy", "succeeded")]


def test_a_workflow_recruits_per_step_within_its_cap(rs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkflowError, match="needs max_workflow_workers"):
        Workflow("capless", server=rs, provider="local", flavor="small")
    with pytest.raises(Unsupported, match="flavor='small' without provider"):
        Workflow("noprov", server=rs, flavor="small").step(batch="s", command="true",
                                                           concurrency=1, maximum_workers=1)

    before = machine_names(rs)
    wf = Workflow("recwf", server=rs, shell=True, provider="local", flavor="small",
                  max_step_workers=2, max_workflow_workers=3, concurrency=1, idle_timeout=2)
    firsts = [wf.step(batch="first", name=f"first-{i}", command=f"sleep 0.3; echo {i}")
              for i in range(4)]
    with pytest.raises(WorkflowError, match="concurrency=2: .* batch first .* concurrency=1"):
        wf.step(batch="first", command="true", concurrency=2)
    second = [wf.step(batch="second", name=f"second-{i}", command="echo two", flavor="big",
                      required_tasks=first, maximum_workers=3)
              for i, first in enumerate(firsts)]
    last = wf.step(batch="last", name="last", command="echo done",
                   required_tasks=second[-1].gather())
    # The cap is shared out before anything is recruited: 3 machines for 3 steps, one for
    # the single task of the last step.
    assert wf.recruit() == {"first": 1, "second": 1, "last": 1}
    rules = {r["batch"]: r for r in rs.recruiters() if r["batch"].startswith("recwf.")}
    assert {b: (r["maximum_workers"], r["worker_flavor"]) for b, r in rules.items()} == {
        "recwf.first": (1, "small"), "recwf.second": (1, "big"), "recwf.last": (1, "small")}

    counts = wf.run(progress=False)
    assert {step: c["succeeded"] for step, c in counts.items()} == {"first": 4, "second": 4,
                                                                   "last": 1}
    assert last.get_output() == "done\n"
    machines = machine_names(rs) - before
    assert all(ran_on(rs, b) and ran_on(rs, b) <= machines for b in rules), machines
    assert 1 <= len(machines) <= 3, machines

    assert wf.clean() == {"first": 4, "second": 4, "last": 1}
    assert [r for r in rs.recruiters() if r["batch"].startswith("recwf.")] == []
    wait_all_destroyed(rs)


def test_the_readme_recruiting_examples(rs, recruiting, tmp_path, monkeypatch):
    monkeypatch.setenv("SCITQ_TOKEN", recruiting.token)
    monkeypatch.chdir(tmp_path)
    found = examples(recruiting=True)
    assert len(found) == 2
    run_examples(found, recruiting.addr, tmp_path)
    wait_all_destroyed(rs)
