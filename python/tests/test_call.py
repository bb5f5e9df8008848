"""A connection that breaks under a call: reads are sent again, changes are not."""

import grpc
import pytest

from scitq.errors import Unavailable
from scitq.lib import Server
from scitq.v1 import scitq_pb2 as pb


class Broken(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "Stream removed"


class Flaky:
    """A stub method that fails `failures` times with UNAVAILABLE, then answers."""

    def __init__(self, failures, answer):
        self.failures = failures
        self.answer = answer
        self.calls = 0

    def __call__(self, request, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise Broken()
        return self.answer


@pytest.fixture
def server():
    s = Server("127.0.0.1:1", token="t", rpc_timeout=5)
    yield s
    s.close()


def test_a_read_is_sent_again_when_the_connection_breaks_under_it(server):
    method = Flaky(2, pb.GetOutputResponse())
    assert server._call(method, pb.GetOutputRequest(task_id=1)) == pb.GetOutputResponse()
    assert method.calls == 3


def test_a_change_is_not_sent_again(server):
    method = Flaky(1, pb.Task())
    with pytest.raises(Unavailable):
        server._call(method, pb.TaskRef(id=1))
    assert method.calls == 1


def test_a_read_gives_up_at_its_deadline(server):
    method = Flaky(10**6, pb.GetOutputResponse())
    with pytest.raises(Unavailable):
        server._call(method, pb.GetOutputRequest(task_id=1), timeout=0.5)
    assert 2 <= method.calls < 10
