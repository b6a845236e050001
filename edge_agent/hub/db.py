"""PostgreSQL: connect, apply the versioned migrations, write one batch in one transaction.

Readings go through COPY into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
(id) DO NOTHING``: a re-sent reading is a no-op, and a batch of thousands is one round trip.
The other tables are small (parcels, exceptions, alarms, states) and use multi-row
``executemany`` with the same conflict rule, or an upsert where only the latest matters
(KPI snapshots, device states, the agent's status).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import psycopg

from edge_agent.hub.decode import TS_RE, Rows

LOCK_MIGRATE = 0x6564_6765_0001  # advisory lock: one instance migrates, the others wait


def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection with the session settings the hub relies on."""
    conn = psycopg.connect(conninfo, connect_timeout=10, **kwargs)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    out = []
    for f in resources.files("edge_agent.hub.migrations").iterdir():
        name = f.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, f.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply what is missing, each migration in its own transaction; returns what was applied."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS hub_schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM hub_schema_version")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())  # several statements: the simple query protocol
            conn.execute(
                "INSERT INTO hub_schema_version (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(name)
    return applied


_TMP = """CREATE TEMP TABLE IF NOT EXISTS tmp_readings (
    id uuid, agent text, site text, line text, device text, seq bigint, kind text,
    value text, ts timestamptz, payload jsonb) ON COMMIT DELETE ROWS"""
_COLS = "id, agent, site, line, device, seq, kind, value, ts, payload"


def write(conn: psycopg.Connection[Any], rows: Rows) -> int:
    """Write ``rows`` in one transaction (the caller commits by leaving it); returns the number
    of readings that were new."""
    new = 0
    with conn.transaction(), conn.cursor() as cur:
        if rows.readings:
            cur.execute(_TMP)
            with cur.copy(f"COPY tmp_readings ({_COLS}) FROM STDIN") as cp:
                for r in rows.readings:
                    cp.write_row(r)
            cur.execute(
                f"INSERT INTO readings ({_COLS}) SELECT DISTINCT ON (id) {_COLS} FROM tmp_readings"
                " ON CONFLICT (id) DO NOTHING"
            )
            new = cur.rowcount
            cur.execute(
                "INSERT INTO streams AS s (agent, device, max_seq)"
                " SELECT agent, device, max(seq) FROM tmp_readings GROUP BY agent, device"
                " ORDER BY agent, device"
                " ON CONFLICT (agent, device) DO UPDATE SET"
                " max_seq = greatest(s.max_seq, excluded.max_seq), dirty = true, last_at = now()"
            )
        if rows.parcels:
            cur.executemany(
                "INSERT INTO parcels (id, agent, site, line, station, seq, ts, parcel, waybill,"
                " carrier, weight_g, flags, payload) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                rows.parcels,
            )
        if rows.exceptions:
            cur.executemany(
                "INSERT INTO exceptions (id, agent, site, line, station, seq, ts, exception,"
                " parcel, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                rows.exceptions,
            )
        if rows.alarms:
            cur.executemany(
                "INSERT INTO alarms (msg_hash, agent, alarm, ts, payload) VALUES"
                " (%s, %s, %s, to_timestamp(%s), %s) ON CONFLICT DO NOTHING",
                rows.alarms,
            )
        if rows.kpis:
            cur.executemany(
                "INSERT INTO kpi_snapshots AS k (agent, station, ts, payload) VALUES"
                " (%s, %s, %s, %s) ON CONFLICT (agent, station) DO UPDATE SET ts = excluded.ts,"
                " payload = excluded.payload, received_at = now()",
                sorted(rows.kpis.values()),
            )
        if rows.states:
            cur.executemany(
                "INSERT INTO device_states (agent, device, state, reason, payload) VALUES"
                " (%s, %s, %s, %s, %s) ON CONFLICT (agent, device) DO UPDATE SET"
                " state = excluded.state, reason = excluded.reason, payload = excluded.payload,"
                " received_at = now()",
                sorted(rows.states.values()),
            )
        _statuses(cur, rows)
        if rows.seen:
            cur.executemany(
                "INSERT INTO agents (agent, site, line) VALUES (%s, %s, %s)"
                " ON CONFLICT (agent) DO UPDATE SET last_seen = now()",
                sorted((a, s, line) for a, (s, line) in rows.seen.items()),
            )
        if rows.rejects:
            cur.executemany(
                "INSERT INTO rejects (msg_hash, topic, payload, reason) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                rows.rejects,
            )
    return new


def _statuses(cur: psycopg.Cursor[Any], rows: Rows) -> None:
    for agent, site, line, state, doc, digest in rows.statuses:
        d = doc or {}
        cur.execute(
            "INSERT INTO agent_births (msg_hash, agent, state, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (digest, agent, state, None if doc is None else json.dumps(doc)),
        )
        cur.execute(
            "INSERT INTO agents AS a (agent, site, line, state, version, config_digest, boot_id,"
            " started_at, status_ts, queue_depth, oldest_unsent_s, devices, status, status_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (agent) DO UPDATE SET site = excluded.site, line = excluded.line,"
            " state = excluded.state, version = coalesce(excluded.version, a.version),"
            " config_digest = coalesce(excluded.config_digest, a.config_digest),"
            " boot_id = coalesce(excluded.boot_id, a.boot_id),"
            " started_at = coalesce(excluded.started_at, a.started_at),"
            " status_ts = excluded.status_ts, queue_depth = excluded.queue_depth,"
            " oldest_unsent_s = excluded.oldest_unsent_s,"
            " devices = coalesce(excluded.devices, a.devices), status = excluded.status,"
            " status_at = now(), last_seen = now()",
            (
                agent,
                site,
                line,
                state,
                _s(d.get("version")),
                _s(d.get("config_digest")),
                _s(d.get("boot_id")),
                _t(d.get("started_at")),
                _t(d.get("ts")),
                d.get("queue_depth") if isinstance(d.get("queue_depth"), int) else None,
                _num(d.get("oldest_unsent_s")),
                json.dumps(d["devices"]) if isinstance(d.get("devices"), list) else None,
                None if doc is None else json.dumps(doc),
            ),
        )


def _s(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _t(v: Any) -> str | None:
    """A timestamp only if well-formed: a bad one must not fail the whole batch."""
    return v if isinstance(v, str) and TS_RE.match(v) else None
