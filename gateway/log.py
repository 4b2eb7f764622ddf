"""Structured JSON logs, written by a background thread so requests never wait on stderr."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "info") -> None:
    """Route the `gateway` logger through a queue to a JSON stderr handler."""
    logger = logging.getLogger("gateway")
    if any(isinstance(h, logging.handlers.QueueHandler) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(log_queue, handler)
    listener.start()
    atexit.register(listener.stop)
    logger.addHandler(logging.handlers.QueueHandler(log_queue))
    logger.setLevel(level.upper())
    logger.propagate = False
