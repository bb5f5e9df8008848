"""Fixtures: a real scitqd + scitq-agent on loopback for the whole session, and helpers."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import Cluster, wait_for  # noqa: E402

from scitq.lib import Server  # noqa: E402

_batches = itertools.count(1)


def _report_logs(request, cluster: Cluster) -> None:
    if request.session.testsfailed:
        print(f"\n{cluster.logs()}", file=sys.stderr)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, request):
    """scitqd with one agent (concurrency 4), shared by the tests (each uses its own batch)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.start_agent()
    try:
        s = Server(c.addr, token=c.token)
        wait_for("the agent to connect", lambda: any(w["status"] == "online" for w in s.workers()))
        s.close()
        yield c
    finally:
        _report_logs(request, c)
        c.stop()


@pytest.fixture
def server(cluster):
    s = Server(cluster.addr, token=cluster.token)
    yield s
    s.close()


@pytest.fixture
def batch(request):
    """A batch name of this test's own."""
    return f"{request.node.name[:40]}-{next(_batches)}"
