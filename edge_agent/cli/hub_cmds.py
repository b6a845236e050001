"""``edge-agent hub``: the backend half (docs/hub.md): run, migrate, status, gaps.

The hub's modules (and psycopg, the ``hub`` extra) are imported only when a hub command runs:
an agent installed without the extra keeps every other command.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from edge_agent.cli.common import CommandError, add_json, output

DEFAULT_HUB_CONFIG = "/etc/edge-agent/hub.toml"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``hub`` and its subcommands."""
    hub = sub.add_parser("hub", help="the backend side: MQTT -> PostgreSQL, gaps, fleet view")
    hs = hub.add_subparsers(dest="hub_command", required=True, metavar="SUBCOMMAND")
    run = hs.add_parser("run", help="run one hub instance (the service)")
    migrate = hs.add_parser("migrate", help="apply the schema migrations and exit")
    status = hs.add_parser("status", help="the fleet: agents, devices, gaps, station KPIs")
    gaps = hs.add_parser("gaps", help="open seq gaps (--all: closed ones too)")
    gaps.add_argument("--all", action="store_true", help="filled and gone gaps too")
    for p, func in ((run, cmd_run), (migrate, cmd_migrate), (status, cmd_status), (gaps, cmd_gaps)):
        p.add_argument(
            "-c",
            "--config",
            default=os.environ.get("EDGE_AGENT_HUB_CONFIG", DEFAULT_HUB_CONFIG),
            help="hub config (default: $EDGE_AGENT_HUB_CONFIG or %(default)s)",
        )
        if p is not run:
            add_json(p)
        p.set_defaults(func=func)


def _config(args: argparse.Namespace) -> Any:
    try:
        from edge_agent.hub.config import load_hub_config
    except ImportError as err:  # psycopg absent: the agent was installed without the extra
        msg = f"the hub needs the 'hub' extra (pip install 'edge-agent[hub]'): {err}"
        raise CommandError(msg) from err
    return load_hub_config(args.config)


def _connect(cfg: Any) -> Any:
    import psycopg

    from edge_agent.hub import db

    try:
        return db.connect(cfg.conninfo())
    except psycopg.OperationalError as err:
        msg = f"cannot connect to PostgreSQL ({cfg.database.dsn}): {str(err).strip()}"
        raise CommandError(msg) from err


def cmd_run(args: argparse.Namespace) -> int:
    """The service's main loop."""
    cfg = _config(args)
    from edge_agent.hub.service import serve
    from edge_agent.logs import setup

    setup(cfg.log.level, cfg.log.format)
    return serve(cfg)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply missing migrations."""
    from edge_agent.hub import db

    cfg = _config(args)
    with _connect(cfg) as conn:
        applied = db.migrate(conn)
    output(args, {"applied": applied}, lambda o: "applied: " + (", ".join(o["applied"]) or "-"))
    return 0


def _query(cfg: Any, func: Any, *args: Any) -> Any:
    """Run ``func(conn, *args)``; a database error is one line, not a traceback."""
    import psycopg

    with _connect(cfg) as conn:
        try:
            return func(conn, *args)
        except psycopg.Error as err:
            msg = f"PostgreSQL: {str(err).strip().splitlines()[0]}"
            raise CommandError(msg) from err


def cmd_status(args: argparse.Namespace) -> int:
    """The fleet view."""
    from edge_agent.hub import fleet

    cfg = _config(args)
    view = _query(cfg, fleet.fleet, cfg)
    output(args, view, fleet.render)
    return 0


def cmd_gaps(args: argparse.Namespace) -> int:
    """The gap report."""
    from edge_agent.hub import fleet

    cfg = _config(args)
    rows = _query(cfg, fleet.gap_report, args.all)

    def human(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "no gaps" if args.all else "no open gaps"
        lines = [f"{'agent':<16} {'device':<12} {'seqs':>17} {'missing':>8} {'state':<7} reason"]
        for r in rs:
            seqs = f"{r['seq_from']}-{r['seq_to']}"
            lines.append(
                f"{r['agent']:<16} {r['device']:<12} {seqs:>17} {r['missing']:>8} "
                f"{r['state']:<7} {r['reason'] or '-'} (resends: {r['resend_tries']})"
            )
        return "\n".join(lines)

    output(args, rows, human)
    return 0
