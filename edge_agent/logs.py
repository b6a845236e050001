"""structlog set-up: JSON lines when not on a TTY (journald, CI), colourless console on a TTY.

Secrets never reach a log line: a processor blanks keys that look like secrets and any value
equal to a registered secret (the MQTT password), wherever it appears.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass|secret|token|credential|private_key", re.IGNORECASE)
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value`` in a log line."""
    if value:
        _secrets.add(value)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, val in event.items():
        if _SECRET_KEY.search(key):
            event[key] = "***"
        elif _secrets and isinstance(val, str):
            for s in _secrets:
                if s in val:
                    event[key] = val.replace(s, "***")
    return event


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the process (idempotent)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
