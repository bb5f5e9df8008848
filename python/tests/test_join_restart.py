"""join() waits through a scitqd SIGKILL and restart, and through a network break, without
raising: it reconnects and returns when the tasks are done."""

import threading

import pytest

from cluster import Cluster, wait_for
from scitq.lib import Server


@pytest.fixture
def own_cluster(tmp_path, request):
    c = Cluster(tmp_path / "own", concurrency=4)
    c.start_agent("restart-agent")
    yield c
    if request.session.testsfailed:
        print(c.logs())
    c.stop()


def test_join_survives_a_scitqd_sigkill_and_restart_and_a_network_cut(own_cluster, capsys):
    s = Server(own_cluster.addr, token=own_cluster.token)
    tasks = [s.task_create(f"sleep 2; echo {i}", shell=True, batch="restart") for i in range(6)]
    outcome = {}

    def wait():
        try:
            outcome["counts"] = s.join(tasks, progress=False)
        except BaseException as e:  # noqa: BLE001 - the test asserts there is none
            outcome["error"] = e

    joiner = threading.Thread(target=wait)
    joiner.start()
    wait_for("a task to run", lambda: "running" in s.task_status(tasks))
    own_cluster.kill_scitqd()
    seen = []

    def said(text):
        seen.append(capsys.readouterr().err)
        return text in "".join(seen)

    wait_for("join to notice scitqd is gone", lambda: said("cannot reach scitqd"))
    assert joiner.is_alive()
    own_cluster.restart_scitqd()
    wait_for("join to notice scitqd is back", lambda: said("scitqd is back"))
    own_cluster.proxy.cut()
    joiner.join(timeout=120)
    assert not joiner.is_alive(), "join did not return"
    assert "error" not in outcome, outcome
    assert outcome["counts"]["succeeded"] == 6
    assert [s.task_output(t) for t in tasks] == [f"{i}\n" for i in range(6)]
