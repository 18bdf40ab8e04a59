"""Logging: one JSON object per line on stderr, with coordinates redacted before rendering.

`configure_logging` is called once at start-up by each service's `__main__`. Everything logs
through structlog; the stdlib loggers of libraries (paho, amqtt, redis) go through the same
renderer, at WARNING and above, so an operator reads a single JSON stream.

Privacy: a log line must never carry a position. `redact_positions` replaces every value under a
key named like a coordinate, a position or a party (`lat`, `lon`, `victim`, `position`, ...) and
every mapping or object that holds `lat`/`lon`, at any depth, with `"[redacted]"`. It runs last
before rendering, for structlog events and stdlib records alike.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED: Final = "[redacted]"
# Keys whose value is dropped whatever it is (compared case-insensitively).
SENSITIVE_KEYS: Final = frozenset(
    {"lat", "lon", "latitude", "longitude", "victim", "offender", "position"}
)
# A mapping or object holding any of these is a position: all of it goes.
_COORDINATE_KEYS: Final = frozenset({"lat", "lon", "latitude", "longitude"})
_LIBRARY_LOGGERS: Final = ("paho", "amqtt", "transitions", "redis", "asyncio")
_SCALARS: Final = (str, bytes, int, float, bool, type(None))
_HANDLER_MARK: Final = "_nabij_json_handler"


def configure_logging(level: str, service: str, *, stream: TextIO | None = None) -> None:
    """Send structlog events and stdlib records (WARNING+) to `stream` (stderr) as JSON lines.

    Every line carries `timestamp` (ISO 8601, UTC), `level`, `event`, `service` and whatever
    context was bound. `level` is one of debug, info, warning, error.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    out = stream if stream is not None else sys.stderr
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _ServiceAdder(service),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            # Plain text traceback: never `dict_tracebacks`, whose frames can carry locals.
            structlog.processors.format_exc_info,
            redact_positions,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Off so that `structlog.testing.capture_logs` sees every logger, even module-level ones
        # that logged before; nabij does not log per message, so the lookup cost is irrelevant.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_positions,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    # Replace our own handler on a second call; leave foreign ones (pytest's capture) alone.
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class _ServiceAdder:
    """Stamp every event with the service name (a bound `service` wins)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self._service)
        return event_dict


def redact_positions(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace coordinates, positions and parties with `"[redacted]"`."""
    for key in list(event_dict):
        event_dict[key] = _scrub(key, event_dict[key])
    return event_dict


def _scrub(key: object, value: Any) -> Any:
    # Any: log values are arbitrary objects; this walks them without knowing their types.
    if isinstance(key, str) and key.lower() in SENSITIVE_KEYS:
        return REDACTED
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return _scrub_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(None, item) for item in value]
    if any(hasattr(value, name) for name in _COORDINATE_KEYS):
        return REDACTED
    # Structs and dataclasses would render through repr() with every field, nested positions
    # included; turn them into builtins first so the walk above sees their fields.
    try:
        builtins = msgspec.to_builtins(value, str_keys=True)
    except (TypeError, ValueError):
        return value
    return value if isinstance(builtins, str) else _scrub(None, builtins)


def _scrub_mapping(value: Mapping[Any, Any]) -> Any:
    # Any: see _scrub.
    if any(isinstance(k, str) and k.lower() in _COORDINATE_KEYS for k in value):
        return REDACTED
    out: MutableMapping[Any, Any] = {}
    for key, item in value.items():
        out[key] = _scrub(key, item)
    return out


__all__ = ["REDACTED", "SENSITIVE_KEYS", "configure_logging", "redact_positions"]
