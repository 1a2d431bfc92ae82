"""What code logged through a Dagster context's logger, as an operator reads it."""

from __future__ import annotations

import logging


class Lines(logging.Handler):
    """Collects the records of a logger it is added to (``context.log.addHandler(lines)``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record (``logging.Handler``'s hook)."""
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        """The messages logged at exactly ``level`` (``logging.WARNING``, ...), in order."""
        return [r.getMessage() for r in self.records if r.levelno == level]

    @property
    def text(self) -> str:
        """Every message, one a line, as an operator reads the run's log."""
        return "\n".join(r.getMessage() for r in self.records)
