"""structlog set-up: JSON lines when not on a TTY (journald, CI), colourless console on a TTY.

Secrets never reach a log line: a processor blanks keys that look like secrets and any value
equal to a registered secret (the MQTT password), wherever it appears.

No log line carries a raw control character (docs/reliability.md T19): device bytes can end up in a
value (a reply text, an error message), and an ESC sequence or a CR would rewrite what a
technician sees on a terminal. The JSON renderer escapes them (``ensure_ascii``); for the
console renderer a processor escapes C0/C1 controls, DEL and the bidi and line-separator
characters as ``\\xNN`` / ``\\uNNNN`` (a traceback keeps its newlines).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass|secret|token|credential|private_key", re.IGNORECASE)
_secrets: set[str] = set()
#: What the console renderer must not print raw: C0 (but LF, kept in tracebacks), DEL, C1,
#: bidi embeddings/overrides/isolates, line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_WITH_LF = re.compile(f"{_UNSAFE.pattern[:-1]}\n]")
#: Keys whose multi-line text is meant to stay multi-line on a terminal.
_MULTILINE = frozenset({"exception", "stack"})


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


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control / bidi character written as an escape."""
    return (_UNSAFE if keep_newlines else _UNSAFE_WITH_LF).sub(_escape_char, text)


def _escape(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Only str values are printed raw: the console renderer repr()s everything else, and
    # repr() escapes every character matched here (none of them is printable).
    return {
        escape_controls(key): (
            escape_controls(val, keep_newlines=key in _MULTILINE) if isinstance(val, str) else val
        )
        for key, val in event.items()
    }


class _StderrLogger(structlog.PrintLogger):
    """Prints to whatever ``sys.stderr`` is *now*, not the object it was when logging was set
    up: a caller that swaps stderr (a test harness capturing output, then closing its file)
    must not leave the process logging into a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def msg(self, message: str) -> None:
        """Print one rendered event line."""
        err = sys.stderr
        with self._lock:
            err.write(message + "\n")
            err.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_STDERR = _StderrLogger()


class _Level:
    """What :func:`setup` configured. Hot paths (a line per reading or per read) test
    ``LEVEL.debug`` first: a filtered structlog call still costs a logger bind, and its
    arguments (a hex dump) are built before the level check."""

    debug = False


LEVEL = _Level()


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the process (idempotent)."""
    LEVEL.debug = level.lower() == "debug"
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
            *([] if as_json else [_escape]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_args: _STDERR,
        cache_logger_on_first_use=False,
    )


def log_thread_deaths() -> None:
    """An exception that ends a thread (a bug in a callback killing paho's network loop, say)
    becomes one JSON log line, ``thread_died`` with the thread's name and the traceback as a
    field, instead of Python's multi-line traceback on stderr (journald needs one object per
    line). The thread still ends: the watchdog check notices and systemd restarts the daemon.
    """

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc = (args.exc_type, args.exc_value, args.exc_traceback)
        structlog.get_logger(__name__).error("thread_died", thread=name, exc_info=exc)

    threading.excepthook = hook
