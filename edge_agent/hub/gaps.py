"""Gaps: every (agent, device) ``seq`` stream checked for holes, holes chased with ``resend``.

One instance at a time does this (a PostgreSQL advisory lock; another instance takes over when
it dies). Every ``gap_scan_s`` it looks at the streams ingest marked dirty, from the stream's
``checked_to`` (below it everything is present, filled or gone) up to the highest seq seen:

* a hole not yet known opens a ``gaps`` row (``missing`` = seqs absent);
* an open gap older than ``gap_grace_s`` gets a ``resend`` command (docs/backend.md §7), again
  every ``resend_retry_s``, at most ``resend_max_tries`` times (a ``busy`` or ``rate_limited``
  refusal is no try), one request per agent at a time; the agent re-publishes the rows
  with their ids and seqs, or answers which ranges are gone (purged, refused at its queue
  bound, unknown), stored in ``gone_ranges``;
* a gap whose seqs are all present closes as ``filled``; all present or gone: ``gone``, with
  the reasons.

Every ``rescan_s`` every stream is checked again from seq 1 (a row deleted from the database
becomes a gap like any other). Holes above the highest seq seen are invisible until a later
reading arrives (the agent's ``status`` shows what it still has to send).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.hub import db
from edge_agent.hub.config import HubConfig
from edge_agent.hub.stats import Stats

log = structlog.get_logger("edge_agent.hub.gaps")
LOCK_GAPS = 0x6564_6765_0002
SCHEMA_COMMAND = "edge-agent/command/v1"

_HOLES = """
SELECT seq_from, seq_to FROM (
  SELECT seq + 1 AS seq_from, lead(seq) OVER (ORDER BY seq) - 1 AS seq_to FROM (
    SELECT %(lo)s::bigint AS seq
    UNION ALL SELECT seq FROM readings WHERE agent = %(a)s AND device = %(d)s AND seq > %(lo)s
  ) s
) h WHERE seq_to >= seq_from ORDER BY seq_from"""
_GONE_OVERLAP = """FROM gone_ranges o WHERE o.agent = g.agent AND o.device = g.device
  AND o.seq_to >= g.seq_from AND o.seq_from <= g.seq_to"""
_MISSING = f"""
UPDATE gaps g SET missing = (g.seq_to - g.seq_from + 1)
  - (SELECT count(*) FROM readings r WHERE r.agent = g.agent AND r.device = g.device
     AND r.seq BETWEEN g.seq_from AND g.seq_to)
  - coalesce((SELECT sum(least(o.seq_to, g.seq_to) - greatest(o.seq_from, g.seq_from) + 1)
     {_GONE_OVERLAP}), 0)
WHERE g.state = 'open' AND g.agent = %(a)s AND g.device = %(d)s"""
_CLOSE = f"""
UPDATE gaps g SET closed_at = now(),
  state = CASE WHEN EXISTS (SELECT 1 {_GONE_OVERLAP}) THEN 'gone' ELSE 'filled' END,
  reason = (SELECT string_agg(DISTINCT o.reason, ',') {_GONE_OVERLAP})
