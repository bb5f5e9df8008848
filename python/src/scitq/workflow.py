"""Workflows as in the original scitq: steps are tasks with dependencies.

    from scitq.workflow import Workflow
    wf = Workflow('demo', shell=True)
    for sample in ['a', 'b']:
        step1 = wf.step(batch='count', command=f'echo {sample} > /output/{sample}.txt',
                        output=f's3://bucket/demo/{sample}/')
    total = wf.step(batch='total', command='cat /input/*', input=step1.gather('output'),
                    required_tasks=step1.gather())
    wf.run()
    wf.clean()

A step is a task in batch `<workflow>.<batch>`; `required_tasks` makes it wait for others
(a failed one cancels its dependants until it is relaunched). `Step.gather()` gives every
step of the same batch (for fan-in), `gather('output')` their output URIs. `wf.run()` shows
a per-step summary and returns when nothing is left to run; `wf.clean()` saves the logs and
deletes what succeeded. `Workflow(..., resume=True)` (the original's `use_cache=True`) keeps
instead of creating again a step whose identical task already succeeded, with unchanged
inputs and its outputs still there (see `Server.task_create`'s `resume`).

Recruitment as in the original: a step batch with a `provider` (given to the step or the
workflow) gets a recruiter rule: while its tasks wait, scitqd recruits machines of `flavor`
(a name, or `auto:cpu>=N:ram>=GiB...` for the cheapest match) in `region`, each an agent for
that batch with `concurrency` (mandatory) and `prefetch`, one per `concurrency` × `rounds`
waiting tasks (or `tasks_per_worker`), at most `maximum_workers` (`max_step_workers` on the
workflow), and destroys them `idle_timeout` seconds after they have nothing left to do.
A provider needs `max_workflow_workers`, a cap on the machines of the whole workflow: this
server's rules are per batch, so `recruit()` (which `run()` calls first) shares the cap out
between the recruiting steps before it creates their rules, each step getting what it can
use (its task count over its tasks per machine, at most its maximum), in turns of one.
`clean()` deletes the rules of the batches it deletes. Without a provider, recruitment
arguments are refused: this server does not recycle agents started by hand for a flavor
(they serve every batch already).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from . import _convert as convert
from ._join import FIRST_INTERVAL, MAX_INTERVAL, Poller
from ._recruit import flavor_minimums, positive, rounds_of
from .errors import Unsupported, WorkflowError, WorkflowException
from .lib import Server, task_id_of

__all__ = ["Step", "Workflow", "WorkflowError", "WorkflowException"]

_NO_PROVIDER = (
    "this server recruits on a provider of its [[provider]] config only (agents started by "
    "hand serve every batch already): give provider, or leave the recruitment arguments out"
)
#: Statuses shown by `run()`, in the order of a task's life.
_SHOWN = ("waiting", "pending", "assigned", "accepted", "running", "uploading", "paused",
          "failed", "canceled", "succeeded")


def _refuse_without_provider(**arguments: Any) -> None:
    for argument, value in arguments.items():
        if value is not None:
            raise Unsupported(f"{argument}={value!r} without provider: {_NO_PROVIDER}")


#: The recruitment settings a step batch shares (its rule's), by argument name.
_BATCH_SETTINGS = ("provider", "region", "flavor", "concurrency", "prefetch", "rounds",
                   "tasks_per_worker", "maximum_workers")


def share_out(cap: int, wanted: dict[str, int]) -> dict[str, int]:
    """Machines for each step out of `cap`: one each in turns, while a step wants more.
    Raises when the cap cannot give every step one."""
    if len(wanted) > cap:
        raise WorkflowError(
            f"max_workflow_workers={cap} cannot give each of the {len(wanted)} recruiting "
            f"steps left ({', '.join(wanted)}) one machine: raise it"
        )
    shares = dict.fromkeys(wanted, 0)
    left = cap
    while left > 0:
        hungry = [step for step, want in wanted.items() if shares[step] < max(want, 1)]
        if not hungry:
            break
        for step in hungry[:left]:
            shares[step] += 1
        left -= min(len(hungry), left)
    return shares


class Step:
    """One task of a workflow. Its task's fields are attributes (`task_id`, `name`,
    `command`, `batch`, `output`, `status`...), as of its creation or last `refresh()`."""

    def __init__(self, workflow: "Workflow", task: dict, short_batch: str):
        self._workflow = workflow
        self._short_batch = short_batch
        self._task = task
        self.__dict__.update(task)

    def __repr__(self) -> str:
        return f"Step(task_id={self.task_id}, name={self.name!r}, batch={self.batch!r})"

    @property
    def server(self) -> Server:
        return self._workflow.server

    def refresh(self) -> "Step":
        """Reads the task again (status, command...)."""
        self._task = self.server._wrap_dict(self.server.task_get(self.task_id))
        self.__dict__.update(self._task)
        return self

    def gather(self, attribute: str = "step") -> list:
        """Every step of this step's batch so far (for fan-in `required_tasks`), or with
        'output' their output URIs, or with 'output/PATH' those URIs followed by PATH."""
        steps = self._workflow._by_batch[self._short_batch]
        if attribute == "step":
            return list(steps)
        if attribute == "output":
            return [s.output for s in steps]
        if attribute.startswith("output/"):
            return [(s.output or "") + attribute[len("output/"):] for s in steps]
        raise WorkflowError(f"invalid gather attribute {attribute!r}: use 'step', 'output' "
                            f"or 'output/PATH'")

    def get_output(self) -> Optional[str]:
        """The stdout of the task's last execution (None when it never ran)."""
        return self.server.task_output(self.task_id)

    def get_error(self) -> Optional[str]:
        """The stderr of the task's last execution (None when it never ran)."""
        return self.server.task_output(self.task_id, error=True)


