"""Every shell command the docs show (the `sh` code blocks of README.md, simulators/README.md and
docs/*.md) is run here, or run by a named test, or listed as deliberately not run, with why.

A new command in the docs fails `test_every_documented_command_is_accounted_for` until it gets a
line in `VERDICTS`; a verdict no command needs any more fails `test_no_verdict_is_left_over`.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    REPO / "README.md",
    REPO / "simulators" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class RunHere:
    """Runs in a scratch directory whose `config` is the shipped one; must exit 0."""


@dataclass(frozen=True)
class ByTest:
    test: str  # path::function


@dataclass(frozen=True)
class NotRun:
    why: str


RUN_HERE = RunHere()
NO_ENGINE = NotRun("no container engine runs here; tests/deploy checks compose.yaml and the image")
BENCHMARK = NotRun("a benchmark: minutes of load on a shared machine")
INSTALL = NotRun("make test itself: .ci/run runs it on a clean clone")
OPERATOR_HOST = NotRun(
    "acts on a production host's files and broker; the same commands run against test brokers "
    "in tests/servers.py and tests/test_device_cli.py"
)
SHELL = NotRun("a plain shell utility")
OPERATIONS = "tests/integration/test_operations.py::"
LIVE = ByTest(OPERATIONS + "test_alarms_ack_and_resolve_from_the_command_line")
ORDERS = ByTest("tests/integration/test_order_store.py::test_show_a_past_version_and_end")
RECORDED = ByTest(
    "tests/integration/test_record_replay.py::test_record_writes_what_devices_send_and_replay_reads_it"
)
SERVICES = ByTest(OPERATIONS + "test_run_serves_readiness_health_and_metrics")
SCENARIO_CHECK = ByTest(
    "tests/simulators/test_scenarios_checked.py::test_packaged_scenario_meets_its_expected_timeline"
)

# A documented command (after `.venv/bin/`, comments and continuation lines) starting with the
# prefix gets the verdict; the longest matching prefix wins.
VERDICTS: dict[str, RunHere | ByTest | NotRun] = {
    "make demo": ByTest("tests/test_demo.py::test_demo_shows_escalation_and_aware_press"),
    "make test": INSTALL,
    "make install": INSTALL,
    "make quality": ByTest(
        "tests/quality/test_quality_run.py::test_no_breach_the_rules_promise_to_detect_is_missed"
    ),
    "nabij check-config": RUN_HERE,
    "nabij export-schemas": RUN_HERE,
    "nabij simulate --list": RUN_HERE,
    "nabij simulate --scenario approach --speed": RUN_HERE,
    "nabij simulate --scenario approach --check": SCENARIO_CHECK,
    "nabij simulate --scenario approach --config": SCENARIO_CHECK,
    "nabij simulate fleet --pairs 1000 --interval 30 --write-orders": RUN_HERE,
    "nabij simulate fleet": ByTest(
        "tests/simulators/test_fleet.py::test_fleet_publishes_contract_fixes_on_every_device_topic"
    ),
    "nabij proximity": SERVICES,
    "nabij gateway": SERVICES,
    "nabij run": SERVICES,
    "nabij console": ByTest(
        "tests/integration/test_console_api.py::"
        "test_the_console_works_as_its_own_redis_user_with_operators_from_the_cli"
    ),
    "nabij operator": ByTest(
        "tests/integration/test_console_api.py::"
        "test_the_console_works_as_its_own_redis_user_with_operators_from_the_cli"
    ),
    "nabij alarms": LIVE,
    "nabij ack": LIVE,
    "nabij resolve": LIVE,
    "nabij tail police --group": ByTest(OPERATIONS + "test_a_consumer_group_sees_each_notice_once"),
    "nabij tail": LIVE,
    "nabij orders apply": ByTest(
        "tests/integration/test_order_store.py::"
        "test_dry_run_prints_the_diff_and_an_invalid_file_changes_nothing"
    ),
    "nabij orders": ORDERS,
    "nabij audit": ByTest(
        "tests/integration/test_evidence.py::"
        "test_an_approach_an_ack_and_an_order_change_export_and_verify_without_redis"
    ),
    "nabij record": RECORDED,
    "nabij replay": RECORDED,
    "nabij device": OPERATOR_HOST,
    "B=": OPERATOR_HOST,
    "chgrp": OPERATOR_HOST,
    "docker compose": NO_ENGINE,
    "prometheus --config.file": ByTest(
        "tests/integration/test_prometheus.py::"
        "test_key_series_and_every_dashboard_panel_after_an_approach_and_a_button_press"
    ),
    "alertmanager --config.file": NotRun("`make prometheus` checks its config with amtool"),
    "python -m bench.": BENCHMARK,
    "diff": SHELL,
}


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line of every shell block."""
    found = []
    for path in DOCS:
        for block in SHELL_BLOCK.findall(path.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                command = _without_comment(line).strip()
                if command:
                    found.append((path.relative_to(REPO).as_posix(), command))
    return found


def _without_comment(line: str) -> str:
    words = shlex.shlex(line, posix=True, punctuation_chars=False)
    words.whitespace_split = True
    words.commenters = "#"
    try:
        kept = list(words)
    except ValueError:  # an unbalanced quote: keep the line as written
        return line
    text = " ".join(shlex.quote(w) if " " in w else w for w in kept)
    return text.removeprefix(".venv/bin/").removesuffix(" &")


def verdict_of(command: str) -> tuple[str, RunHere | ByTest | NotRun] | None:
    matches = [prefix for prefix in VERDICTS if command.startswith(prefix)]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return prefix, VERDICTS[prefix]


def test_every_documented_command_is_accounted_for() -> None:
    unaccounted = [f"{where}: {cmd}" for where, cmd in documented_commands() if not verdict_of(cmd)]
    assert unaccounted == []


def test_no_verdict_is_left_over() -> None:
    used = {v[0] for _, cmd in documented_commands() if (v := verdict_of(cmd))}
    assert set(VERDICTS) - used == set()


@pytest.mark.parametrize(
    "test", sorted({v.test for v in VERDICTS.values() if isinstance(v, ByTest)})
)
def test_each_named_test_exists(test: str) -> None:
    path, _, function = test.partition("::")
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    assert function in {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


RUN_HERE_COMMANDS = sorted(
    {cmd for _, cmd in documented_commands() if (v := verdict_of(cmd)) and v[1] is RUN_HERE}
)


@pytest.mark.parametrize("command", RUN_HERE_COMMANDS)
def test_documented_command_runs(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").symlink_to(REPO / "config")
    (tmp_path / "cfg").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[1:]) == 0
