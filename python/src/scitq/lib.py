"""`Server`: the original scitq's client API (`scitq.lib.Server`) over scitqd's gRPC API.

    from scitq.lib import Server
    s = Server('127.0.0.1')
    task = s.task_create('echo hello', batch='demo')
    s.join([task], retry=2)
    print(s.task_output(task['task_id']))

Results are dicts with the original's field names (`task_id`, `status`, `command`, `batch`,
`output`, ...), or `argparse.Namespace` objects with `style='object'`. Arguments of the
original that this server has no equivalent for raise `Unsupported`; none is silently
ignored. Recruitment (`recruiter_create`, `worker_deploy`, `flavors`, `jobs`) is in
`_recruit.py`; on a scitqd with no `[[provider]]` it raises `RecruitmentUnavailable`.
"""

from __future__ import annotations

import shlex
import signal as _signal
import time
from argparse import Namespace
from typing import Any, Iterable, Optional, Sequence, Union

import grpc

from . import _convert as convert
from ._join import join_tasks
from ._recruit import Recruitment
from ._target import Target, resolve
from .errors import (
    FailedPrecondition,
    NotFound,
    ScitqError,
    Unsupported,
    from_rpc_error,
)
from .v1 import scitq_pb2 as pb
from .v1 import scitq_pb2_grpc as rpc

# Requests that change nothing on the server: sent again when a connection breaks under them.
_READS = (
    pb.ListTasksRequest,
    pb.GetTaskRequest,
    pb.ListExecutionsRequest,
    pb.GetOutputRequest,
    pb.ListBatchesRequest,
    pb.ListWorkersRequest,
    pb.ListRecruitersRequest,
    pb.ListFlavorsRequest,
    pb.ListJobsRequest,
)

__all__ = ["Server"]

#: Seconds a call waits for scitqd (reconnecting meanwhile) before it raises `Unavailable`.
DEFAULT_RPC_TIMEOUT = 60.0
#: ListTasks page size (the server's maximum).
_PAGE = 10000

_CHANNEL_OPTIONS = [
    # Reconnect quickly after a scitqd restart instead of backing off for minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Notice a connection that went silent (a cut network) and open a new one.
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]

TaskRef = Union[int, dict, Namespace, Any]


def task_id_of(task: TaskRef) -> int:
    """The id of a task given as an id, a task dict or a task object (a `Step` too)."""
    if isinstance(task, bool):
        raise TypeError(f"not a task: {task!r}")
    if isinstance(task, int):
        return task
    if isinstance(task, dict):
        return int(task["task_id"])
    task_id = getattr(task, "task_id", None)
    if task_id is None:
        raise TypeError(f"not a task (no task_id): {task!r}")
    return int(task_id)


