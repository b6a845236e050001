"""The MQTT topic tree. Topics are built only from config-validated ids, never from payload.

::

    {prefix}/v1/{site}/{line}/{agent}/reading/{device}   one reading (schema reading.v1)      QoS 1
    {prefix}/v1/{site}/{line}/{agent}/batch              several readings (schema batch.v1)   QoS 1
    {prefix}/v1/{site}/{line}/{agent}/status             "online" / "offline", retained, LWT  QoS 1
    {prefix}/v1/{site}/{line}/{agent}/alarm              alarm events (schema alarm.v1)       QoS 1
    {prefix}/v1/{site}/{line}/{agent}/device/{device}/state   device state, retained          QoS 1
    {prefix}/v1/{site}/{line}/{agent}/parcel/{station}        parcel events (parcel.v1)        QoS 1
    {prefix}/v1/{site}/{line}/{agent}/exception/{station}     exceptions (exception.v1), sent
                                                              ahead of any backlog             QoS 1
    {prefix}/v1/{site}/{line}/{agent}/kpi/{station}           KPI snapshot (kpi.v1), retained  QoS 1

A backend subscribes to ``{prefix}/v1/+/+/+/reading/+`` and ``{prefix}/v1/+/+/+/batch`` and
drops duplicates by the reading ``id``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one agent."""

    prefix: str
    site: str
    line: str
    agent: str

    @property
    def base(self) -> str:
        """Root of this agent's subtree."""
        return f"{self.prefix}/v1/{self.site}/{self.line}/{self.agent}"

    def reading(self, device: str) -> str:
        """Topic of a single reading of ``device``."""
        return f"{self.base}/reading/{device}"

    @property
    def batch(self) -> str:
        """Topic of batched readings (backlog drain)."""
        return f"{self.base}/batch"

    @property
    def status(self) -> str:
        """Retained birth/last-will topic."""
        return f"{self.base}/status"

    @property
    def alarm(self) -> str:
        """Alarm events."""
        return f"{self.base}/alarm"

    def for_row(self, kind: str, source: str) -> str:
        """Topic of a queued row: a reading of a device, or a station's parcel/exception event."""
        if kind == "reading":
            return self.reading(source)
        return f"{self.base}/{kind}/{source}"

    def kpi(self, station: str) -> str:
        """Retained KPI snapshot of ``station``."""
        return f"{self.base}/kpi/{station}"

    def device_state(self, device: str) -> str:
        """Retained state of ``device``."""
        return f"{self.base}/device/{device}/state"
