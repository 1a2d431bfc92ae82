"""What code logged through a Dagster context's logger, as an operator reads it."""

from __future__ import annotations

import logging


class Lines(logging.Handler):
    """Collects the records of a logger it is added to (``context.log.addHandler(lines)``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)
