"""Wire messages to the plain dicts the original scitq returned, with its field names.

Only this module and `lib.py` know the generated types; everything else sees dicts (or
`argparse.Namespace` objects with `style='object'`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from .v1 import scitq_pb2 as pb

#: Task statuses by their name in results and filters ("pending", "running", ...).
TASK_STATUSES = {
    name.removeprefix("TASK_STATUS_").lower(): value
    for name, value in pb.TaskStatus.items()
    if value != pb.TASK_STATUS_UNSPECIFIED
}
#: Statuses a task leaves only when someone acts (relaunch, resume, edit).
FINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


def task_status(value: int) -> str:
    return pb.TaskStatus.Name(value).removeprefix("TASK_STATUS_").lower()


def _date(ts, present: bool = True) -> Optional[datetime]:
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=timezone.utc)


def _joined(values: Iterable[str]) -> Optional[str]:
    values = list(values)
    return " ".join(values) if values else None


def shell_name(value: int) -> Optional[str]:
    return {pb.SHELL_SH: "sh", pb.SHELL_BASH: "bash"}.get(value)


def task(t: pb.Task) -> dict[str, Any]:
    spec = t.spec
    return {
        "task_id": t.id,
        "name": spec.name or None,
        "status": task_status(t.status),
        "status_reason": t.status_reason or None,
        "command": spec.command,
        "shell": shell_name(spec.shell),
        "batch": spec.batch or "Default",
        # The original gave inputs and resources as one space-separated string.
        "input": _joined(spec.inputs),
        "inputs": list(spec.inputs),
        "output": spec.output or None,
        "resource": _joined(spec.resources),
        "resources": list(spec.resources),
        "container": spec.container or None,
        "container_options": list(spec.container_options),
        "retry": spec.retry,
        "retry_left": t.retry_left,
        "priority": spec.priority,
        "run_timeout": spec.run_timeout_s or None,
        "required_task_ids": list(spec.depends_on),
        "execution_id": t.execution_id if t.HasField("execution_id") else None,
        "worker_id": t.worker_id if t.HasField("worker_id") else None,
        "return_code": t.exit_code if t.HasField("exit_code") else None,
        "creation_date": _date(t.created_at),
        "modification_date": _date(t.updated_at),
    }


#: Execution states by their name in results and filters ("running", "failed", ...).
EXECUTION_STATES = {
    name.removeprefix("EXECUTION_STATE_").lower(): value
    for name, value in pb.ExecutionState.items()
    if value != pb.EXECUTION_STATE_UNSPECIFIED
}


def execution(
    e: pb.Execution, output: Optional[str] = None, error: Optional[str] = None
) -> dict[str, Any]:
    failure = None
    if e.failure != pb.FAILURE_CLASS_UNSPECIFIED:
        failure = pb.FailureClass.Name(e.failure).removeprefix("FAILURE_CLASS_").lower()
    return {
        "execution_id": e.id,
        "task_id": e.task_id,
        "worker_id": e.worker_id,
        "worker_name": e.worker_name,
        "status": pb.ExecutionState.Name(e.state).removeprefix("EXECUTION_STATE_").lower(),
        "command": e.command,
        "shell": shell_name(e.shell),
        "return_code": e.exit_code if e.HasField("exit_code") else None,
        "failure": failure,
        "message": e.message or None,
        "creation_date": _date(e.assigned_at),
        "start_date": _date(e.started_at, e.HasField("started_at")),
        "end_date": _date(e.finished_at, e.HasField("finished_at")),
        "output": output,
        "error": error,
        "output_files": [f.uri for f in e.uploaded],
        "stdout_bytes": e.stdout_bytes,
        "stderr_bytes": e.stderr_bytes,
    }


def worker(w: pb.Worker) -> dict[str, Any]:
    return {
        "worker_id": w.id,
        "name": w.name,
        "hostname": w.host,
        "concurrency": w.concurrency,
        "prefetch": w.prefetch,
        # True: the agent adapts its prefetch (`prefetch` is the value in force now).
        "prefetch_auto": w.prefetch_auto,
        "batch": w.batch or None,
        "status": pb.WorkerStatus.Name(w.status).removeprefix("WORKER_STATUS_").lower(),
        "paused": w.paused,
        "draining": w.draining,
        "active": w.active,
        "last_contact_date": _date(w.last_contact),
        # The machine scitqd recruited it on (None for an agent started by hand).
        "provider": w.provider or None,
        "flavor": w.flavor or None,
        "region": w.region or None,
    }


def batch(b: pb.Batch) -> dict[str, Any]:
    counts = {status: int(b.counts.get(status, 0)) for status in TASK_STATUSES}
    state = "suspended" if b.suspended else "stopped" if b.stopped else "running"
    return {"batch": b.name, "status": state, "stopped": b.stopped, "suspended": b.suspended,
            "counts": counts, **counts}


def flavor_filter(cpu: int, memory_gib: int, disk_gib: int, gpu: int) -> str:
    """Minimums in the original's protofilter form (`auto:cpu>=4:ram>=16`)."""
    parts = [f"{key}>={value}" for key, value in
             (("cpu", cpu), ("ram", memory_gib), ("disk", disk_gib), ("gpu", gpu)) if value]
    return ":".join(["auto", *parts])


def recruiter(r: pb.Recruiter) -> dict[str, Any]:
    flavor = r.flavor or flavor_filter(r.min_cpu, r.min_mem_gib, r.min_disk_gib, r.gpu)
    return {
        "recruiter_id": r.id,
        "batch": r.batch,
        "worker_provider": r.provider,
        "worker_region": r.region or None,
        "worker_flavor": flavor,
        "worker_concurrency": r.concurrency,
        "worker_prefetch": r.prefetch if r.HasField("prefetch") else None,
        "rounds": r.rounds,
        # The original's way of saying how many tasks a machine is recruited for.
        "tasks_per_worker": r.concurrency * r.rounds,
        "maximum_workers": r.max_workers,
        "idle_timeout": r.idle_timeout_s,
        "paused": r.paused,
        "paused_reason": r.paused_reason or None,
        "failures": r.failures,
        "machines": r.machines,
    }


def flavor(f: pb.Flavor) -> dict[str, Any]:
    return {
        "name": f.name,
        "provider": f.provider,
        "cpu": f.cpu,
        # GiB, as the original's `ram`.
        "ram": f.memory_mib / 1024,
        "disk": f.disk_gib,
        "gpu": f.gpu,
        "cost": f.price_per_hour if f.HasField("price_per_hour") else None,
    }


def machine(m: pb.Machine) -> dict[str, Any]:
    return {
        "machine_id": m.id,
        "name": m.name,
        "provider": m.provider,
        "region": m.region,
        "flavor": m.flavor,
        "status": m.state,
        "recruiter_id": m.recruiter_id or None,
        "batch": m.batch or None,
        "creation_date": _date(m.created_at),
        "reason": m.reason or None,
    }


def job(j: pb.Job) -> dict[str, Any]:
    return {
        "job_id": j.id,
        "machine": j.machine,
        "action": j.kind,
        "status": j.status,
        "attempts": j.attempts,
        "error_class": j.error_class or None,
        "log": j.log,
        "creation_date": _date(j.created_at),
        "modification_date": _date(j.updated_at),
    }


def split_output(chunks: Iterable[pb.OutputChunk]) -> tuple[str, str]:
    """Stdout and stderr text of an execution's chunks (in arrival order)."""
    out = bytearray()
    err = bytearray()
    for chunk in chunks:
        (err if chunk.stream == pb.OUTPUT_STREAM_STDERR else out).extend(chunk.data)
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
