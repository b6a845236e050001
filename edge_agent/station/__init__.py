"""Sorting-station logic: readings of the devices that see one parcel, tied into parcel events.

A :class:`Station` is pure and deterministic (time comes only from ``mono_ns`` arguments).
The daemon feeds it every committed reading and commits the :class:`StationEvent` objects it
returns to the durable queue (exceptions with priority 1, ahead of any backlog). Payload
schemas: ``edge_agent/schemas/parcel.v1.json``, ``exception.v1.json``, ``kpi.v1.json``.
"""

from edge_agent.station.config import KpiThresholds, StationConfig, validate_stations
from edge_agent.station.core import OFFLINE_STATES, Station
from edge_agent.station.events import (
    EXCEPTION_TYPES,
    PRIORITY_EXCEPTION,
    PRIORITY_NORMAL,
    SCHEMA_EXCEPTION,
    SCHEMA_KPI,
    SCHEMA_PARCEL,
    SCHEMAS,
    StationEvent,
)

__all__ = [
    "EXCEPTION_TYPES",
    "OFFLINE_STATES",
    "PRIORITY_EXCEPTION",
    "PRIORITY_NORMAL",
    "SCHEMAS",
    "SCHEMA_EXCEPTION",
    "SCHEMA_KPI",
    "SCHEMA_PARCEL",
    "KpiThresholds",
    "Station",
    "StationConfig",
    "StationEvent",
    "validate_stations",
]
