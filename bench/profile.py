"""Where a saturated proximity process spends its time: py-spy on `bench.pipeline`'s load.

Runs the saturation load of `bench.pipeline` (one `nabij proximity`, QoS 1 fixes as fast as the
broker takes them) with `py-spy record` attached to the service for `--seconds`, all threads,
then prints the busiest frames: self time (where the CPU is) and, per function of nabij, total
time (what it costs with what it calls), as shares of the service's samples. py-spy is not a
dependency of nabij: `.venv/bin/pip install py-spy` first.

    .venv/bin/python -m bench.profile --pairs 2000 --fixes 200000 --seconds 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.pipeline import orders_toml, payloads, proximity, publish

OURS = ("nabij/", "services/", "simulators/")


def top(collapsed: Path, rows: int) -> str:
    """Self and inclusive shares of the frames in py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        # One entry per function (file, not line), so its lines add up.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            if any(part in frame for part in OURS):
                inclusive[frame] += count
    lines = [f"{total} samples", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(rows)]
    lines.append("inclusive (nabij's own functions):")
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(rows)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--fixes", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(__file__).parents[1] / ".venv/bin/py-spy")
    start_ts = time.time_ns() // 1_000_000 - args.fixes // args.pairs * 1000
    messages = payloads(args.pairs, args.fixes, start_ts)
    with (
        tempfile.TemporaryDirectory() as tmp,
        proximity(orders_toml(args.pairs), Path(tmp)) as running,
    ):
        collapsed = Path(tmp) / "profile.txt"
        publisher = multiprocessing.Process(target=publish, args=(running.mqtt_url, messages))
        publisher.start()
        time.sleep(1.0)  # the service is saturated before sampling starts
        subprocess.run(
            [
                *(spy, "record", "--pid", str(running.pid), "--duration", str(args.seconds)),
                *("--format", "raw", "--output", str(collapsed), "--threads", "--nonblocking"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        publisher.terminate()
        publisher.join(timeout=10)
        print(top(collapsed, args.rows))


if __name__ == "__main__":
    main()
