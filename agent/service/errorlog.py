"""Logging a connection's error events without letting the client write the log.

Every ``error`` event the server sends is worth a log line the first few times; after
that a client that keeps sending the same bad message (one did, 52 MB of log a minute)
would decide how big the log grows. So each code is logged in full the first
``first`` times per connection, then counted, and the count is logged at most every
``every_s`` seconds and once more when the connection ends. The metrics still count
every error; only the log is thinned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from parley.agent.core.clock import Clock

FIRST = 5
EVERY_S = 10.0


@dataclass
class _Code:
    seen: int = 0
    untold: int = 0  # suppressed since the last summary
    since: float = 0.0  # clock time of the first untold one


class ErrorLogLimiter:
    """Per-connection log lines for error events, bounded per code and per time."""

    def __init__(
        self,
        log: logging.LoggerAdapter | logging.Logger,
        clock: Clock,
        first: int = FIRST,
        every_s: float = EVERY_S,
    ) -> None:
        self.log = log
        self.clock = clock
        self.first = first
        self.every_s = every_s
        self._codes: dict[str, _Code] = {}

    def error(self, code: str, message: str) -> None:
        """One error event with ``code`` went out: log it, or count it."""
        c = self._codes.setdefault(code, _Code())
        c.seen += 1
        if c.seen < self.first:
            self.log.info("error code=%s: %s", code, message)
            return
        if c.seen == self.first:
            self.log.info(
                "error code=%s: %s (more %s errors are counted, logged every %g s)",
                code,
                message,
                code,
                self.every_s,
            )
            return
        now = self.clock.now()
        if c.untold == 0:
            c.since = now
        c.untold += 1
        if now - c.since >= self.every_s:
            self._summary(code, c)

    def flush(self) -> None:
        """Log what is still only counted (the connection is ending)."""
        for code, c in self._codes.items():
            if c.untold:
                self._summary(code, c)

    def _summary(self, code: str, c: _Code) -> None:
        self.log.warning(
            "%d more %s errors suppressed (%d in all on this connection)", c.untold, code, c.seen
        )
        c.untold = 0
