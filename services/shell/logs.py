"""Logging: one JSON object per line on stderr, with coordinates redacted before rendering.

`configure_logging` is called once at start-up by each service's `__main__`. Everything logs
through structlog; the stdlib loggers of libraries (paho, amqtt, redis) go through the same
renderer, at WARNING and above, so an operator reads a single JSON stream.

Privacy: a log line must never carry a position. `redact_positions` replaces every value under a
key named like a coordinate, a position or a party (`lat`, `lon`, `victim`, `position`, ...) and
every mapping or object that holds `lat`/`lon`, at any depth, with `"[redacted]"`. It runs last
before rendering, for structlog events and stdlib records alike.

Volume: a log line is never written per bad input. `LogAggregator` logs the first occurrence of a
reason at once and then one summary line per reason and interval, with the count and a sample.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
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
DEFAULT_SUMMARY_INTERVAL_S: Final = 10.0
# A sample is there to recognise the input, not to hold it: long strings (a junk topic, a long
# decoder message) are cut to this many characters.
SAMPLE_MAX_CHARS: Final = 256


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


@dataclass(slots=True)
class _Window:
    started: float
    count: int = 0
    sample: dict[str, object] = field(default_factory=dict)


class LogAggregator:
    """Warnings about repeated occurrences (rejected input, dropped dead letters), aggregated.

    The first occurrence of a key (a reason) is logged at once, so a single bad message is still
    seen. Further occurrences within `interval_s` are only counted; when the interval is over, one
    summary line `<event>_summary` carries the key, how many there were and the fields of the
    latest as a sample, and a new interval starts. A key that stays quiet for a whole interval
    starts over: its next occurrence is logged at once again. A flood therefore costs one line
    per key and interval, whatever its rate.

    Summaries are written when `record` or `flush` notices an interval is over; call `flush` on
    every turn of the service loop so that the last summary of a burst is not held back. Not
    thread-safe: one aggregator belongs to one service loop.
    """

    def __init__(
        self,
        log: structlog.typing.FilteringBoundLogger,
        event: str,
        *,
        interval_s: float = DEFAULT_SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._event = event
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def record(self, key: str, **sample: object) -> None:
        """Note one occurrence of `key`; `sample` are its fields (never coordinates). The line's
        own fields (`reason`, and `count`, `interval_s` in a summary) win over a sample's."""
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window.started >= self._interval_s:
            window = self._close(key, window, now)
        if window is None:
            self._windows[key] = _Window(now)
            self._log.warning(self._event, **{**_shortened(sample), "reason": key})
            return
        window.count += 1
        window.sample = sample

    def flush(self, *, final: bool = False) -> None:
        """Write the summaries whose interval is over (all of them if `final`)."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if final or now - window.started >= self._interval_s:
                self._close(key, window, now)

    def _close(self, key: str, window: _Window, now: float) -> _Window | None:
        if window.count == 0:
            del self._windows[key]
            return None
        summary = {
            **_shortened(window.sample),
            "reason": key,
            "count": window.count,
            "interval_s": round(now - window.started, 1),
        }
        self._log.warning(f"{self._event}_summary", **summary)
        fresh = self._windows[key] = _Window(now)
        return fresh


def _shortened(sample: Mapping[str, object]) -> dict[str, object]:
    return {
        key: value[:SAMPLE_MAX_CHARS] if isinstance(value, str) else value
        for key, value in sample.items()
    }


__all__ = [
    "DEFAULT_SUMMARY_INTERVAL_S",
    "REDACTED",
    "SENSITIVE_KEYS",
    "LogAggregator",
    "configure_logging",
    "redact_positions",
]
