"""Requests (``command.v1``) and responses (``response.v1``) of the remote commands.

A request arrives on ``{base}/cmd/{command}``. Its reply address and correlation come from the
MQTT 5 properties (Response Topic, Correlation Data) or, from an MQTT 3.1.1 client, from the
JSON fields ``reply_to`` and ``correlation``. The reply topic must lie under
``{base}/response/`` (an agent publishes only under its own subtree, and the fleet ACL allows
nothing else); any other gets its error on ``{base}/response/_``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from edge_agent.reading import iso_utc

SCHEMA_COMMAND = "edge-agent/command/v1"
SCHEMA_RESPONSE = "edge-agent/response/v1"
#: Error codes of ``response.v1``.
ERROR_CODES = (
    "malformed", "unknown_command", "not_allowed", "bad_args", "busy", "rate_limited", "failed",
)  # fmt: skip
#: The longest request payload read (bytes); a longer one is ``malformed``.
MAX_REQUEST_BYTES = 16 * 1024
_MAX_ID = 128


class RequestError(Exception):
    """A request that cannot be run: ``code`` (one of ERROR_CODES) and ``reason`` in words."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Request:
    """A request as far as it could be read: enough to answer it, even when malformed."""

    command: str
    reply_to: str
    request_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    #: Correlation Data (MQTT 5 property), echoed as a property.
    correlation_prop: bytes | None = None
    #: ``correlation`` from the JSON (MQTT 3.1.1), echoed in the JSON.
    correlation_json: str | None = None
    #: Set when the request cannot run; answered with this error.
    error: RequestError | None = None


def parse(
    base: str, topic: str, payload: bytes, response_topic: str | None, correlation: bytes | None
) -> Request:
    """Read a request; never raises. ``error`` is set when it is not runnable as is."""
    fallback = f"{base}/response/_"
    command = topic[len(base) + len("/cmd/") :] if topic.startswith(f"{base}/cmd/") else ""
    req = Request(command or "?", fallback, correlation_prop=correlation)
    body: Any = None
    try:
        if response_topic is not None:  # MQTT 5: known even when the JSON is not
            req.reply_to = _reply_topic(base, response_topic)
        if len(payload) > MAX_REQUEST_BYTES:
            raise RequestError("malformed", f"request over {MAX_REQUEST_BYTES} bytes")
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError("malformed", f"not JSON: {err}") from None
        if not isinstance(body, dict):
            raise RequestError("malformed", "request is not a JSON object")
        _reply(req, base, body, response_topic)
        _fields(req, body)
        if not command or "/" in command:
            raise RequestError("unknown_command", f"topic {topic!r} is not {base}/cmd/<command>")
    except RequestError as err:
        req.error = err
    return req


def _reply(req: Request, base: str, body: dict[str, Any], response_topic: str | None) -> None:
    corr = body.get("correlation")
    if corr is not None:
        if not isinstance(corr, str) or len(corr) > _MAX_ID:
            raise RequestError("malformed", f"correlation must be a string of <= {_MAX_ID} chars")
        req.correlation_json = corr
    rid = body.get("id")
    if isinstance(rid, str) and 0 < len(rid) <= _MAX_ID:
        req.request_id = rid
    wanted = body.get("reply_to")
    if response_topic is None and wanted is not None:
        req.reply_to = _reply_topic(base, wanted)


def _reply_topic(base: str, wanted: object) -> str:
    prefix = f"{base}/response/"
    if (
        not isinstance(wanted, str)
        or not wanted.startswith(prefix)
        or len(wanted) == len(prefix)
        or any(c in wanted for c in "+#\0")
    ):
        raise RequestError("malformed", f"response topic {wanted!r} is not under {prefix}")
    return wanted


def _fields(req: Request, body: dict[str, Any]) -> None:
    if body.get("schema") != SCHEMA_COMMAND:
        raise RequestError("malformed", f"schema must be {SCHEMA_COMMAND!r}")
    if req.request_id is None:
        raise RequestError("malformed", f"id must be a non-empty string of <= {_MAX_ID} chars")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("malformed", "args must be a JSON object")
    req.args = args


def response(req: Request, agent: str, result: dict[str, Any] | None) -> bytes:
    """The ``response.v1`` payload for ``req``: ``result`` when ok, else ``req.error``."""
    body: dict[str, Any] = {
        "schema": SCHEMA_RESPONSE,
        "request_id": req.request_id,
        "command": req.command,
        "agent": agent,
        "ok": req.error is None,
    }
    if req.error is None:
        body["result"] = result or {}
    else:
        body["error"] = {"code": req.error.code, "reason": req.error.reason}
    if req.correlation_json is not None:
        body["correlation"] = req.correlation_json
    body["ts"] = iso_utc(time.time_ns())
    return json.dumps(body, separators=(",", ":")).encode()
