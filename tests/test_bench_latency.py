"""`bench.latency`'s command line reaches the run: `--fsync everysec` once ran fsync always."""

from __future__ import annotations

import pytest

from bench import latency


def test_the_command_line_passes_every_option_to_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def run(*args: object, **kwargs: object) -> list[dict[str, object]]:
        calls.append((args, kwargs))
        return []

    monkeypatch.setattr(latency, "run", run)
    latency.main(["--rates", "5000", "--duration", "3", "--shards", "2", "--fsync", "everysec"])
    assert calls == [(([5000.0], 3.0, 5000, 0.01, 200), {"shards": 2, "fsync": "everysec"})]
