"""Python client of scitq-rs.

The original scitq's import paths work as they did: `scitq.lib.Server` (tasks, batches,
workers and `join`), `scitq.workflow.Workflow` (steps with dependencies) and
`scitq.bio.genetics.sra_get_samples` (public sequencing runs from ENA). All of it talks to
`scitqd` over its gRPC API (the stubs in `scitq.v1`); see python/README.md.
"""

from .errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    JoinError,
    NotFound,
    PermissionDenied,
    RecruitmentUnavailable,
    ScitqError,
    ServerError,
    Unavailable,
    Unsupported,
    WorkflowError,
)

__all__ = [
    "ConfigError",
    "FailedPrecondition",
    "InvalidArgument",
    "JoinError",
    "NotFound",
    "PermissionDenied",
    "RecruitmentUnavailable",
    "ScitqError",
    "ServerError",
    "Unavailable",
    "Unsupported",
    "WorkflowError",
]
