"""Public sequencing data: the runs of a project, from ENA, as `scitqctl samples` lists them.

    from scitq.bio.genetics import sra_get_samples
    for sample, runs in sra_get_samples('PRJEB46098').items():
        inputs = [run.uri for run in runs]   # run+fastq://ERR..., fetched by the agent

ENA's file report endpoint can be replaced with `SCITQ_ENA_URL` (as for scitqctl and the agent).
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

from ..errors import ScitqError

#: ENA's file report endpoint (the same default as scitqctl and the agent).
DEFAULT_ENA_URL = "https://www.ebi.ac.uk/ena/portal/api/filereport"
FIELDS = ("run_accession,sample_accession,secondary_sample_accession,library_layout,"
          "read_count,base_count,fastq_bytes")
_PROJECT = re.compile(r"(PRJEB|PRJNA|PRJDB|ERP|SRP|DRP)[0-9]+")
#: Seconds to wait for ENA's answer.
TIMEOUT = 120


class EnaError(ScitqError):
    """ENA could not list the runs of a project (bad accession, ENA error, no runs)."""


@dataclass(frozen=True)
class Run:
    """One sequencing run of a project."""

    #: Run accession (SRR, ERR or DRR...).
    run: str
    #: `run+fastq://RUN`, ready for `task_create(input=...)`.
    uri: str
    #: `PAIRED` or `SINGLE`, as ENA says.
    layout: str
    reads: Optional[int]
    bases: Optional[int]
    #: Size of each FASTQ file ENA holds for the run.
    fastq_bytes: list[int] = field(default_factory=list)
    #: The sample's archive accession (ERS..., SRS..., DRS...), empty when none.
    secondary_sample: str = ""

    @property
    def accession(self) -> str:
        return self.run

    def __str__(self) -> str:
        return self.uri


def sra_get_samples(project: str, ena_url: Optional[str] = None) -> dict[str, list[Run]]:
    """The runs of `project` (PRJEB, PRJNA, PRJDB, ERP, SRP or DRP accession) grouped by
    sample (BioSample accession), in ENA's order: `{sample: [run, ...]}`."""
    if not _PROJECT.fullmatch(project):
        raise EnaError(
            f'invalid project accession "{project}": expected PRJEB, PRJNA, PRJDB, ERP, SRP '
            f"or DRP and digits"
        )
    url = ena_url or os.environ.get("SCITQ_ENA_URL") or DEFAULT_ENA_URL
    query = urllib.parse.urlencode(
        {"accession": project, "result": "read_run", "fields": FIELDS, "format": "tsv", "limit": 0},
        safe=",",
    )
    try:
        with urllib.request.urlopen(f"{url}?{query}", timeout=TIMEOUT) as answer:
            body = answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        first = e.read().decode("utf-8", "replace").split("\n", 1)[0]
        raise EnaError(
            f"ENA project {project}: file report answered {e.code} {e.reason}: {first}"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise EnaError(f"ENA project {project}: file report request failed: {reason}") from None
    try:
        samples = parse_report(body)
    except ValueError as e:
        raise EnaError(f"ENA project {project}: {e}") from None
    if not samples:
        raise EnaError(f"ENA project {project}: no runs")
    return samples


def parse_report(body: str) -> dict[str, list[Run]]:
    """Parses the TSV file report (a header line, then one line per run)."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return {}
    header = [h.strip() for h in lines[0].split("\t")]

    def column(name: str) -> int:
        if name not in header:
            raise ValueError(f"file report has no {name} column")
        return header.index(name)

    cols = {name: column(name) for name in FIELDS.split(",")}
    samples: dict[str, list[Run]] = {}
    for line in lines[1:]:
        fields = line.split("\t")

        def get(name: str) -> str:
            i = cols[name]
            return fields[i].strip() if i < len(fields) else ""

        run = get("run_accession")
        if not run:
            continue

        def count(name: str) -> Optional[int]:
            text = get(name)
            if not text:
                return None
            if not text.isdigit():
                raise ValueError(f"run {run}: bad {name} {text!r}")
            return int(text)

        sizes = []
        for size in filter(None, get("fastq_bytes").split(";")):
            if not size.isdigit():
                raise ValueError(f"run {run}: bad fastq_bytes {size!r}")
            sizes.append(int(size))
        secondary = get("secondary_sample_accession")
        sample = get("sample_accession") or secondary or run
        samples.setdefault(sample, []).append(Run(
            run=run, uri=f"run+fastq://{run}", layout=get("library_layout"),
            reads=count("read_count"), bases=count("base_count"), fastq_bytes=sizes,
            secondary_sample=secondary,
        ))
    return samples
