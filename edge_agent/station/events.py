"""Station events and their bodies (schemas ``parcel.v1``, ``exception.v1``, ``kpi.v1``).

The station builds the body; the daemon adds ``schema``, ``id`` (UUIDv7), ``seq``, ``agent``,
``site``, ``line``, ``station`` and ``ts`` before committing it to the queue
(:meth:`StationEvent.payload` does exactly that). Keys whose value does not apply are left out,
as in ``reading.v1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.station.passage import Passage
from edge_agent.waybill import CodeCheck

SCHEMA_PARCEL = "edge-agent/parcel/v1"
SCHEMA_EXCEPTION = "edge-agent/exception/v1"
SCHEMA_KPI = "edge-agent/kpi/v1"

#: Event kind => the ``schema`` value of its payload.
SCHEMAS: dict[str, str] = {
    "parcel": SCHEMA_PARCEL,
    "exception": SCHEMA_EXCEPTION,
    "kpi": SCHEMA_KPI,
}

#: Every exception type, in the order a parcel's flags are listed.
EXCEPTION_TYPES = (
    "noread",
    "multiread",
    "invalid_code",
    "no_weight",
    "unstable_weight",
    "overweight",
    "underweight",
    "duplicate",
    "orphan",
    "device_offline",
    "kpi_threshold",
)

PRIORITY_NORMAL = 0
PRIORITY_EXCEPTION = 1

EventKind = Literal["parcel", "exception", "kpi"]


@dataclass(frozen=True)
class StationEvent:
    """One event for the queue.

    Attributes:
        kind: "parcel" (one per passage), "exception" (published at once, ahead of backlog)
            or "kpi" (a periodic snapshot; publish retained).
        station: the station id.
        body: the JSON-serialisable body (see the schemas).
        priority: 0 normal; 1 for exceptions.
    """

    kind: EventKind
    station: str
    body: dict[str, Any]
    priority: int

    def payload(
        self,
        *,
        event_id: str,
        seq: int,
        agent: str,
        site: str,
        line: str,
        ts: str,
    ) -> dict[str, Any]:
        """The full MQTT payload: the daemon's envelope fields first, then the body.

        Args:
            event_id: the UUIDv7 assigned before the event is committed.
            seq: the next sequence number of this event stream.
            agent: agent id; site, line: node ids.
            ts: wall-clock UTC time of the event, as in reading.v1.
        """
        head = {
            "schema": SCHEMAS[self.kind],
            "id": event_id,
            "seq": seq,
            "agent": agent,
            "site": site,
            "line": line,
            "station": self.station,
            "ts": ts,
        }
        return {**head, **self.body}


def exception(station: str, kind: str, t: int, **fields: Any) -> StationEvent:
    """An exception event of type ``kind`` at ``t`` (mono ns); None-valued fields left out."""
    body: dict[str, Any] = {"exception": kind, "mono_ns": t}
    body.update({k: v for k, v in fields.items() if v is not None})
    return StationEvent("exception", station, body, PRIORITY_EXCEPTION)


def code_entry(p: Passage, code: str, check: CodeCheck) -> dict[str, Any]:
    """One entry of a parcel's ``codes`` list."""
    seen = p.codes[code]
    out: dict[str, Any] = {
        "code": code,
        "carrier": check.carrier,
        "valid": check.valid,
        "reads": seen.reads,
        "devices": list(seen.devices),
        "first_ms": (seen.first_ns - p.opened_ns) / 1e6,
    }
    optional = {
        "role": check.role,
        "check": check.check if check.valid else None,
        "reason": check.reason,
        "matched": check.matched,
        "symbology": seen.symbology,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
