"""From one MQTT message to the rows it becomes: pure functions, no database, no network.

The agent is named by the topic (``{prefix}/v1/{site}/{line}/{agent}/...``, which the broker's
ACL ties to the agent), never by the payload. A message the hub cannot use (bad JSON, a missing
field, an unknown topic) becomes one ``rejects`` row with the reason: kept, counted, acked.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from edge_agent.model import ID_PATTERN

_IDENT = re.compile(ID_PATTERN)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
STATES = ("online", "offline", "offline-clean")


class Reject(Exception):  # noqa: N818 - a reason code, not an error of the hub
    """The message cannot be used; ``str()`` is the reason stored with it."""


@dataclass
class Rows:
    """Everything one batch of messages turns into, by table."""

    readings: list[tuple[Any, ...]] = field(default_factory=list)
    parcels: list[tuple[Any, ...]] = field(default_factory=list)
    exceptions: list[tuple[Any, ...]] = field(default_factory=list)
    kpis: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    alarms: list[tuple[Any, ...]] = field(default_factory=list)
    states: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    statuses: list[tuple[str, str, str, str, dict[str, Any] | None, bytes]] = field(
        default_factory=list
    )
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rejects: list[tuple[bytes, str, bytes, str]] = field(default_factory=list)
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    messages: int = 0


def msg_hash(topic: str, payload: bytes) -> bytes:
    """The key of a message without an id of its own (alarms, statuses, rejects)."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


def add(rows: Rows, prefix: str, topic: str, payload: bytes) -> None:
    """Decode one message into ``rows``; a bad one becomes a reject row."""
    rows.messages += 1
    try:
        _add(rows, prefix, topic, payload)
    except Reject as err:
        rows.rejects.append((msg_hash(topic, payload), topic, payload, str(err)))


def _add(rows: Rows, prefix: str, topic: str, payload: bytes) -> None:
    parts = topic.split("/")
    if len(parts) < 6 or parts[0] != prefix or parts[1] != "v1":
        raise Reject("unknown_topic")
    site, line, agent, rest = parts[2], parts[3], parts[4], parts[5:]
    if not all(_IDENT.match(p) for p in (site, line, agent)):
        raise Reject("bad_topic_id")
    what = rest[0]
    if what == "status" and len(rest) == 1:
        _status(rows, agent, site, line, topic, payload)
        rows.seen[agent] = (site, line)
        return
    if what == "response" and len(rest) == 2:
        rows.responses.append((agent, _json(payload)))
        return
    doc = _json(payload)
    if what == "reading" and len(rest) == 2:
        rows.readings.append(_reading(doc, agent, site, line, rest[1]))
    elif what == "batch" and len(rest) == 1:
        items = doc.get("readings")
        if not isinstance(items, list):
            raise Reject("batch_without_readings")
        rows.readings.extend(_reading(r, agent, site, line, None) for r in items)
    elif what == "parcel" and len(rest) == 2:
        rows.parcels.append(_parcel(doc, agent, site, line, rest[1]))
    elif what == "exception" and len(rest) == 2:
        rows.exceptions.append(_exception(doc, agent, site, line, rest[1]))
    elif what == "kpi" and len(rest) == 2:
        rows.kpis[(agent, rest[1])] = (agent, rest[1], _ts(doc.get("ts"), True), _dump(doc))
    elif what == "alarm" and len(rest) == 1:
        alarm = doc.get("alarm")
        if not isinstance(alarm, str):
            raise Reject("alarm_without_name")
        ts = doc.get("ts")
        epoch = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
        rows.alarms.append((msg_hash(topic, payload), agent, alarm, epoch, _dump(doc)))
    elif what == "device" and len(rest) == 3 and rest[2] == "state":
        state = doc.get("state")
        if not isinstance(state, str):
            raise Reject("state_without_state")
        reason = doc.get("reason")
        rows.states[(agent, rest[1])] = (
            agent,
            rest[1],
            state,
            reason if isinstance(reason, str) else None,
            _dump(doc),
        )
    else:
        raise Reject("unknown_topic")
    rows.seen[agent] = (site, line)


def _json(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise Reject("bad_json") from None
    if not isinstance(doc, dict):
        raise Reject("not_an_object")
    return doc


def _dump(doc: dict[str, Any]) -> str:
    text = json.dumps(doc, separators=(",", ":"))
    if "\\u0000" in text:  # PostgreSQL's jsonb and text refuse NUL
        raise Reject("nul_character")
    return text


def _ts(value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not TS_RE.match(value):
        raise Reject("bad_ts")
    return value


def _common(doc: dict[str, Any], what: str) -> tuple[str, int, str]:
    rid, seq = doc.get("id"), doc.get("seq")
    if not isinstance(rid, str) or not _UUID.match(rid):
        raise Reject(what + "_bad_id")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63:
        raise Reject(what + "_bad_seq")
    return rid, seq, str(_ts(doc.get("ts")))


def _reading(doc: Any, agent: str, site: str, line: str, device: str | None) -> tuple[Any, ...]:
    if not isinstance(doc, dict):
        raise Reject("reading_not_an_object")
    rid, seq, ts = _common(doc, "reading")
    dev = doc.get("device")
    if not isinstance(dev, str) or not _IDENT.match(dev) or (device and dev != device):
        raise Reject("reading_bad_device")
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise Reject("reading_bad_kind")
    value = doc.get("value")
    text = None if value is None else str(value)
    if text is not None and "\x00" in text:
        raise Reject("nul_character")
    return (rid, agent, site, line, dev, seq, kind, text, ts, _dump(doc))


def _station(station: str) -> str:
    if not _IDENT.match(station):
        raise Reject("bad_topic_id")
    return station


def _parcel(doc: dict[str, Any], agent: str, site: str, line: str, st: str) -> tuple[Any, ...]:
    rid, seq, ts = _common(doc, "parcel")
    parcel = doc.get("parcel")
    flags = doc.get("flags") or []
    weight = doc.get("weight_g")
    if not isinstance(parcel, str) or not isinstance(flags, list):
        raise Reject("parcel_bad_fields")
    waybill, carrier = doc.get("waybill"), doc.get("carrier")
    return (
        rid,
        agent,
        site,
        line,
        _station(st),
        seq,
        ts,
        parcel,
        waybill if isinstance(waybill, str) else None,
        carrier if isinstance(carrier, str) else None,
        float(weight) if isinstance(weight, int | float) and not isinstance(weight, bool) else None,
        [str(f) for f in flags],
        _dump(doc),
    )


def _exception(doc: dict[str, Any], agent: str, site: str, line: str, st: str) -> tuple[Any, ...]:
    rid, seq, ts = _common(doc, "exception")
    exc = doc.get("exception")
    if not isinstance(exc, str):
        raise Reject("exception_bad_type")
    parcel = doc.get("parcel")
    parcel = parcel if isinstance(parcel, str) else None
    return (rid, agent, site, line, _station(st), seq, ts, exc, parcel, _dump(doc))


def _status(rows: Rows, agent: str, site: str, line: str, topic: str, payload: bytes) -> None:
    """status.v1 JSON, or the plain ``online``/``offline`` of agents before it."""
    text = payload.decode("utf-8", "replace").strip()
    doc: dict[str, Any] | None = None
    if text in STATES:
        state = text
    else:
        doc = _json(payload)
        state = str(doc.get("state"))
        if state not in STATES:
            raise Reject("status_bad_state")
        _dump(doc)
    rows.statuses.append((agent, site, line, state, doc, msg_hash(topic, payload)))
