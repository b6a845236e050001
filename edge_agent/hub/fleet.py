"""The fleet view (``edge-agent hub status``) and the gap report (``edge-agent hub gaps``).

Everything is computed in SQL from what the hub stored, so a backend team gets the same
numbers from ``psql``. Station KPIs come from the parcel and exception events over the last
``kpi_window_h`` hours, not from the agents' own snapshots:

* no-read rate = parcels flagged ``noread`` / parcels (the scanner manuals' 0.2 % target);
* reconciliation errors = parcels without a chosen waybill or without a stable weight
  (flags ``no_weight``/``unstable_weight``) / parcels (the 0.5 % target).

Open alarms are the alarms of the last hour since the agent's latest ``online`` birth (an
alarm has no "cleared" message; a restart starts afresh).

An agent is highlighted when it is offline (not a clean stop), has open gaps, devices offline,
or a station above a threshold.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from edge_agent.hub.config import HubConfig

_AGENTS = """
SELECT a.agent, a.site, a.line, coalesce(a.state, 'unknown') AS state, a.version,
  a.config_digest, a.last_seen, extract(epoch FROM now() - a.last_seen) AS last_seen_s,
  a.queue_depth, a.oldest_unsent_s,
  (SELECT count(*) FROM alarms al WHERE al.agent = a.agent
     AND al.received_at >= greatest(now() - interval '1 hour', (SELECT max(b.received_at)
       FROM agent_births b WHERE b.agent = a.agent AND b.state = 'online')))
     AS open_alarms,
  (SELECT coalesce(array_agg(d.device ORDER BY d.device), '{}') FROM device_states d
     WHERE d.agent = a.agent AND d.state <> 'connected') AS devices_offline,
  (SELECT count(*) FROM gaps g WHERE g.agent = a.agent AND g.state = 'open') AS open_gaps,
  (SELECT coalesce(sum(g.missing), 0) FROM gaps g WHERE g.agent = a.agent AND g.state = 'open')
     AS missing
FROM agents a ORDER BY a.site, a.line, a.agent"""

_STATIONS = """
SELECT p.agent, p.station, count(*) AS parcels,
  count(*) FILTER (WHERE 'noread' = ANY (p.flags)) AS noreads,
  count(*) FILTER (WHERE p.waybill IS NULL OR p.flags && ARRAY['no_weight', 'unstable_weight'])
     AS unreconciled,
  (SELECT count(*) FROM exceptions e WHERE e.agent = p.agent AND e.station = p.station
     AND e.ts > now() - make_interval(secs => %(h)s * 3600)) AS exceptions
FROM parcels p WHERE p.ts > now() - make_interval(secs => %(h)s * 3600)
GROUP BY p.agent, p.station ORDER BY p.agent, p.station"""


def fleet(conn: psycopg.Connection[Any], cfg: HubConfig) -> dict[str, Any]:
    """The whole fleet view as one JSON-ready dict."""
    h = cfg.hub
    with conn.cursor(row_factory=dict_row) as cur:
        agents = cur.execute(_AGENTS).fetchall()
        stations = cur.execute(_STATIONS, {"h": h.kpi_window_h}).fetchall()
    for s in stations:
        n = s["parcels"]
        s["noread_pct"] = round(100.0 * s["noreads"] / n, 3) if n else None
        s["reconciliation_pct"] = round(100.0 * s["unreconciled"] / n, 3) if n else None
        s["above"] = [
            k
            for k, limit in (
                ("noread_pct", h.noread_threshold_pct),
                ("reconciliation_pct", h.reconciliation_threshold_pct),
            )
            if s[k] is not None and s[k] > limit
        ]
    flagged = {s["agent"] for s in stations if s["above"]}
    for a in agents:
        a["last_seen"] = a["last_seen"].isoformat() if a["last_seen"] else None
        a["last_seen_s"] = float(a["last_seen_s"]) if a["last_seen_s"] is not None else None
        a["missing"] = int(a["missing"])
        a["attention"] = [
            why
            for why, bad in (
                ("offline", a["state"] == "offline"),
                ("gaps", a["open_gaps"] > 0),
                ("devices_offline", bool(a["devices_offline"])),
                ("kpi", a["agent"] in flagged),
                ("alarms", a["open_alarms"] > 0),
            )
            if bad
        ]
    return {
        "agents": agents,
        "stations": stations,
        "thresholds": {
            "noread_pct": h.noread_threshold_pct,
            "reconciliation_pct": h.reconciliation_threshold_pct,
        },
        "kpi_window_h": h.kpi_window_h,
        "open_gaps": sum(a["open_gaps"] for a in agents),
    }


def gap_report(conn: psycopg.Connection[Any], everything: bool = False) -> list[dict[str, Any]]:
    """Open gaps (``everything``: closed ones too), oldest first."""
    where = "" if everything else "WHERE state = 'open'"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT agent, device, seq_from, seq_to, missing, state, reason, opened_at,"
            f" resend_at, resend_tries, closed_at FROM gaps {where}"
            " ORDER BY opened_at, agent, device, seq_from"
        ).fetchall()
    for r in rows:
        for k in ("opened_at", "resend_at", "closed_at"):
            r[k] = r[k].isoformat() if r[k] else None
    return rows


def render(view: dict[str, Any]) -> str:
    """The fleet view for a terminal; ``!`` marks what needs attention."""
    out = [
        f"{'':1} {'agent':<16} {'site/line':<14} {'state':<13} {'version':<8} "
        f"{'last seen':>9} {'queue':>6} {'oldest':>7} {'alarms':>6} {'gaps':>5}  devices offline"
    ]
    for a in view["agents"]:
        mark = "!" if a["attention"] else " "
        seen = f"{a['last_seen_s']:.0f}s" if a["last_seen_s"] is not None else "-"
        oldest = f"{a['oldest_unsent_s']:.0f}s" if a["oldest_unsent_s"] is not None else "-"
        queue = str(a["queue_depth"]) if a["queue_depth"] is not None else "-"
        out.append(
            f"{mark} {a['agent']:<16} {a['site'] + '/' + a['line']:<14} {a['state']:<13} "
            f"{a['version'] or '-':<8} {seen:>9} {queue:>6} {oldest:>7} {a['open_alarms']:>6} "
            f"{a['open_gaps']:>5}  {', '.join(a['devices_offline']) or '-'}"
        )
    t = view["thresholds"]
    out.append("")
    out.append(
        f"stations, last {view['kpi_window_h']:g} h (no-read target {t['noread_pct']} %,"
        f" reconciliation target {t['reconciliation_pct']} %)"
    )
    out.append(f"  {'agent':<16} {'station':<12} {'parcels':>8} {'no-read %':>10} {'recon %':>8}")
    for s in view["stations"]:
        mark = "!" if s["above"] else " "
        nr = "-" if s["noread_pct"] is None else f"{s['noread_pct']:.2f}"
        rc = "-" if s["reconciliation_pct"] is None else f"{s['reconciliation_pct']:.2f}"
        out.append(f"{mark} {s['agent']:<16} {s['station']:<12} {s['parcels']:>8} {nr:>10} {rc:>8}")
    out.append("")
    out.append(f"open gaps: {view['open_gaps']}")
    return "\n".join(out)
