"""Scores into tables (`docs/quality.md`) and plots (PNG with matplotlib, else text histograms)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulators.quality.judge import CaseScore, Outcome

RINGS = ("alarm", "pre_alert", "zone")
EDGE_FAMILY = "ring_edge"


@dataclass(slots=True)
class Row:
    cases: int = 0
    hours: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    false_alarms: int = 0
    unfounded: int = 0
    opens: int = 0
    flaps: int = 0

    @property
    def promised(self) -> int:
        return sum(o.promised for o in self.outcomes)

    @property
    def missed_promised(self) -> int:
        return sum(o.promised and not o.detected for o in self.outcomes)

    @property
    def missed_other(self) -> int:
        return sum(not o.promised and not o.detected for o in self.outcomes)

    def times(self) -> list[float]:
        return sorted(o.time_to_alarm_s for o in self.outcomes if o.time_to_alarm_s is not None)


def rows(scores: Sequence[CaseScore]) -> dict[tuple[str, str], Row]:
    """Per (family, ring); a case counts towards a ring only when it has that ring."""
    table: dict[tuple[str, str], Row] = defaultdict(Row)
    for score in scores:
        for ring in RINGS:
            mine = [o for o in score.outcomes if o.ring == ring]
            if ring not in score.opens and not mine:
                continue
            row = table[(score.family, ring)]
            row.cases += 1
            row.hours += score.hours
            row.outcomes.extend(mine)
            row.false_alarms += score.false_alarms.get(ring, 0)
            row.unfounded += score.unfounded.get(ring, 0)
            row.opens += score.opens.get(ring, 0)
        table[(score.family, "*")].flaps += score.flaps
    return table


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def family_table(scores: Sequence[CaseScore]) -> list[str]:
    table = rows(scores)
    out = [
        "| family | ring | cases | pair-hours | true breaches | promised | missed (promised) "
        "| missed (other) | false alarms / 1,000 pair-h (unfounded) "
        "| time to alarm p50 / p95 / p99 s | flaps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    families = sorted({family for family, _ in table})
    for family in families:
        for ring in RINGS:
            row = table.get((family, ring))
            if row is None or not (row.outcomes or row.opens):
                continue
            t = row.times()
            rate = 1000 * row.false_alarms / row.hours if row.hours else 0.0
            unfounded = 1000 * row.unfounded / row.hours if row.hours else 0.0
            flaps = table[(family, "*")].flaps if ring in {"alarm", "zone"} else ""
            out.append(
                f"| {family} | {ring} | {row.cases} | {row.hours:.0f} | {len(row.outcomes)} "
                f"| {row.promised} | {row.missed_promised} | {row.missed_other} "
                f"| {rate:.0f} ({unfounded:.0f}) "
                f"| {_fmt(percentile(t, 0.5))} / {_fmt(percentile(t, 0.95))} / "
                f"{_fmt(percentile(t, 0.99))} | {flaps} |"
            )
    return out


def misses_table(scores: Sequence[CaseScore]) -> list[str]:
    why: Counter[tuple[str, str, str]] = Counter()
    for score in scores:
        for o in score.outcomes:
            if not o.detected:
                why[(score.family, o.ring, o.why)] += 1
    out = ["| family | ring | rule that makes no promise | misses |", "|---|---|---|---:|"]
    out += [f"| {f} | {r} | {w} | {n} |" for (f, r, w), n in sorted(why.items())]
    return out if why else ["No misses."]


def edge_figures(scores: Sequence[CaseScore]) -> tuple[float, float, int]:
    """Ring-edge loitering: alarms per 30 minutes overall, the worst case's, and cases over 1."""
    edge = [s for s in scores if s.family == EDGE_FAMILY]
    if not edge:
        return 0.0, 0.0, 0
    per_half_hour = [s.opens.get("alarm", 0) / (s.hours * 2) for s in edge]
    total = sum(s.opens.get("alarm", 0) for s in edge) / sum(s.hours * 2 for s in edge)
    return total, max(per_half_hour), sum(rate > 1 for rate in per_half_hour)


def false_by_source(scores: Sequence[CaseScore]) -> dict[str, float]:
    """False alarms (all rings) per 1,000 pair-hours, by how positions were obtained."""
    hours: Counter[str] = Counter()
    false: Counter[str] = Counter()
    for score in scores:
        hours[score.source] += score.hours  # type: ignore[assignment]  # Counter of floats
        false[score.source] += sum(score.false_alarms.values())
    return {source: 1000 * false[source] / hours[source] for source in sorted(hours)}


def broken_promises(scores: Sequence[CaseScore]) -> list[str]:
    return [
        f"{s.case_id} ({s.family}, {o.ring})"
        for s in scores
        for o in s.outcomes
        if o.promised and not o.detected
    ]


def all_times(scores: Sequence[CaseScore], ring: str) -> list[float]:
    return sorted(
        o.time_to_alarm_s
        for s in scores
        for o in s.outcomes
        if o.ring == ring and o.time_to_alarm_s is not None
    )


def plots(scores: Sequence[CaseScore], img_dir: Path) -> list[str]:
    """PNG plots when matplotlib is there; else text histograms. Returns markdown lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _text_plots(scores)
    img_dir.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ring in RINGS:
        times = all_times(scores, ring)
        if times:
            left.hist(times, bins=60, range=(-120, 240), histtype="step", label=ring)
    left.set_xlabel("time to alarm from true entry (s)")
    left.set_ylabel("breaches")
    left.legend()
    rates = false_by_source(scores)
    right.bar(list(rates), list(rates.values()), color="tab:red")
    right.set_ylabel("false alarms per 1,000 pair-hours")
    right.set_xlabel("position source")
    fig.tight_layout()
    fig.savefig(img_dir / "quality.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return ["![Time to alarm by ring; false alarms by position source](img/quality.png)"]


def _text_plots(scores: Sequence[CaseScore]) -> list[str]:
    out = ["```", "time to alarm (alarm ring), 30 s bins"]
    counts = Counter(int(t // 30) * 30 for t in all_times(scores, "alarm"))
    top = max(counts.values(), default=1)
    out += [f"{b:>5} s {'#' * max(1, 50 * n // top)} {n}" for b, n in sorted(counts.items())]
    out += ["", "false alarms per 1,000 pair-hours by position source"]
    out += [f"{s:>10} {r:.0f}" for s, r in false_by_source(scores).items()]
    return [*out, "```"]
