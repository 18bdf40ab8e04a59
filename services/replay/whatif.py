"""What-if: a config changed for one replay by `--set key=value` assignments."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

import pydantic

from nabij.config import Config, ConfigError, ConfigProblem, Order, Settings
from nabij.validation import key_problems


def apply_overrides(config: Config, assignments: Sequence[str]) -> Config:
    """`proximity.enter_dwell_s=5`, `gateway.update_min_interval_s=0`, `order.ORD-1.alarm_m=300`:
    values are TOML (`5`, `"text"`, `[1, 2]`), else taken as text. Every problem is reported."""
    problems: list[ConfigProblem] = []
    settings_raw = config.settings.model_dump(exclude_unset=True)
    orders_raw = {order.id: order.model_dump(exclude_unset=True) for order in config.orders}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            problems.append(ConfigProblem("--set", key, None, "expected KEY=VALUE"))
            continue
        value = _value(text.strip())
        if path[0] == "order":
            if len(path) != 3 or path[1] not in orders_raw:
                problems.append(ConfigProblem("--set", key, None, "expected order.ID.KEY"))
                continue
            orders_raw[path[1]][path[2]] = value
        else:
            target = settings_raw
            for part in path[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    break
            if not isinstance(target, dict):
                problems.append(ConfigProblem("--set", key, None, "not a settings table"))
                continue
            target[path[-1]] = value
    settings = config.settings
    orders = list(config.orders)
    try:
        settings = Settings.model_validate(settings_raw)
    except pydantic.ValidationError as err:
        problems.extend(_problems(err, ""))
    for index, order in enumerate(config.orders):
        try:
            orders[index] = Order.model_validate(orders_raw[order.id])
        except pydantic.ValidationError as err:
            problems.extend(_problems(err, f"order.{order.id}."))
    if problems:
        raise ConfigError(problems)
    return Config(directory=config.directory, settings=settings, orders=tuple(orders))


def _problems(err: pydantic.ValidationError, prefix: str) -> list[ConfigProblem]:
    return [ConfigProblem("--set", prefix + p.path, None, p.message) for p in key_problems(err)]


def _value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
