"""Waiting for tasks: `Server.join` and the loop `Workflow.run` shares with it.

The wait survives scitqd restarts and network breaks: a poll that cannot reach scitqd is
said once on stderr and tried again, never raised to the caller.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Optional

from . import _convert as convert
from .errors import FailedPrecondition, JoinError, NotFound, Unavailable

if TYPE_CHECKING:
    from .lib import Server

#: Polling starts fast (short tasks end quickly) and slows down while nothing changes.
FIRST_INTERVAL = 0.2
MAX_INTERVAL = 5.0
#: Deadline of one poll; past it the poll counts as "scitqd unreachable" and is retried.
POLL_TIMEOUT = 10.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Poller:
    """Reads the status of a set of tasks, waiting out outages of scitqd."""

    def __init__(self, server: "Server", ids: list[int]):
        self.server = server
        self.ids = ids
        self.unreachable_since: Optional[float] = None

    def poll(self) -> dict[int, tuple[str, Optional[int], Optional[str]]]:
        """Each task's (status, latest execution id, batch), retrying until scitqd answers."""
        interval = FIRST_INTERVAL
        while True:
            try:
                found = self.server._list_tasks(self.ids, timeout=POLL_TIMEOUT)
            except Unavailable as e:
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    _say(f"scitq: cannot reach scitqd ({e.message}); waiting for it")
                time.sleep(interval)
                interval = min(interval * 2, MAX_INTERVAL)
                continue
            if self.unreachable_since is not None:
                away = time.monotonic() - self.unreachable_since
                _say(f"scitq: scitqd is back after {away:.0f}s")
                self.unreachable_since = None
            return {
                t.id: (
                    convert.task_status(t.status),
                    t.execution_id if t.HasField("execution_id") else None,
                    t.spec.batch or "Default",
                )
                for t in found
            }


class _Progress:
    """A tqdm bar on a terminal, else one line on stderr each time the counts change."""

    def __init__(self, total: int, enabled: Optional[bool]):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        self.last = ""
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="task", file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, counts: Counter) -> None:
        summary = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(summary, refresh=False)
            self.bar.refresh()
        elif summary != self.last:
            _say(f"scitq: {summary}")
        self.last = summary

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def join_tasks(server: "Server", ids: list[int], retry: int, check: bool,
               progress: Optional[bool]) -> dict[str, int]:
    if not ids:
        raise ValueError("join needs at least one task")
    unique = list(dict.fromkeys(ids))
    poller = Poller(server, unique)
    relaunched: dict[int, int] = {tid: 0 for tid in unique}
    # A relaunch whose answer was lost: the execution id it was sent against, so it is sent
    # again (not counted twice) if the task is still failed on that execution.
    unsent: dict[int, Optional[int]] = {}
    bar = _Progress(len(unique), progress)
    interval = FIRST_INTERVAL
    previous: Optional[Counter] = None
    try:
        while True:
            states = poller.poll()
            missing = [tid for tid in unique if tid not in states]
            if missing:
                raise NotFound(f"task {missing[0]} no longer exists (its batch was deleted?)",
                                         "NOT_FOUND")
            busy = False
            for tid in unique:
                status, execution, _ = states[tid]
                if status != "failed":
                    unsent.pop(tid, None)
                    continue
                resend = tid in unsent and unsent[tid] == execution
                if not resend and relaunched[tid] >= retry:
                    continue
                if not resend:
                    relaunched[tid] += 1
                    _say(f"scitq: relaunching failed task {tid} [{relaunched[tid]}/{retry}]")
                busy = True
                unsent[tid] = execution
                if _relaunch(server, tid):
                    unsent.pop(tid, None)
            counts = Counter(status for status, _, _ in states.values())
            done = sum(counts[s] for s in convert.FINAL_STATUSES)
            bar.update(done, counts)
            if not busy and done == len(unique):
                break
            interval = FIRST_INTERVAL if counts != previous else min(interval * 1.5, MAX_INTERVAL)
            previous = counts
            time.sleep(interval)
    finally:
        bar.close()
    failed = [tid for tid in unique if states[tid][0] != "succeeded"]
    result = {status: counts.get(status, 0) for status in convert.TASK_STATUSES}
    if check and failed:
        raise JoinError(
            f"{len(failed)} of {len(unique)} task(s) did not succeed: "
            + ", ".join(f"{tid} ({states[tid][0]})" for tid in failed[:10])
            + (" ..." if len(failed) > 10 else ""),
            failed,
        )
    return result


def _relaunch(server: "Server", task_id: int) -> bool:
    """Relaunches a failed task; False when scitqd could not be reached (try again later)."""
    try:
        server.task_relaunch(task_id)
    except Unavailable:
        return False
    except FailedPrecondition:
        # Someone (an operator, the server's own retry) relaunched it already.
        pass
    return True

