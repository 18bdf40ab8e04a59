"""Plot scenarios run through the replay driver: distance over time, rings, states, signals.

Run: `.venv/bin/python scripts/plot_proximity.py [--out docs/img/proximity.png]`. Each panel is
one scenario file from tests/scenarios, replayed by `services.replay.timeline.replay` (the exact
core): the measured distance with its uncertainty band, the rings and their exit thresholds, the
phases of each ring as shaded bands, and every open and clear as a marker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.replay.timeline import replay  # noqa: E402
from tests.scenarios.tracks import load_scenario  # noqa: E402

PANELS = (
    (
        "wobble_alarm_ring.toml",
        "GPS wobble (±40 m) at the 500 m alarm ring: opens once, never flaps",
    ),
    (
        "cell_fix.toml",
        "A 1,500 m cell fix at the victim: pre-alert only, low confidence; GNSS clears",
    ),
    ("car_both_moving.toml", "Closing by car at 35 m/s: pre-alert opens by prediction, at 2.6 km"),
)
PHASE_COLOURS = {"entering": "#f6d365", "inside": "#f08a5d", "exiting": "#b8de6f"}


def panel(ax: plt.Axes, name: str, title: str) -> None:
    scenario = load_scenario(ROOT / "tests" / "scenarios" / name)
    timeline = replay(scenario.config, scenario.records, samples=True, tail_s=5)
    order = scenario.config.orders[0]
    samples = [s for s in timeline.samples if s.pair[0] == order.id]
    t = [(s.at - scenario.start_ms) / 60_000 for s in samples]
    d = [s.distance_m for s in samples]
    u = [s.uncertainty_m for s in samples]
    low = [max(0.0, x - y) for x, y in zip(d, u, strict=True)]
    high = [x + y for x, y in zip(d, u, strict=True)]
    ax.fill_between(
        t, low, high, color="#9ecae1", alpha=0.5, step="post",
        label="distance ± uncertainty (sum of radii)",
    )  # fmt: skip
    ax.step(t, d, where="post", color="#08519c", lw=1.2, label="measured distance")
    pre, alarm = order.pre_alert_ring_m, order.alarm_m
    margin = scenario.config.settings.proximity.exit_margin_m
    for ring, label, colour in (
        (pre, "pre-alert ring", "#e6550d"),
        (alarm, "alarm ring", "#a50f15"),
    ):
        exit_m = ring + (margin if margin is not None else max(50.0, 0.1 * ring))
        ax.axhline(ring, color=colour, lw=1.2, label=f"{label} {ring:.0f} m")
        ax.axhline(exit_m, color=colour, lw=0.8, ls="--", label=f"{label} exit {exit_m:.0f} m")
    # Phases as bands along the top (pre-alert) and just below it (alarm).
    top = max(max(d) + max(u) * 0.2, pre * 1.4) if d else pre * 1.4
    for row, attr in ((0, "pre_alert"), (1, "alarm")):
        y0 = top * (0.97 - 0.05 * row)
        for i, sample in enumerate(samples[:-1]):
            phase = getattr(sample, attr)
            if phase in PHASE_COLOURS:
                ax.fill_between(
                    [t[i], t[i + 1]], y0 - top * 0.04, y0, color=PHASE_COLOURS[phase], lw=0
                )
        ax.text(t[0] if t else 0, y0 - top * 0.035, f" {attr.replace('_', '-')} phase", fontsize=7)
    for line in timeline.lines:
        s = line.signal
        if s is None or s.action == "update" or not s.kind.startswith("proximity"):
            continue
        x = (line.at - scenario.start_ms) / 60_000
        marker = "v" if s.action == "open" else "^"
        colour = "#e6550d" if s.kind == "proximity_pre_alert" else "#a50f15"
        ax.plot([x], [s.distance_m or 0], marker=marker, color=colour, ms=9, mec="black")
        ax.annotate(
            f"{s.action} {s.kind.removeprefix('proximity_')}",
            (x, s.distance_m or 0), textcoords="offset points", xytext=(4, 8), fontsize=8,
        )  # fmt: skip
    ax.set_ylim(0, top)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("metres")
    ax.grid(alpha=0.3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "proximity.png")
    args = parser.parse_args()
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 4.2 * len(PANELS)))
    for ax, (name, title) in zip(axes, PANELS, strict=True):
        panel(ax, name, title)
    axes[-1].set_xlabel("minutes since the scenario's start")
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLOURS.values()]
    labels += [f"phase: {p}" for p in PHASE_COLOURS]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
