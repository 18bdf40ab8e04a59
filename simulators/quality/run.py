"""Run cases through the exact core (`replay`, i.e. `run_batch`) and judge them, over processes."""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Final

from nabij.contract import AlarmSignal
from nabij.settings import ProximitySettings, Settings
from services.replay.timeline import replay
from simulators.quality.case import Case, build
from simulators.quality.families import case_spec, family_indices
from simulators.quality.judge import CaseScore, judge

TAIL_S: Final = 5.0
CHUNK: Final = 16


@dataclass(frozen=True, slots=True)
class Job:
    index: int
    seed: int
    proximity: ProximitySettings


def core_signals(case: Case) -> list[AlarmSignal]:
    """Every signal the core raises for the case's messages, in order."""
    lines = replay(case.config, case.records, tail_s=TAIL_S).lines
    return [line.signal for line in lines if line.signal is not None]


def run_case(job: Job) -> CaseScore:
    case = build(case_spec(job.index, job.seed), Settings(proximity=job.proximity))
    return judge(case.spec, case.truth, core_signals(case), job.proximity, case.thrown)


def run_cases(
    count: int,
    seed: int,
    *,
    processes: int = 2,
    proximity: ProximitySettings | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    families: Collection[str] | None = None,
) -> list[CaseScore]:
    """Cases 0..count-1 of `seed`, in index order whatever the number of processes; with
    `families`, only those families' cases among them (the same cases as in the whole run)."""
    indices = range(count) if families is None else family_indices(count, families)
    jobs = [Job(i, seed, proximity or ProximitySettings()) for i in indices]
    count = len(jobs)
    started = time.monotonic()
    scores: list[CaseScore] = []
    for done, score in enumerate(_map(jobs, processes), start=1):
        scores.append(score)
        if progress is not None and (done % 250 == 0 or done == count):
            progress(done, count, time.monotonic() - started)
    return scores


def _map(jobs: list[Job], processes: int) -> Iterator[CaseScore]:
    if processes <= 1:
        yield from map(run_case, jobs)
        return
    # spawn: a fresh interpreter per worker, safe whatever threads the parent runs (pytest).
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap(run_case, jobs, chunksize=CHUNK)


def print_progress(done: int, total: int, elapsed_s: float) -> None:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 else 0.0
    print(
        f"quality: {done}/{total} cases, {rate:.1f}/s, ~{left:.0f} s left",
        file=sys.stderr,
        flush=True,
    )
