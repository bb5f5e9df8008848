"""The exceptions of the scitq package: one hierarchy under `ScitqError`.

Errors from scitqd carry its message and its gRPC status code name (`code`, e.g.
`"NOT_FOUND"`); errors found before anything is sent (a bad address, a missing token, an
argument this server does not support) have `code` None.
"""

from __future__ import annotations

from typing import Optional

import grpc


class ScitqError(Exception):
    """Base of every error raised by this package."""

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigError(ScitqError, ValueError):
    """The server address, token or client config cannot be used."""


class Unsupported(ScitqError, ValueError):
    """An argument of the original scitq API that this server has no equivalent for."""


class ServerError(ScitqError):
    """scitqd answered with an error status."""


class NotFound(ServerError, LookupError):
    """The task, batch or worker does not exist."""


class InvalidArgument(ServerError, ValueError):
    """scitqd refused a value (bad URI, empty command, unknown dependency...)."""


class FailedPrecondition(ServerError):
    """The request does not apply to the object in its current state."""


class RecruitmentUnavailable(FailedPrecondition):
    """This scitqd recruits no workers: its config has no `[[provider]]`."""


class PermissionDenied(ServerError, PermissionError):
    """The token is missing, wrong, or may not call this."""


class Unavailable(ServerError, ConnectionError):
    """scitqd could not be reached (down, restarting, or the network is cut)."""


class JoinError(ScitqError, RuntimeError):
    """`join(..., check=True)`: some tasks did not succeed."""

    def __init__(self, message: str, failed: list[int]):
        super().__init__(message)
        self.failed = failed


class WorkflowError(ScitqError):
    """A workflow or step was declared with arguments that cannot work together."""


#: The original name, kept so `except WorkflowException` in old scripts still works.
WorkflowException = WorkflowError

_BY_CODE: dict[grpc.StatusCode, type[ServerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def from_rpc_error(error: grpc.RpcError) -> ServerError:
    """The exception for a failed call, with scitqd's message and status code."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    cls = _BY_CODE.get(code, ServerError)
    return cls(details or str(code), code.name if code is not None else None)
