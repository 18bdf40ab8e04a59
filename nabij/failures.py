"""Describe an unexpected exception without any of its values.

A bug must never turn one message into a crash loop (the broker or the inbox would hand it back
forever), so the shells reject such a message to the dead-letter stream instead. Its description
names the exception type and where it was raised, never its message: that could quote a fix.
"""

from __future__ import annotations

import traceback


class NabijError(Exception):
    """The root of nabij's own errors: a caller that must not crash catches this one."""


def describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"internal error {type(err).__name__}{where}; the message was set aside"