def _uri_list(value: Union[None, str, Iterable[Any]], argument: str) -> list[str]:
    """A list of URIs from a list, or from one string of space-separated URIs (the original's form)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    raise TypeError(f"{argument} must be a string or a list of strings, not {value!r}")


def _options(value: Union[None, str, Sequence[str]]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _shell(value: Union[None, bool, str]) -> int:
    if value is None or value is False:
        return pb.SHELL_NONE
    if value is True or value == "sh":
        return pb.SHELL_SH
    if value == "bash":
        return pb.SHELL_BASH
    raise Unsupported(f"invalid shell {value!r}: use True (sh), 'sh', 'bash' or False")


def _statuses(status: Union[None, str, Iterable[str]]) -> list[int]:
    if status is None:
        return []
    names = [status] if isinstance(status, str) else list(status)
    values = []
    for name in names:
        value = convert.TASK_STATUSES.get(str(name).lower())
        if value is None:
            known = ", ".join(convert.TASK_STATUSES)
            raise Unsupported(f"invalid task status {name!r}: expected one of {known}")
        values.append(value)
    return values


def _execution_states(status: Union[None, str, Iterable[str]]) -> list[int]:
    if status is None:
        return []
    names = [status] if isinstance(status, str) else list(status)
    values = []
    for name in names:
        value = convert.EXECUTION_STATES.get(str(name).lower())
        if value is None:
            known = ", ".join(convert.EXECUTION_STATES)
            raise Unsupported(f"invalid execution status {name!r}: expected one of {known}")
        values.append(value)
    return values


def _refuse(argument: str, value: Any, why: str) -> None:
    if value is not None:
        raise Unsupported(f"{argument}={value!r} is not supported: {why}")


class Server(Recruitment):
    """A connection to scitqd.

    Arguments:
    - address: `HOST`, `HOST:PORT` or `http(s)://HOST:PORT` (port 5000 when missing); default
      `SCITQ_SERVER`, else `server` in the client config scitqd writes
      (`~/.config/scitq/config.toml`), else 127.0.0.1:5000.
    - token: the admin token; default `SCITQ_TOKEN`, else `token` in the client config.
    - style: 'dict' (default) returns dicts, 'object' returns `argparse.Namespace` objects.
    - insecure: allow sending the token over plain http to another machine (default
      `SCITQ_INSECURE`); refused otherwise, as scitqctl does.
    - rpc_timeout: seconds a call waits for an unreachable scitqd before raising `Unavailable`
      (`join` and `Workflow.run` wait for ever instead).
    """

    def __init__(
        self,
        address: Optional[str] = None,
        token: Optional[str] = None,
        style: str = "dict",
        insecure: Optional[bool] = None,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
    ):
        if style not in ("dict", "object"):
            raise ScitqError(f"invalid style {style!r}: use 'dict' or 'object'")
        self.style = style
        self.rpc_timeout = rpc_timeout
        self.target: Target = resolve(address, token, insecure)
        self._metadata = (("authorization", f"Bearer {self.target.token}"),)
        address_ = self.target.address
        if address_.tls:
            self._channel = grpc.secure_channel(
                address_.target, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS
            )
        else:
            self._channel = grpc.insecure_channel(address_.target, options=_CHANNEL_OPTIONS)
        self._tasks = rpc.TaskServiceStub(self._channel)
        self._executions = rpc.ExecutionServiceStub(self._channel)
        self._workers = rpc.WorkerServiceStub(self._channel)

    # -- plumbing ----------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Server({str(self.target.address)!r}, style={self.style!r})"

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; the object cannot be used afterwards."""
        self._channel.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        """One RPC: waits for the channel (scitqd restarting) up to the deadline.

        `wait_for_ready` covers a channel that is not connected yet, not a connection that
        breaks under a call ("Stream removed"): a read (which changes nothing on the server)
        is then sent again until the deadline; a change is not, since it may have been applied.
        """
        budget = self.rpc_timeout if timeout is None else timeout
        deadline = None if budget is None else time.monotonic() + budget
        pause = 0.1
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                return method(request, metadata=self._metadata, timeout=left, wait_for_ready=True)
            except grpc.RpcError as e:
                again = (
                    isinstance(request, _READS)
                    and e.code() == grpc.StatusCode.UNAVAILABLE
                    and (deadline is None or time.monotonic() + pause < deadline)
                )
                if not again:
                    raise from_rpc_error(e) from None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _wrap(self, value: Any) -> Any:
        if self.style == "object":
            if isinstance(value, list):
                return [Namespace(**v) if isinstance(v, dict) else v for v in value]
            if isinstance(value, dict):
                return Namespace(**value)
        return value

    @staticmethod
    def _wrap_dict(value: Any) -> Any:
        """A result as a dict, whatever the style."""
        return vars(value) if isinstance(value, Namespace) else value

    def _list_tasks(
        self,
        ids: Sequence[int] = (),
        status: Sequence[int] = (),
        batch: Optional[str] = None,
        name: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> list[pb.Task]:
        found: list[pb.Task] = []
        after = 0
        while True:
            request = pb.ListTasksRequest(
                ids=list(ids), status=list(status), after_id=after, limit=_PAGE
            )
            if batch is not None:
                request.batch = batch
            if name is not None:
                request.name = name
            page = self._call(self._tasks.ListTasks, request, timeout)
            found.extend(page.tasks)
            if not page.next_after_id:
                return found
            after = page.next_after_id

    # -- tasks -------------------------------------------------------------------------

    def task_create(
        self,
        command: str,
        name: Optional[str] = None,
        status: Optional[str] = None,
        batch: Optional[str] = None,
        input: Union[None, str, Iterable[Any]] = None,
        output: Optional[str] = None,
        container: Optional[str] = None,
        container_options: Union[None, str, Sequence[str]] = None,
        resource: Union[None, str, Iterable[Any]] = None,
        required_task_ids: Optional[Iterable[TaskRef]] = None,
        shell: Union[None, bool, str] = False,
        retry: Optional[int] = None,
        priority: Optional[int] = None,
        run_timeout: Optional[int] = None,
        timeout: Optional[int] = None,
        download_timeout: Optional[int] = None,
        use_cache: Optional[bool] = None,
        resume: Optional[bool] = None,
    ):
        """Creates a task and returns it.

        - command: the command line; with `shell=True` (or 'sh', 'bash') it runs in a shell.
        - input / resource: URIs, as a list or one space-separated string.
        - output: URI the task's /output folder is uploaded to.
        - container, container_options: docker image and its options (list or string).
        - required_task_ids: tasks (ids or task objects) that must succeed first.
        - retry: automatic relaunches after a failure; priority: higher runs first.
        - run_timeout (or timeout): seconds the command may run.
        - resume (or use_cache): when a task of the batch with the same command, container,
          inputs, resources and output already succeeded, its dependencies succeeded, no
          input changed since it ran and its output files are still there, that task is
          returned instead of a new one (its `status_reason` names the execution kept).
        """
        if status not in (None, "pending", "waiting"):
            raise Unsupported(
                f"status={status!r} is not supported at creation: a task starts pending "
                f"(waiting while it has unmet dependencies); pause it with task_update"
            )
        _refuse("download_timeout", download_timeout, "this server has no download time limit")
        if run_timeout is not None and timeout is not None and run_timeout != timeout:
            raise Unsupported(f"run_timeout={run_timeout} and timeout={timeout} disagree")
        limit = run_timeout if run_timeout is not None else timeout
        spec = pb.TaskSpec(
            name=name or "",
            batch=batch or "",
            command=command,
            shell=_shell(shell),
            container=container or "",
            container_options=_options(container_options),
            inputs=_uri_list(input, "input"),
            output=str(output) if output else "",
            resources=_uri_list(resource, "resource"),
            retry=retry or 0,
            priority=priority or 0,
            run_timeout_s=limit or 0,
            depends_on=[task_id_of(t) for t in (required_task_ids or [])],
        )
        request = pb.CreateTasksRequest(tasks=[spec], resume=bool(resume or use_cache))
        created = self._call(self._tasks.CreateTasks, request)
        return self.task_get(created.ids[0])

    def task_get(self, id: TaskRef):
        """Returns one task."""
        found = self._call(self._tasks.GetTask, pb.GetTaskRequest(id=task_id_of(id)))
        return self._wrap(convert.task(found))

    def tasks(
        self,
        task_id: Optional[Iterable[TaskRef]] = None,
        status: Union[None, str, Iterable[str]] = None,
        batch: Optional[str] = None,
        name: Optional[str] = None,
    ):
        """Lists tasks, oldest first: all of them, or those matching every filter given
        (ids, one status or a list, batch, name glob with `*` and `?`)."""
        ids = [task_id_of(t) for t in task_id] if task_id is not None else []
        if task_id is not None and not ids:
            return []
        found = self._list_tasks(ids, _statuses(status), batch, name)
        return self._wrap([convert.task(t) for t in found])

    def task_status(self, task_id_list: Iterable[TaskRef]) -> list[str]:
        """The status of each task, in the order given."""
        ids = [task_id_of(t) for t in task_id_list]
        by_id = {t.id: convert.task_status(t.status) for t in self._list_tasks(ids)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise NotFound(f"no such task: {missing[0]}", "NOT_FOUND")
        return [by_id[i] for i in ids]

    def task_update(
        self,
        id: TaskRef,
        command: Optional[str] = None,
        name: Optional[str] = None,
        status: Optional[str] = None,
        batch: Optional[str] = None,
        input: Union[None, str, Iterable[Any]] = None,
        output: Optional[str] = None,
        container: Optional[str] = None,
        container_options: Union[None, str, Sequence[str]] = None,
        resource: Union[None, str, Iterable[Any]] = None,
        required_task_ids: Optional[Iterable[TaskRef]] = None,
        retry: Optional[int] = None,
        priority: Optional[int] = None,
        run_timeout: Optional[int] = None,
        shell: Union[None, bool, str] = None,
        download_timeout: Optional[int] = None,
        use_cache: Optional[bool] = None,
    ):
        """Changes a task and returns it.

        Fields can change while the task has not started (waiting, pending or paused);
        `batch` moves it to another batch (created if new).
        `status='pending'` relaunches a finished task (failed, succeeded or canceled; with
        `command`, with that new command) or resumes a paused one; `status='paused'` pauses
        it; `status='canceled'` kills it.
        """
        task_id = task_id_of(id)
        _refuse("required_task_ids", required_task_ids, "dependencies are set at creation")
        _refuse("download_timeout", download_timeout, "this server has no download time limit")
        _refuse("use_cache", use_cache, "this server has no task cache yet")
        current = None
        if status == "pending" and command is not None:
            current = self._call(self._tasks.GetTask, pb.GetTaskRequest(id=task_id))
        relaunch_command = None
        if current is not None and convert.task_status(current.status) in convert.FINAL_STATUSES:
            relaunch_command, command = command, None
        changes = pb.TaskChanges()
        for field, value in (("command", command), ("name", name), ("container", container),
                             ("output", output), ("retry", retry), ("priority", priority),
                             ("run_timeout_s", run_timeout), ("batch", batch)):
            if value is not None:
                setattr(changes, field, value)
        if shell is not None:
            changes.shell = _shell(shell)
        for field, value in (("inputs", input), ("resources", resource)):
            if value is not None:
                getattr(changes, field).values.extend(_uri_list(value, field))
                getattr(changes, field).SetInParent()
        if container_options is not None:
            changes.container_options.values.extend(_options(container_options))
            changes.container_options.SetInParent()
        if changes.ListFields():
            self._call(
                self._tasks.EditTasks,
                pb.EditTasksRequest(selector=pb.TaskSelector(ids=[task_id]), changes=changes),
            )
        if status is not None:
            self._set_status(task_id, status, relaunch_command)
        return self.task_get(task_id)

    def _set_status(self, task_id: int, status: str, command: Optional[str]) -> None:
        ref = pb.TaskRef(id=task_id)
        if status == "paused":
            self._call(self._tasks.PauseTask, ref)
        elif status == "canceled":
            self._call(self._tasks.KillTask, ref)
        elif status == "pending":
            current = self._call(self._tasks.GetTask, pb.GetTaskRequest(id=task_id))
            now = convert.task_status(current.status)
            if now == "paused":
                self._call(self._tasks.ResumeTask, ref)
            elif now in convert.FINAL_STATUSES:
                self.task_relaunch(task_id, command=command)
            else:
                raise FailedPrecondition(
                    f"task {task_id} is {now}: only a finished or paused task can be set pending",
                    "FAILED_PRECONDITION",
                )
        else:
            raise Unsupported(
                f"status={status!r} cannot be set: use 'pending' (relaunch or resume), "
                f"'paused' or 'canceled'"
            )

    def task_relaunch(self, id: TaskRef, command: Optional[str] = None):
        """Runs a finished task again as a new execution (optionally with a new command);
        the dependants its failure canceled wait for it again. Returns the task."""
        request = pb.RelaunchTaskRequest(id=task_id_of(id))
        if command is not None:
            request.command = command
        return self._wrap(convert.task(self._call(self._tasks.RelaunchTask, request)))

    def task_pause(self, id: TaskRef):
        """Holds a task back (a running one is frozen)."""
        return self._wrap(convert.task(self._call(self._tasks.PauseTask, pb.TaskRef(id=task_id_of(id)))))

    def task_resume(self, id: TaskRef):
        """Undoes task_pause."""
        return self._wrap(convert.task(self._call(self._tasks.ResumeTask, pb.TaskRef(id=task_id_of(id)))))

    def task_kill(self, id: TaskRef):
        """Stops a task for good (a running one is killed, a waiting one canceled)."""
        return self._wrap(convert.task(self._call(self._tasks.KillTask, pb.TaskRef(id=task_id_of(id)))))

    def task_explain(self, id: TaskRef) -> list[str]:
        """Why the task is where it is, in plain sentences."""
        answer = self._call(self._tasks.ExplainTask, pb.TaskRef(id=task_id_of(id)))
        return list(answer.reasons)

    def task_delete(self, id: TaskRef) -> None:
        """Deletes a task with its executions and output (an active one is canceled on its
        worker). Refused while a task that has not ended depends on it."""
        self._call(self._tasks.DeleteTask, pb.TaskRef(id=task_id_of(id)))

    # -- executions and output ---------------------------------------------------------

    def executions(self, task_id: Optional[TaskRef] = None, latest: bool = False,
                   output: bool = True, batch: Optional[str] = None,
                   status: Union[None, str, Iterable[str]] = None,
                   worker_id: Optional[int] = None):
        """Executions (attempts), oldest first: those of one task, or without `task_id` those
        of every task, filtered by `batch`, `status` (execution states, one or a list:
        'running', 'failed'...) and `worker_id`. Each comes with its stdout as `output` and
        stderr as `error` (skip fetching them with `output=False`). With `latest=True`, only
        the last one of each task."""
        request = pb.ListExecutionsRequest(task_id=task_id_of(task_id) if task_id is not None else 0)
        if batch is not None:
            request.batch = batch
        if worker_id is not None:
            request.worker_id = worker_id
        request.state.extend(_execution_states(status))
        found = []
        while True:
            answer = self._call(self._executions.ListExecutions, request)
            found.extend(answer.executions)
            if not answer.next_after_id:
                break
            request.after_id = answer.next_after_id
        if latest:
            last = {e.task_id: e for e in found}
            found = [e for e in found if last[e.task_id] is e]
        result = []
        for e in found:
            out = err = None
            if output:
                answer = self._call(self._executions.GetOutput,
                                    pb.GetOutputRequest(task_id=e.task_id, execution_id=e.id))
                out, err = convert.split_output(answer.chunks)
            result.append(convert.execution(e, out, err))
        return self._wrap(result)

    def task_output(self, task_id: TaskRef, error: bool = False) -> Optional[str]:
        """The stdout (stderr with `error=True`) of the task's last execution, as text;
        None when it never ran."""
        answer = self._call(self._executions.GetOutput,
                            pb.GetOutputRequest(task_id=task_id_of(task_id)))
        if not answer.execution_id:
            return None
        out, err = convert.split_output(answer.chunks)
        return err if error else out

    # -- waiting -----------------------------------------------------------------------

    def join(self, tasks: Sequence[TaskRef], retry: int = 0, check: bool = False,
             progress: Optional[bool] = None):
        """Waits until every task is done (succeeded, or failed or canceled for good).

        Failed tasks are relaunched up to `retry` times each. A scitqd restart or a network
        break does not interrupt the wait: it reconnects. Shows a progress bar when stderr
        is a terminal (force it on or off with `progress`). Returns the task counts by
        status; with `check=True`, raises `JoinError` (a RuntimeError) if some did not
        succeed.
        """
        return join_tasks(self, [task_id_of(t) for t in tasks], retry=retry, check=check,
                          progress=progress)

    # -- batches -----------------------------------------------------------------------

    def batches(self):
        """Lists batches with their state and task counts by status."""
        answer = self._call(self._tasks.ListBatches, pb.ListBatchesRequest())
        return self._wrap([convert.batch(b) for b in answer.batches])

    def batch_stop(self, batch: str, signal: Union[None, int, str] = None):
        """Stops a batch: no new task of it starts. With signal 15 (SIGTERM) or 9 (SIGKILL),
        its running tasks get it; with SIGTSTP (or 'suspend') they are frozen instead."""
        if signal in (None, 0):
            wire = pb.SIGNAL_UNSPECIFIED
        elif signal in (_signal.SIGTERM, "term", "TERM"):
            wire = pb.SIGNAL_TERM
        elif signal in (_signal.SIGKILL, "kill", "KILL"):
            wire = pb.SIGNAL_KILL
        elif signal in (_signal.SIGTSTP, _signal.SIGSTOP, "suspend", "pause"):
            answer = self._call(self._tasks.SuspendBatch, pb.SuspendBatchRequest(name=batch))
            return self._wrap(convert.batch(answer))
        else:
            raise Unsupported(
                f"invalid signal {signal!r}: use 15 (SIGTERM), 9 (SIGKILL) or SIGTSTP (suspend)"
            )
        answer = self._call(self._tasks.StopBatch, pb.StopBatchRequest(name=batch, signal=wire))
        return self._wrap(convert.batch(answer))

    def batch_go(self, batch: str, signal: Union[None, int, str] = None):
        """Lets a stopped or suspended batch run again (frozen tasks resume)."""
        if signal not in (None, 0, _signal.SIGCONT, "resume"):
            raise Unsupported(f"invalid signal {signal!r}: batch_go resumes with SIGCONT only")
        answer = self._call(self._tasks.GoBatch, pb.GoBatchRequest(name=batch))
        return self._wrap(convert.batch(answer))

    def batch_delete(self, batch: str) -> int:
        """Deletes a batch and its tasks (running ones are killed); returns how many."""
        answer = self._call(self._tasks.DeleteBatch, pb.DeleteBatchRequest(name=batch))
        return answer.deleted

    # -- workers -----------------------------------------------------------------------

    def workers(self):
        """Lists the workers scitqd knows."""
        answer = self._call(self._workers.ListWorkers, pb.ListWorkersRequest())
        return self._wrap([convert.worker(w) for w in answer.workers])

    def worker_update(
        self,
        id: Union[int, dict, Namespace],
        concurrency: Optional[int] = None,
        prefetch: Union[None, int, str] = None,
        batch: Optional[str] = None,
        status: Optional[str] = None,
        name: Optional[str] = None,
        hostname: Optional[str] = None,
        permanent: Optional[bool] = None,
        flavor: Optional[str] = None,
        task_properties: Optional[Any] = None,
    ):
        """Changes a worker's settings, pushed to its agent at once: concurrency, prefetch
        (a number fixes it; 'auto' lets the agent adapt it again), batch ('' for any),
        status 'paused' or 'running'. Returns the worker."""
        worker_id = id if isinstance(id, int) else (
            id["worker_id"] if isinstance(id, dict) else getattr(id, "worker_id"))
        _refuse("name", name, "a worker's name is its agent's --name")
        _refuse("hostname", hostname, "a worker's host is what its agent reports")
        _refuse("permanent", permanent, "a machine recruited by hand (worker_deploy) is never "
                "destroyed for idling, one a recruiter rule made is")
        _refuse("flavor", flavor, "a worker's flavor is the one it was recruited with")
        _refuse("task_properties", task_properties, "this server has no task properties")
        request = pb.UpdateWorkerRequest(id=worker_id)
        if concurrency is not None:
            request.concurrency = concurrency
        if prefetch == "auto":
            request.prefetch_auto = True
        elif isinstance(prefetch, int) and not isinstance(prefetch, bool) and prefetch >= 0:
            request.prefetch = prefetch
        elif prefetch is not None:
            raise Unsupported(f"invalid prefetch {prefetch!r}: use a number >= 0 or 'auto'")
        if batch is not None:
            request.batch = batch
        if status is not None:
            if status not in ("paused", "running"):
                raise Unsupported(f"invalid worker status {status!r}: use 'paused' or 'running'")
            request.paused = status == "paused"
        return self._wrap(convert.worker(self._call(self._workers.UpdateWorker, request)))

    def worker_drain(self, id: int):
        """The worker takes nothing new, finishes what it holds, then disconnects."""
        return self._wrap(convert.worker(self._call(self._workers.DrainWorker, pb.WorkerRef(id=id))))

    def worker_delete(self, id: int) -> Optional[str]:
        """Forgets a worker that is not connected and holds nothing; for a recruited worker,
        destroys its machine (the worker is forgotten once its agent is gone) and returns
        the machine's name."""
        answer = self._call(self._workers.DeleteWorker, pb.WorkerRef(id=id))
        return answer.destroying or None
