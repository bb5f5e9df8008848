"""Recruitment methods of `Server` (the original's `recruiter_create`, `worker_deploy`,
`flavors`...) over scitqd's RecruitService, kept apart from `lib.py` for size.

A recruiter rule here is what the original called a recruiter: while tasks of its batch
wait, scitqd creates machines (at most `maximum_workers`) on a provider configured in its
`[[provider]]` blocks, each running an agent for that batch, and destroys them once idle.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, Optional, Union

from . import _convert as convert
from .errors import FailedPrecondition, RecruitmentUnavailable, Unsupported
from .v1 import scitq_pb2 as pb
from .v1 import scitq_pb2_grpc as rpc

#: `auto:cpu>=8:ram>=32` (the original's protofilters): the minimums this server knows.
_MINIMUM = re.compile(r"^(cpu|ram|disk|gpu)>=(\d+)$")
_MINIMUM_FIELDS = {"cpu": "min_cpu", "ram": "min_mem_gib", "disk": "min_disk_gib", "gpu": "gpu"}


def flavor_minimums(flavor: str) -> Optional[dict[str, int]]:
    """None for a flavor name; for `auto` or `auto:cpu>=N:ram>=G:disk>=G:gpu>=N`
    (protofilters), the minimums as CreateRecruiterRequest fields."""
    if flavor != "auto" and not flavor.startswith("auto:"):
        return None
    minimums: dict[str, int] = {}
    for term in filter(None, flavor.split(":")[1:]):
        match = _MINIMUM.match(term.replace(" ", ""))
        if not match:
            raise Unsupported(
                f"flavor {flavor!r}: {term!r} is not supported: this server filters flavors "
                f"on cpu>=N, ram>=GiB, disk>=GiB and gpu>=N only"
            )
        minimums[_MINIMUM_FIELDS[match.group(1)]] = int(match.group(2))
    return minimums


def rounds_of(concurrency: int, tasks_per_worker: Optional[int], rounds: Optional[int]) -> int:
    """The rule's rounds from the original's `tasks_per_worker` (= concurrency × rounds)
    or `rounds`; 1 when neither is given."""
    if tasks_per_worker is not None and rounds is not None:
        if tasks_per_worker != concurrency * rounds:
            raise Unsupported(
                f"tasks_per_worker={tasks_per_worker} and rounds={rounds} disagree: "
                f"tasks_per_worker must be concurrency ({concurrency}) × rounds"
            )
        return rounds
    if tasks_per_worker is not None:
        if tasks_per_worker < 1 or tasks_per_worker % concurrency:
            raise Unsupported(
                f"tasks_per_worker={tasks_per_worker} must be a multiple of concurrency "
                f"({concurrency}): this server recruits a machine per `rounds` rounds of "
                f"`concurrency` tasks"
            )
        return tasks_per_worker // concurrency
    return 1 if rounds is None else rounds


def positive(argument: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Unsupported(f"{argument}={value!r} must be a whole number of at least 1")
    return value


class Recruitment:
    """The recruitment methods of `Server` (mixed into it)."""

    # Provided by `Server`.
    _call: Any
    _wrap: Any
    _channel: Any

    def _recruit_call(self, method: str, request: Any) -> Any:
        """A RecruitService call; a scitqd without providers raises `RecruitmentUnavailable`."""
        stub = rpc.RecruitServiceStub(self._channel)
        try:
            return self._call(getattr(stub, method), request)
        except FailedPrecondition as e:
            if "[[provider]]" in e.message:
                raise RecruitmentUnavailable(e.message, e.code) from None
            raise

    def recruiter_create(
        self,
        batch: str,
        rank: Optional[int] = None,
        tasks_per_worker: Optional[int] = None,
        flavor: Optional[str] = None,
        concurrency: Optional[int] = None,
        region: Optional[str] = None,
        provider: Optional[str] = None,
        prefetch: Optional[int] = None,
        minimum_tasks: Optional[int] = None,
        maximum_workers: Optional[int] = None,
        rounds: Optional[int] = None,
        idle_timeout: Optional[int] = None,
    ):
        """Adds a recruiter rule and returns it: while tasks of `batch` wait, scitqd
        recruits machines on `provider` (in `region`, default its first) for the batch,
        one per `tasks_per_worker` waiting tasks (or `concurrency` × `rounds`), at most
        `maximum_workers`, and destroys them after `idle_timeout` seconds idle (default
        300).

        - flavor: a flavor name, or `auto:cpu>=N:ram>=GiB:disk>=GiB:gpu>=N` for the
          cheapest flavor with those minimums (`auto` alone: the cheapest).
        - concurrency, prefetch: the recruited agents' settings (no prefetch: they adapt it).
        - rank: rules here have no rank; `rank=1` (the original's usual value) replaces the
          batch's existing rules, as re-creating the original's rank 1 updated it.
        - minimum_tasks is not supported (a rule recruits as soon as a task waits).
        """
        if rank not in (None, 1):
            raise Unsupported(f"rank={rank!r} is not supported: rules here have no rank; "
                              f"give several rules of one batch without a rank")
        if minimum_tasks not in (None, 0):
            raise Unsupported(f"minimum_tasks={minimum_tasks!r} is not supported: a rule "
                              f"recruits as soon as a task of its batch waits")
        if not provider:
            raise Unsupported("provider is needed: this server recruits on a provider of its "
                              "[[provider]] config (agents started by hand serve every batch)")
        if maximum_workers is None:
            raise Unsupported("maximum_workers is needed: it caps how many machines the rule "
                              "may recruit")
        concurrency = positive("concurrency", 1 if concurrency is None else concurrency)
        request = pb.CreateRecruiterRequest(
            batch=batch,
            provider=provider,
            region=region or "",
            max_workers=positive("maximum_workers", maximum_workers),
            rounds=positive("rounds", rounds_of(concurrency, tasks_per_worker, rounds)),
            concurrency=concurrency,
            idle_timeout_s=0 if idle_timeout is None else positive("idle_timeout", idle_timeout),
        )
        minimums = flavor_minimums(flavor or "auto")
        if minimums is None:
            request.flavor = str(flavor)
        else:
            for field, value in minimums.items():
                setattr(request, field, value)
        if prefetch is not None:
            request.prefetch = prefetch
        replaced = self._rules(batch) if rank == 1 else []
        created = self._recruit_call("CreateRecruiter", request)
        for old in replaced:
            self._recruit_call("DeleteRecruiter", pb.RecruiterRef(id=old.id))
        return self._wrap(convert.recruiter(created))

    def _rules(self, batch: Optional[str] = None) -> list:
        answer = self._recruit_call("ListRecruiters", pb.ListRecruitersRequest())
        return [r for r in answer.recruiters if batch is None or r.batch == batch]

    def recruiters(self, batch: Optional[str] = None):
        """Lists the recruiter rules (those of `batch` only, when given), with the machines
        each has now and, for a rule that paused itself, why."""
        return self._wrap([convert.recruiter(r) for r in self._rules(batch)])

    def recruiter_delete(self, batch: Union[str, int], rank: Optional[int] = None) -> int:
        """Deletes the rules of a batch (or the rule with that id, given an int); returns
        how many. Their machines are destroyed once idle."""
        if rank not in (None, 1):
            raise Unsupported(f"rank={rank!r} is not supported: rules here have no rank")
        if isinstance(batch, int) and not isinstance(batch, bool):
            ids = [batch]
        else:
            ids = [r.id for r in self._rules(batch)]
        for rule in ids:
            self._recruit_call("DeleteRecruiter", pb.RecruiterRef(id=rule))
        return len(ids)

    def recruiter_pause(self, id: int):
        """Stops a rule from recruiting (its machines stay)."""
        return self._wrap(convert.recruiter(
            self._recruit_call("PauseRecruiter", pb.RecruiterRef(id=id))))

    def recruiter_resume(self, id: int):
        """Lets a paused rule recruit again (one that paused itself too), its failures
        forgotten."""
        return self._wrap(convert.recruiter(
            self._recruit_call("ResumeRecruiter", pb.RecruiterRef(id=id))))

    def worker_deploy(
        self,
        number: int,
        batch: Optional[str],
        region: Optional[str],
        flavor: str,
        concurrency: Optional[int],
        provider: Optional[str],
        prefetch: Optional[int] = None,
    ):
        """Recruits `number` machines by hand on `provider` (in `region`, default its
        first), each an agent for `batch` (None: any) with `concurrency` (None: the
        flavor's cpus) and `prefetch` (None: it adapts). `flavor` is a name or
        `auto:cpu>=N:...` (the cheapest match). They are never destroyed for idling:
        `worker_delete` does it. Returns the machines (their `name` is their worker's)."""
        if not provider:
            raise Unsupported("provider is needed: this server deploys on a provider of its "
                              "[[provider]] config")
        if flavor_minimums(flavor) is not None:
            found = self._flavor_list(provider, flavor)
            if not found:
                raise Unsupported(f"no flavor of provider {provider!r} matches {flavor!r}")
            flavor = found[0].name
        request = pb.DeployWorkersRequest(
            provider=provider,
            flavor=flavor,
            region=region or "",
            count=positive("number", int(number)),
            batch=batch or "",
            concurrency=0 if concurrency is None else positive("concurrency", concurrency),
        )
        if prefetch is not None:
            request.prefetch = prefetch
        answer = self._recruit_call("DeployWorkers", request)
        return self._wrap([convert.machine(m) for m in answer.machines])

    def _flavor_list(self, provider: Optional[str], protofilter: Optional[str],
                     **minimums: int) -> list:
        request = pb.ListFlavorsRequest(provider=provider or "", **minimums)
        for field, value in (flavor_minimums(protofilter or "auto") or {}).items():
            setattr(request, field, max(value, getattr(request, field)))
        answer = self._recruit_call("ListFlavors", request)
        for error in answer.errors:
            print(f"scitq: flavors: provider unreachable: {error}", file=sys.stderr)
        return list(answer.flavors)

    def flavors(
        self,
        min_cpu: int = 0,
        min_ram: int = 0,
        min_disk: int = 0,
        max_eviction: Optional[int] = None,
        limit: Optional[int] = None,
        provider: Optional[str] = None,
        region: Optional[str] = None,
        protofilters: Optional[str] = None,
        min_gpu: int = 0,
    ):
        """Flavors of the configured providers (or of `provider`), cheapest first, with at
        least `min_cpu` cpus, `min_ram` GiB of memory, `min_disk` GiB of disk and
        `min_gpu` GPUs (or `protofilters` such as `cpu>=8:ram>=32`); at most `limit`.
        A provider that cannot be reached is said on stderr."""
        if max_eviction is not None:
            raise Unsupported(f"max_eviction={max_eviction!r} is not supported: this server "
                              f"knows no eviction rates")
        if region is not None:
            raise Unsupported(f"region={region!r} is not supported: flavors are listed per "
                              f"provider, for all its regions")
        if protofilters and not protofilters.startswith("auto"):
            protofilters = f"auto:{protofilters}"
        found = self._flavor_list(provider, protofilters, min_cpu=min_cpu,
                                  min_mem_gib=math.ceil(min_ram), min_disk_gib=min_disk,
                                  gpu=min_gpu)
        if limit is not None:
            found = found[:limit]
        return self._wrap([convert.flavor(f) for f in found])

    def jobs(self, limit: int = 100):
        """The provisioning jobs (machine creations and destructions), newest first, with
        their status, attempts, error class and log."""
        answer = self._recruit_call("ListJobs", pb.ListJobsRequest(limit=limit))
        return self._wrap([convert.job(j) for j in answer.jobs])
