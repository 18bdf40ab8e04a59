"""The judge: a case's alarm signals against its ground truth.

Pure. Alarms are matched to true breaches by kind (and zone name) and time only, never by alarm
key, so a change of key format changes no score.

- A true breach of a ring starting at `s` is **detected** when an alarm of its kind opens within
  `[s - early_s, deadline]` or is already open at `s`. `deadline = s + enter_dwell + 2 x the
  slower device's fix interval + SETTLE_S`; when a device is out of coverage during the first
  dwell + 2 intervals of it, the same counted from the gap's end (the backlog arrives then).
  When that gap lasts past the end of the case, the backlog is never uploaded in it: no promise.
  Otherwise it is **missed** (`late` when an alarm opens after the deadline while the breach lasts).
- A breach is **promised** when it lasts at least enter dwell + 2 fix intervals and every fix of
  both devices (the offender's only, for a zone) over that stretch is GNSS with `acc` at most
  `GNSS_GRADE_M`. The rules promise to detect every promised breach. A fix thrown off the truth
  (a multipath jump, `Case.thrown`) is no GNSS-grade fix whatever its `acc`: each one within
  the stretch lengthens it, and the deadline, by one fix interval of its device.
- An alarm that opens with no true breach of its kind overlapping `[t - early_s, t + tolerance]`
  is a **false alarm**. `early_s = PREDICT_S + one fix interval`: the time-to-contact pre-alert
  and the accuracy rule's benefit of the doubt may open before the true entry.
  It is **unfounded** when the truth was not within `NEAR_M` (50 m) beyond the ring then either
  (the accuracy rule gives a pair measured within its uncertainty of the ring the benefit of the
  doubt, so an alarm at the edge is that rule working).
- A **flap** is an open that follows a clear of the same kind within `FLAP_S`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from nabij.contract import AlarmSignal
from nabij.settings import ProximitySettings
from simulators.quality.case import START_MS, CaseSpec, DeviceSpec, Ring, Window

SETTLE_S: Final = 5.0
"""Delivery latency and the tick: added to every deadline."""
PREDICT_S: Final = 60.0
GNSS_GRADE_M: Final = 25.0
FLAP_S: Final = 300.0
JUDGED_KINDS: Final = frozenset({"proximity_pre_alert", "proximity_alarm", "zone_alarm"})


@dataclass(frozen=True, slots=True)
class Opened:
    """An alarm of `kind` (with zone: `zone_alarm:NAME`) over [at_s, cleared_s) of case time."""

    kind: str
    at_s: float
    cleared_s: float | None


@dataclass(frozen=True, slots=True)
class Outcome:
    ring: str
    """`pre_alert`, `alarm` or `zone`."""
    promised: bool
    detected: bool
    time_to_alarm_s: float | None
    """From true entry to the alarm (None: missed, or already open from before)."""
    why: str
    """Why a miss is not a broken promise: the rule it falls under ("" when detected)."""


@dataclass(slots=True)
class CaseScore:
    case_id: str
    family: str
    source: str
    hours: float
    outcomes: list[Outcome] = field(default_factory=list)
    false_alarms: dict[str, int] = field(default_factory=dict)
    unfounded: dict[str, int] = field(default_factory=dict)
    """False alarms while the truth was more than `NEAR_M` beyond the ring all along."""
    opens: dict[str, int] = field(default_factory=dict)
    flaps: int = 0


def ring_of(kind: str) -> str:
    if kind.startswith("zone_alarm"):
        return "zone"
    return "pre_alert" if kind == "proximity_pre_alert" else "alarm"


def alarms(signals: Iterable[AlarmSignal]) -> list[Opened]:
    """Open/clear signals of the judged kinds as alarm intervals, in opening order."""
    open_at: dict[str, float] = {}
    done: list[Opened] = []
    for signal in signals:
        if signal.kind not in JUDGED_KINDS or signal.action == "update":
            continue
        kind = f"zone_alarm:{signal.zone}" if signal.kind == "zone_alarm" else signal.kind
        at_s = (signal.at - START_MS) / 1000
        if signal.action == "open":
            open_at.setdefault(kind, at_s)
        elif kind in open_at:
            done.append(Opened(kind, open_at.pop(kind), at_s))
    done.extend(Opened(kind, at_s, None) for kind, at_s in open_at.items())
    return sorted(done, key=lambda o: (o.at_s, o.kind))


def judge(
    spec: CaseSpec,
    truth: Sequence[Ring],
    signals: Iterable[AlarmSignal],
    settings: ProximitySettings,
    thrown: Mapping[str, Sequence[float]] = MappingProxyType({}),
) -> CaseScore:
    """`thrown`: device -> case times of its fixes thrown off the truth (`Case.thrown`)."""
    opened = alarms(signals)
    score = CaseScore(spec.case_id, spec.family, spec.source, spec.duration_s / 3600)
    interval = max(spec.offender.interval_s, spec.victim.interval_s)
    span = settings.enter_dwell_s + 2 * interval
    early = PREDICT_S + interval
    for ring in truth:
        mine = [o for o in opened if o.kind == ring.kind]
        zone = ring.kind.startswith("zone_alarm")
        devices = (spec.offender,) if zone else (spec.offender, spec.victim)
        for breach in ring.breaches:
            stretch = _stretch(devices, thrown, breach.from_s, span)
            known = _known_at(devices, breach.from_s, stretch)
            why = _no_promise(breach, devices, span, stretch, unsent=known >= spec.duration_s)
            deadline = known + stretch + SETTLE_S
            score.outcomes.append(
                _outcome(ring, breach=breach, mine=mine, why=why, early=early, deadline=deadline)
            )
        score.opens[ring_of(ring.kind)] = score.opens.get(ring_of(ring.kind), 0) + len(mine)
        false = [o for o in mine if not _explained(o, ring.breaches, devices, span, early)]
        unfounded = [o for o in false if not _explained(o, ring.near, devices, span, early)]
        name = ring_of(ring.kind)
        for tally, found in ((score.false_alarms, false), (score.unfounded, unfounded)):
            if found:
                tally[name] = tally.get(name, 0) + len(found)
        score.flaps += sum(
            1
            for before, after in itertools.pairwise(mine)
            if before.cleared_s is not None and after.at_s - before.cleared_s <= FLAP_S
        )
    return score


def _stretch(
    devices: Sequence[DeviceSpec],
    thrown: Mapping[str, Sequence[float]],
    t_s: float,
    span: float,
) -> float:
    """`span` from `t_s`, and one fix interval of its device more for each fix thrown off the
    truth within it: a thrown fix is no GNSS-grade fix (the off-track rule waits for the next)."""
    end = t_s + span
    times = sorted(
        (at, device.interval_s)
        for device in devices
        for at in thrown.get(device.device_id, ())
        if at >= t_s
    )
    for at, interval in times:
        if at >= end:
            break
        end += interval
    return end - t_s


def _known_at(devices: Sequence[DeviceSpec], t_s: float, span: float) -> float:
    """When nabij can first know of the positions measured over [t_s, t_s + span]: the end of
    a coverage gap that overlaps it, else `t_s`."""
    known = t_s
    for device in devices:
        for gap in device.gaps:
            if gap.from_s < t_s + span and gap.to_s > t_s:
                known = max(known, gap.to_s)
    return known


def _outcome(
    ring: Ring,
    *,
    breach: Window,
    mine: Sequence[Opened],
    why: str,
    early: float,
    deadline: float,
) -> Outcome:
    name = ring_of(ring.kind)
    if any(
        o.at_s < breach.from_s - early and (o.cleared_s is None or o.cleared_s > breach.from_s)
        for o in mine
    ):
        return Outcome(name, not why, True, None, "")
    hits = [o.at_s for o in mine if breach.from_s - early <= o.at_s <= deadline]
    if hits:
        return Outcome(name, not why, True, min(hits) - breach.from_s, "")
    late = any(deadline < o.at_s < breach.to_s for o in mine)
    reason = why or "unexplained"
    return Outcome(name, not why, False, None, f"{reason} (late)" if late else reason)


def _no_promise(
    breach: Window, devices: Sequence[DeviceSpec], span: float, stretch: float, *, unsent: bool
) -> str:
    """ "" when the rules promise to detect `breach`, else the rule that makes no promise.
    `stretch`: `span` lengthened by thrown fixes (`_stretch`). `unsent`: a coverage gap over its
    start lasts past the end of the case, so the backlog of its positions is never uploaded."""
    if breach.to_s - breach.from_s < span:
        return "shorter than dwell + 2 fix intervals"
    if breach.to_s - breach.from_s < stretch:
        return "shorter than dwell + 2 fix intervals not thrown by multipath"
    if unsent:
        return "backlog not uploaded before the case ends"
    end = breach.from_s + span
    for device in devices:
        for window, sky in device.indoors:
            if window.from_s < end and window.to_s > breach.from_s:
                return (
                    "cell positions open only the pre-alert"
                    if sky == "cell"
                    else f"{sky} positions"
                )
        if device.noise.acc_m > GNSS_GRADE_M:
            return f"GNSS accuracy worse than {GNSS_GRADE_M:.0f} m"
    return ""


def _explained(
    alarm: Opened,
    breaches: Sequence[Window],
    devices: Sequence[DeviceSpec],
    span: float,
    early: float,
) -> bool:
    """An alarm some true breach accounts for (see the module doc)."""
    for breach in breaches:
        until = max(breach.to_s, _known_at(devices, breach.from_s, span)) + span + SETTLE_S
        if breach.from_s - early <= alarm.at_s <= until:
            return True
    return False
