"""Queued rows -> MQTT messages: the one mapping the publisher and ``queue replay`` share.

Readings that follow each other share one ``batch.v1`` message (a lone reading goes alone on
its device's reading topic); station events (``parcel``, ``exception``, ``kpi``) go one per
message on their own topic, and the latest ``kpi`` snapshot is retained. Keeping this in one
place is what keeps a replay on the same topics as the first delivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edge_agent.outbox import PendingRow
from edge_agent.reading import SCHEMA_BATCH
from edge_agent.topics import Topics


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT PUBLISH (QoS 1) carrying ``rows``."""

    topic: str
    payload: bytes
    retain: bool
    rows: list[PendingRow]


def batch_payload(rows: list[PendingRow]) -> bytes:
    """``{"schema": "edge-agent/batch/v1", "count": N, "readings": [reading.v1, ...]}``."""
    head = f'{{"schema":"{SCHEMA_BATCH}","count":{len(rows)},"readings":['.encode()
    return head + b",".join(r.payload for r in rows) + b"]}"


def message(rows: list[PendingRow], topics: Topics) -> Message:
    """The message for ``rows``: one row of any kind, or a run of readings (a batch)."""
    if len(rows) == 1:
        r = rows[0]
        return Message(topics.for_row(r.kind, r.device), r.payload, r.kind == "kpi", rows)
    assert all(r.kind == "reading" for r in rows), "only readings share a message"
    return Message(topics.batch, batch_payload(rows), False, rows)


def messages(rows: list[PendingRow], topics: Topics) -> Iterator[Message]:
    """``rows`` (in queue order) as messages: runs of readings batched, events one each."""
    while rows:
        if rows[0].kind != "reading":
            yield message(rows[:1], topics)
            rows = rows[1:]
            continue
        run = next((i for i, r in enumerate(rows) if r.kind != "reading"), len(rows))
        yield message(rows[:run], topics)
        rows = rows[run:]


#: Bytes of a PUBLISH besides topic and payload (fixed header, lengths, packet id, properties).
PUBLISH_OVERHEAD = 64


def fit(msgs: Iterator[Message], topics: Topics, max_packet: int | None) -> Iterator[Message]:
    """``msgs`` with every batch that would exceed the broker's Maximum Packet Size split in
    halves until it fits (a lone row is sent as it is: the broker then refuses it, counted)."""
    for m in msgs:
        if max_packet is None or len(m.rows) < 2 or _size(m) <= max_packet:
            yield m
            continue
        half = len(m.rows) // 2
        yield from fit(iter([message(m.rows[:half], topics)]), topics, max_packet)
        yield from fit(iter([message(m.rows[half:], topics)]), topics, max_packet)


def _size(m: Message) -> int:
    return len(m.payload) + len(m.topic.encode()) + PUBLISH_OVERHEAD