class Workflow:
    """A set of steps run by scitq, in batches named `<name>.<batch>`."""

    def __init__(
        self,
        name: str,
        max_step_workers: Optional[int] = None,
        server: Union[None, str, Server] = None,
        provider: Optional[str] = None,
        region: Optional[str] = None,
        flavor: Optional[str] = None,
        shell: Union[bool, str] = False,
        max_workflow_workers: Optional[int] = None,
        retry: Optional[int] = None,
        rounds: Optional[int] = None,
        prefetch: Optional[int] = None,
        container: Optional[str] = None,
        container_options: Union[None, str, list[str]] = None,
        download_timeout: Optional[int] = None,
        run_timeout: Optional[int] = None,
        use_cache: bool = False,
        base_storage: Optional[str] = None,
        debug: bool = False,
        token: Optional[str] = None,
        resume: bool = False,
        concurrency: Optional[int] = None,
        idle_timeout: Optional[int] = None,
    ):
        if not name or "." in name:
            raise WorkflowError(f"invalid workflow name {name!r}: it must be non-empty, without '.'")
        if provider and not max_workflow_workers:
            raise WorkflowError(
                f"provider={provider!r} needs max_workflow_workers: it caps how many machines "
                f"(and how much money) the workflow may use"
            )
        if flavor:
            flavor_minimums(flavor)
        if download_timeout is not None:
            raise Unsupported(f"download_timeout={download_timeout!r} is not supported: "
                              f"this server has no download time limit")
        if debug:
            raise Unsupported("debug=True is not supported: run steps one by one with task_update")
        self.name = name
        #: Steps whose identical task already succeeded are kept, not run again (resume).
        self.resume = bool(resume or use_cache)
        self.server = server if isinstance(server, Server) else Server(server, token=token)
        self.shell = shell
        self.retry = retry
        self.container = container
        self.container_options = container_options
        self.run_timeout = run_timeout
        self.base_storage = str(base_storage) if base_storage else None
        self._steps: list[Step] = []
        self._by_batch: dict[str, list[Step]] = {}
        #: Defaults of the steps' recruitment settings.
        self._recruit_defaults = {"provider": provider, "region": region, "flavor": flavor,
                                  "concurrency": concurrency, "prefetch": prefetch,
                                  "rounds": rounds, "tasks_per_worker": None,
                                  "maximum_workers": max_step_workers}
        self.max_workflow_workers = max_workflow_workers
        self.idle_timeout = idle_timeout
        #: Recruitment settings of each recruiting step batch, from its first step.
        self._recruit_settings: dict[str, dict[str, Any]] = {}
        #: Machines given to each step batch whose rule exists.
        self._recruiting: dict[str, int] = {}

    def batch_name(self, batch: str) -> str:
        """The scitq batch of a step batch: `<workflow>.<batch>`."""
        return f"{self.name}.{batch}"

    def step(
        self,
        batch: str,
        command: str,
        concurrency: Optional[int] = None,
        prefetch: Optional[int] = None,
        provider: Optional[str] = None,
        region: Optional[str] = None,
        flavor: Optional[str] = None,
        name: Optional[str] = None,
        tasks_per_worker: Optional[int] = None,
        rounds: Optional[int] = None,
        shell: Union[None, bool, str] = None,
        maximum_workers: Optional[int] = None,
        input: Union[None, str, Iterable[Any]] = None,
        output: Optional[str] = None,
        resource: Union[None, str, Iterable[Any]] = None,
        rel_output: Optional[str] = None,
        required_tasks: Union[None, int, Step, dict, Iterable[Any]] = None,
        container: Optional[str] = None,
        container_options: Union[None, str, list[str]] = None,
        retry: Optional[int] = None,
        download_timeout: Optional[int] = None,
        run_timeout: Optional[int] = None,
        use_cache: Optional[bool] = None,
        priority: Optional[int] = None,
    ) -> Step:
        """Adds a step (a task in batch `<workflow>.<batch>`) and returns it. Unset
        arguments take the workflow's value (shell, retry, container, ...)."""
        if not batch or "." in batch:
            raise WorkflowError(f"invalid step batch {batch!r}: it must be non-empty, without '.'")
        self._batch_settings(batch, {
            "provider": provider, "region": region, "flavor": flavor,
            "concurrency": concurrency, "prefetch": prefetch, "rounds": rounds,
            "tasks_per_worker": tasks_per_worker, "maximum_workers": maximum_workers})
        if isinstance(output, (list, tuple)):
            raise WorkflowError(f"step {name or batch}: output must be one URI, not a list")
        if rel_output and output:
            raise WorkflowError(f"step {name or batch}: give output or rel_output, not both")
        if rel_output:
            if not self.base_storage:
                raise WorkflowError(f"step {name or batch}: rel_output needs the workflow's "
                                    f"base_storage")
            output = self.base_storage.rstrip("/") + "/" + rel_output.lstrip("/")
        if output and not str(output).endswith("/"):
            output = f"{output}/"
        task = self.server.task_create(
            command=command,
            name=name if name is not None else f"{batch} #{len(self._by_batch.get(batch, [])) + 1}",
            batch=self.batch_name(batch),
            input=input,
            output=output,
            resource=resource,
            container=container if container is not None else self.container,
            container_options=(container_options if container_options is not None
                               else self.container_options),
            shell=shell if shell is not None else self.shell,
            retry=retry if retry is not None else self.retry,
            run_timeout=run_timeout if run_timeout is not None else self.run_timeout,
            download_timeout=download_timeout,
            resume=self.resume if use_cache is None else use_cache,
            priority=priority,
            required_task_ids=_required(required_tasks),
        )
        step = Step(self, self.server._wrap_dict(task), batch)
        self._by_batch.setdefault(batch, []).append(step)
        self._steps.append(step)
        return step

    def _batch_settings(self, batch: str, given: dict[str, Any]) -> None:
        """Checks a step's recruitment arguments: the first step of a batch sets its rule's
        settings (with the workflow's defaults), a later one may only repeat them."""
        known = self._recruit_settings.get(batch)
        if known is not None or batch in self._by_batch:
            for argument, value in given.items():
                before = (known or {}).get(argument)
                if argument == "tasks_per_worker" and known:
                    before = known["concurrency"] * known["rounds"]
                if value is not None and value != before:
                    raise WorkflowError(
                        f"{argument}={value!r}: the steps of batch {batch} share their "
                        f"recruitment, and its first step has {argument}={before!r}")
            return
        settings = {argument: given[argument] if given[argument] is not None
                    else self._recruit_defaults[argument] for argument in _BATCH_SETTINGS}
        if not settings["provider"]:
            _refuse_without_provider(**{a: v for a, v in settings.items() if a != "provider"})
            return
        if not self.max_workflow_workers:
            raise WorkflowError(f"provider={settings['provider']!r} needs the workflow's "
                                f"max_workflow_workers: it caps how many machines (and how "
                                f"much money) the workflow may use")
        if settings["concurrency"] is None:
            raise WorkflowError(f"step batch {batch}: recruiting needs concurrency (on the step "
                                f"or the workflow): how many tasks a machine runs at once")
        positive("concurrency", settings["concurrency"])
        settings["flavor"] = settings["flavor"] or "auto"
        flavor_minimums(settings["flavor"])
        settings["rounds"] = rounds_of(settings["concurrency"], settings.pop("tasks_per_worker"),
                                       settings["rounds"])
        settings["tasks_per_worker"] = None
        self._recruit_settings[batch] = settings

    def recruit(self) -> dict[str, int]:
        """Creates the recruiter rules of the recruiting step batches that have none yet
        (`run()` calls it first), sharing `max_workflow_workers` out between them; a rule
        for such a batch left on the server by an earlier run of the workflow is replaced.
        Returns the machines each recruiting step batch may have."""
        new = {batch: settings for batch, settings in self._recruit_settings.items()
               if batch not in self._recruiting and batch in self._by_batch}
        if not new:
            return dict(self._recruiting)
        wanted = {}
        for batch, settings in new.items():
            per_machine = settings["concurrency"] * settings["rounds"]
            need = math.ceil(len(self._by_batch[batch]) / per_machine)
            wanted[batch] = min(need, settings["maximum_workers"] or need)
        cap = int(self.max_workflow_workers or 0) - sum(self._recruiting.values())
        shares = share_out(cap, wanted)
        for batch, settings in new.items():
            self.server.recruiter_create(
                self.batch_name(batch), rank=1, flavor=settings["flavor"],
                concurrency=settings["concurrency"], region=settings["region"],
                provider=settings["provider"], prefetch=settings["prefetch"],
                maximum_workers=shares[batch], rounds=settings["rounds"],
                idle_timeout=self.idle_timeout)
            self._recruiting[batch] = shares[batch]
        return dict(self._recruiting)

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    def counts(self) -> dict[str, dict[str, int]]:
        """Task counts by status for each step batch (reconnecting if scitqd is away)."""
        states = Poller(self.server, [s.task_id for s in self._steps]).poll()
        return self._counts(states)

    def _counts(self, states: dict) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for batch, steps in self._by_batch.items():
            counter = Counter(states[s.task_id][0] for s in steps if s.task_id in states)
            result[batch] = {status: counter.get(status, 0) for status in _SHOWN}
        return result

    def run(self, refresh: Optional[float] = None, progress: Optional[bool] = None
            ) -> dict[str, dict[str, int]]:
        """Waits until no step is left to run (each succeeded, or failed or canceled for
        good), showing task counts by status for each step; returns those counts. A scitqd
        restart or network break does not interrupt it. `refresh` caps the seconds between
        two looks (default: fast at first, up to 5 s)."""
        if not self._steps:
            return {}
        self.recruit()
        live = sys.stderr.isatty() if progress is None else progress
        poller = Poller(self.server, [s.task_id for s in self._steps])
        table = _Table(self.name, live)
        interval = FIRST_INTERVAL
        cap = MAX_INTERVAL if refresh is None else refresh
        previous = None
        while True:
            counts = self._counts(poller.poll())
            table.show(counts)
            left = sum(n for c in counts.values() for status, n in c.items()
                       if status not in convert.FINAL_STATUSES)
            if left == 0:
                return counts
            interval = FIRST_INTERVAL if counts != previous else min(interval * 1.5, cap)
            previous = counts
            time.sleep(min(interval, cap))

    def pause(self, suspend: bool = False) -> None:
        """Stops every step batch (with `suspend`, freezes their running tasks too)."""
        for batch in self._by_batch:
            self.server.batch_stop(self.batch_name(batch), signal="suspend" if suspend else None)

    def unpause(self) -> None:
        """Lets the step batches run again."""
        for batch in self._by_batch:
            self.server.batch_go(self.batch_name(batch))

    def clean(self, force: bool = False, download_logs: bool = True,
              log_destination: Union[None, str, os.PathLike] = "") -> dict[str, int]:
        """Saves each task's last stdout and stderr under `log_destination` (default: a
        folder named after the workflow; None saves nothing) as `<task>_output.log` and
        `<task>_error.log`, then deletes the step batches whose tasks all succeeded (all
        of them with `force`). A batch with a task that did not succeed is kept, whole:
        this server deletes tasks by batch. Returns the tasks deleted per step batch;
        the steps deleted are forgotten by the workflow."""
        if download_logs and log_destination is not None:
            self._save_logs(Path(log_destination or self.name))
        deleted: dict[str, int] = {}
        for batch in self._by_batch:
            full = self.batch_name(batch)
            statuses = [t["status"] for t in map(self.server._wrap_dict,
                                                 self.server.tasks(batch=full))]
            unfinished = [s for s in statuses if s != "succeeded"]
            if unfinished and not force:
                print(f"scitq: kept batch {full}: {len(unfinished)} of {len(statuses)} task(s) "
                      f"did not succeed", file=sys.stderr)
                continue
            deleted[batch] = self.server.batch_delete(full)
            if batch in self._recruit_settings:
                self.server.recruiter_delete(full)
        # Deleted steps are gone from the server: forget them, so a later run() or clean()
        # looks only at what is left.
        for batch in deleted:
            self._recruit_settings.pop(batch, None)
            self._recruiting.pop(batch, None)
            gone = {s.task_id for s in self._by_batch.pop(batch)}
            self._steps = [s for s in self._steps if s.task_id not in gone]
        return deleted

    def _save_logs(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for step in self._steps:
            executions = self.server.executions(task_id=step.task_id, latest=True)
            if not executions:
                continue
            last = self.server._wrap_dict(executions[0])
            base = folder / _file_name(step.name or f"task_{step.task_id}")
            for suffix, text in (("_output.log", last["output"]), ("_error.log", last["error"])):
                if text:
                    Path(f"{base}{suffix}").write_text(text)


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.#" else "_" for c in name).replace("#", "")


def _required(required: Union[None, int, Step, dict, Iterable[Any]]) -> Optional[list[int]]:
    if required is None:
        return None
    if isinstance(required, (int, Step, dict)) or hasattr(required, "task_id"):
        return [task_id_of(required)]
    return [task_id_of(t) for t in required]


class _Table:
    """The per-step summary: redrawn in place on a terminal, else a line per change."""

    def __init__(self, name: str, live: bool):
        self.name = name
        self.live = live
        self.lines = 0
        self.last: Optional[dict] = None

    def show(self, counts: dict[str, dict[str, int]]) -> None:
        if counts == self.last:
            return
        self.last = counts
        width = max([len(self.name)] + [len(b) for b in counts]) + 2
        header = self.name.ljust(width) + "".join(s[:9].rjust(10) for s in _SHOWN)
        rows = [b.ljust(width) + "".join(str(c[s] or "").rjust(10) for s in _SHOWN)
                for b, c in counts.items()]
        if self.live:
            if self.lines:
                sys.stderr.write(f"\x1b[{self.lines}F\x1b[J")
            sys.stderr.write("\n".join([header] + rows) + "\n")
            sys.stderr.flush()
            self.lines = len(rows) + 1
        else:
            summary = "; ".join(
                f"{b}: " + ", ".join(f"{s} {n}" for s, n in c.items() if n)
                for b, c in counts.items())
            print(f"scitq: {self.name}: {summary}", file=sys.stderr, flush=True)