WHERE g.state = 'open' AND g.missing <= 0 AND g.agent = %(a)s AND g.device = %(d)s"""


def scan_stream(conn: psycopg.Connection[Any], agent: str, device: str, lo: int, top: int) -> None:
    """Open new holes of one stream above ``lo``, recount and close its open gaps."""
    p = {"a": agent, "d": device, "lo": lo}
    with conn.transaction():
        holes = conn.execute(_HOLES, p).fetchall()
        for a, b in holes:
            covered = conn.execute(
                "SELECT 1 FROM gaps WHERE agent = %s AND device = %s AND state <> 'filled'"
                " AND seq_from <= %s AND seq_to >= %s",
                (agent, device, a, b),
            ).fetchone()
            if covered is None:
                conn.execute(
                    "INSERT INTO gaps (agent, device, seq_from, seq_to, missing) VALUES"
                    " (%s, %s, %s, %s, %s) ON CONFLICT (agent, device, seq_from) DO UPDATE SET"
                    " seq_to = excluded.seq_to, missing = excluded.missing, state = 'open',"
                    " reason = NULL, opened_at = now(), closed_at = NULL, resend_at = NULL,"
                    " resend_tries = 0",
                    (agent, device, a, b, b - a + 1),
                )
                log.info("gap_opened", agent=agent, device=device, seq_from=a, seq_to=b)
        conn.execute(_MISSING, p)
        for a, b, state in conn.execute(
            _CLOSE + " RETURNING seq_from, seq_to, state", p
        ).fetchall():
            log.info("gap_closed", agent=agent, device=device, seq_from=a, seq_to=b, state=state)
        first = conn.execute(
            "SELECT min(seq_from) FROM gaps WHERE agent = %s AND device = %s AND state = 'open'",
            (agent, device),
        ).fetchone()
        checked = top if first is None or first[0] is None else int(first[0]) - 1
        conn.execute(
            "UPDATE streams SET checked_to = %s, dirty = (max_seq <> %s)"
            " WHERE agent = %s AND device = %s",
            (checked, top, agent, device),
        )


def scan(conn: psycopg.Connection[Any], rescan: bool = False) -> None:
    """Scan every dirty stream (every stream from seq 1 when ``rescan``)."""
    if rescan:
        with conn.transaction():
            conn.execute("UPDATE streams SET checked_to = 0, dirty = true")
    streams = conn.execute(
        "SELECT agent, device, checked_to, max_seq FROM streams WHERE dirty"
    ).fetchall()
    conn.commit()
    for agent, device, lo, top in streams:
        scan_stream(conn, agent, device, int(lo), int(top))


#: Refusals of a ``resend`` the agent answers without trying (docs/backend.md §7).
UNTRIED = frozenset({"busy", "rate_limited"})


def request_resends(conn: psycopg.Connection[Any], cfg: HubConfig, client: mqtt.Client) -> int:
    """Send ``resend`` for open gaps past their grace period; returns how many were sent."""
    h = cfg.hub
    # One request per agent at a time (the agent serves one resend at a time and refuses the
    # others "busy"): its oldest due gap, and none while a request to it is unanswered and
    # younger than resend_retry_s.
    due = conn.execute(
        "SELECT DISTINCT ON (g.agent) g.agent, g.device, g.seq_from, g.seq_to, a.site, a.line"
        " FROM gaps g JOIN agents a USING (agent) WHERE g.state = 'open'"
        " AND g.opened_at < now() - make_interval(secs => %(grace)s)"
        " AND g.resend_tries < %(tries)s"
        " AND (g.resend_at IS NULL OR g.resend_at < now() - make_interval(secs => %(retry)s))"
        " AND NOT EXISTS (SELECT 1 FROM gaps w WHERE w.agent = g.agent AND w.state = 'open'"
        " AND w.resend_at >= now() - make_interval(secs => %(retry)s)"
        " AND (w.resend_answered_at IS NULL OR w.resend_answered_at < w.resend_at))"
        " ORDER BY g.agent, g.opened_at, g.device, g.seq_from LIMIT 100",
        {"grace": h.gap_grace_s, "tries": h.resend_max_tries, "retry": h.resend_retry_s},
    ).fetchall()
    conn.commit()
    sent = 0
    for agent, device, a, b, site, line in due:
        rid = str(uuid.uuid4())
        base = f"{h.topic_prefix}/v1/{site}/{line}/{agent}"
        reply = f"{base}/response/{h.instance}"
        cmd: dict[str, Any] = {
            "schema": SCHEMA_COMMAND,
            "id": rid,
            "args": {"device": device, "seq_from": a, "seq_to": min(b, a + h.resend_max_span - 1)},
        }
        props = None
        if cfg.mqtt.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = reply
            props.CorrelationData = rid.encode()
        else:
            cmd.update(reply_to=reply, correlation=rid)
        client.publish(f"{base}/cmd/resend", json.dumps(cmd), qos=1, properties=props)
        with conn.transaction():
            conn.execute(
                "UPDATE gaps SET resend_at = now(), resend_tries = resend_tries + 1,"
                " resend_id = %s WHERE agent = %s AND device = %s AND seq_from = %s",
                (rid, agent, device, a),
            )
        log.info("gap_resend_requested", agent=agent, device=device, seq_from=a, seq_to=b, id=rid)
        sent += 1
    return sent


def record_responses(
    conn: psycopg.Connection[Any], responses: list[tuple[str, dict[str, Any]]], stats: Stats
) -> None:
    """Store what ``resend`` responses say is gone, and mark those streams for a scan."""
    with conn.transaction():
        for agent, doc in responses:
            rid = doc.get("request_id")
            rid = rid if isinstance(rid, str) and _is_uuid(rid) else None
            if doc.get("command") != "resend":
                continue
            if not doc.get("ok"):
                e = doc.get("error")
                err: dict[str, Any] = e if isinstance(e, dict) else {}
                code = err.get("code", "unknown")
                reason = f"resend_refused:{code}"
                log.warning("gap_resend_refused", agent=agent, id=rid, error=err)
                # busy / rate_limited: the agent did not try; that costs no try (a gap whose
                # tries a busy agent used up was never asked for again, though the agent had it)
                untried = 1 if code in UNTRIED else 0
                if rid:
                    conn.execute(
                        "UPDATE gaps SET reason = %s, resend_answered_at = now(),"
                        " resend_tries = greatest(resend_tries - %s, 0) WHERE resend_id = %s",
                        (reason, untried, rid),
                    )
                continue
            if rid:
                conn.execute(
                    "UPDATE gaps SET resend_answered_at = now() WHERE resend_id = %s", (rid,)
                )
            res = doc.get("result")
            result: dict[str, Any] = res if isinstance(res, dict) else {}
            device = result.get("device")
            gone = result.get("gone") or []
            log.info("gap_resend_answered", agent=agent, id=rid, sent=result.get("sent"))
            if not isinstance(device, str) or not isinstance(gone, list):
                continue
            for g in gone:
                a, b, reason = g.get("seq_from"), g.get("seq_to"), g.get("reason")
                if not (isinstance(a, int) and isinstance(b, int) and a <= b):
                    continue
                conn.execute(
                    "INSERT INTO gone_ranges (agent, device, seq_from, seq_to, reason,"
                    " request_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (agent, device, a, b, str(reason or "unknown"), rid),
                )
                stats.gone_ranges += 1
            if gone:
                conn.execute(
                    "UPDATE streams SET dirty = true WHERE agent = %s AND device = %s",
                    (agent, device),
                )


def _is_uuid(s: str) -> bool:
    try:
        uuid.UUID(s)
    except ValueError:
        return False
    return True


class GapTracker:
    """The loop of the instance holding the gap lock."""

    def __init__(
        self, cfg: HubConfig, client: mqtt.Client, stats: Stats, stop: threading.Event
    ) -> None:
        self.cfg, self.client, self.stats, self.stop = cfg, client, stats, stop

    def run(self) -> None:
        """Until stopped: take the lock when free, scan, chase; survive database outages."""
        conn: psycopg.Connection[Any] | None = None
        last_full = time.monotonic()
        while not self.stop.wait(self.cfg.hub.gap_scan_s):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.cfg.conninfo(), autocommit=False)
                    last_full = time.monotonic()
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_GAPS,)).fetchone()
                conn.commit()
                if not got or not got[0]:
                    continue
                full = time.monotonic() - last_full >= self.cfg.hub.rescan_s
                if full:
                    last_full = time.monotonic()
                scan(conn, rescan=full)
                self.stats.resend_requests += request_resends(conn, self.cfg, self.client)
                n = conn.execute("SELECT count(*) FROM gaps WHERE state = 'open'").fetchone()
                conn.commit()
                self.stats.open_gaps = int(n[0]) if n else 0
            except psycopg.Error as err:
                log.warning("gap_scan_failed", error=str(err).strip()[:200])
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()
