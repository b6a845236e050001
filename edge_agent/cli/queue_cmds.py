"""``queue stats | peek N | replay --since T [--device ID] | purge --sent-before T``.

Reads use their own short read-only WAL transactions, so they never stall the daemon's writer.
``purge`` is a write: it is done by the running daemon's writer thread (asked over the control
socket); only when no daemon answers does the CLI open the file for writing itself, holding the
queue's lock (:mod:`edge_agent.instance`) so that no daemon starts on it meanwhile.
``replay`` re-publishes retained readings (sent or not) with their original ids and seq, so the
backend's de-duplication makes it safe: the data backup and recovery path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from edge_agent import instance
from edge_agent import outbox as q
from edge_agent.cli.common import (
    CommandError,
    UsageError,
    add_config,
    add_json,
    age,
    ask_daemon,
    config,
    output,
)
from edge_agent.config import AgentConfig

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


#: How a time argument is read, for the --help of every option taking one.
TIME_HELP = (
    "ISO 8601 with a zone (2026-12-05T09:00:00+08:00, 2026-12-05T01:00:00Z), or without one "
    "(2026-12-05 09:00: read as local time of this PC), or an age: 90m, 2h, 1d ago"
)


def parse_time(text: str) -> int:
    """``2026-11-24T08:00:00Z``, ``...+08:00``, ``2026-11-24 08:00`` (local time of this PC) or
    ``90m``/``2h``/``1d`` ago -> ns since the epoch.

    Raises:
        ValueError: the text is none of these (the message says what is accepted).
    """
    m = _REL.match(text.strip())
    if m:
        return time.time_ns() - int(float(m.group(1)) * _UNITS[m.group(2)] * 1e9)
    try:
        stamp = dt.datetime.fromisoformat(
            text.strip().replace("Z", "+00:00").replace("z", "+00:00")
        )
    except ValueError:
        msg = (
            f"cannot read time {text!r}: use ISO 8601 (2026-12-05T09:00:00+08:00, "
            "2026-12-05T01:00:00Z, or local 2026-12-05 09:00) or an age (30m, 2h, 1d)"
        )
        raise ValueError(msg) from None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # local time of this PC
    return int(stamp.timestamp() * 1e9)


def time_arg(text: str, option: str) -> int:
    """:func:`parse_time` for a command's ``option``; a bad time is a one-line usage error."""
    try:
        return parse_time(text)
    except ValueError as err:
        msg = f"{option}: {err}"
        raise UsageError(msg) from None


def utc(ns: int) -> str:
    """``2026-12-05T01:00:00Z``: a time as the replay and purge echo it."""
    stamp = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).replace(microsecond=0)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``queue`` and its subcommands."""
    queue = sub.add_parser("queue", help="inspect the SQLite queue (safe while the daemon runs)")
    qs = queue.add_subparsers(dest="queue_command", required=True, metavar="SUBCOMMAND")
    stats = qs.add_parser("stats", help="depth, bytes, oldest unsent, counters")
    peek = qs.add_parser("peek", help="the next N readings waiting to be sent")
    peek.add_argument("n", type=int, nargs="?", default=10)
    replay = qs.add_parser("replay", help="re-publish retained readings (same ids)")
    replay.add_argument("--since", required=True, metavar="TIME", help=TIME_HELP)
    replay.add_argument("--device", help="only this device")
    purge = qs.add_parser("purge", help="delete sent readings sent before a time")
    purge.add_argument("--sent-before", required=True, metavar="TIME", help=TIME_HELP)
    for p, func in ((stats, cmd_stats), (peek, cmd_peek), (replay, cmd_replay), (purge, cmd_purge)):
        add_config(p)
        add_json(p)
        p.set_defaults(func=func)


def _reader(cfg: AgentConfig) -> Any:
    if not cfg.queue.path.exists():
        msg = f"queue {cfg.queue.path} does not exist (has the daemon run with this config?)"
        raise CommandError(msg)
    return q.open_reader(cfg.queue.path)


def cmd_stats(args: argparse.Namespace) -> int:
    """Counters and ages."""
    cfg = config(args)
    con = _reader(cfg)
    try:
        s = q.stats(con)
    finally:
        con.close()
    oldest = None if s.oldest_pending_ns is None else time.time() - s.oldest_pending_ns / 1e9
    path = cfg.queue.path
    disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    out = {**asdict(s), "oldest_pending_age_s": oldest, "disk_bytes": disk, "path": str(path)}
    output(args, out, lambda o: "\n".join(f"{k:22} {v}" for k, v in o.items()))
    return 0


def cmd_peek(args: argparse.Namespace) -> int:
    """The next rows to go out."""
    con = _reader(config(args))
    try:
        rows = q.peek(con, args.n)
    finally:
        con.close()
    now = time.time_ns()
    items = [
        {"n": n, "device": d, "seq": s, "id": i, "age_s": (now - c) / 1e9, **_brief(p)}
        for n, d, s, i, c, p in rows
    ]

    def human(objs: list[dict[str, Any]]) -> str:
        if not objs:
            return "queue empty: nothing waiting to be sent"
        return "\n".join(
            f"#{o['n']:<8} {o['device']:12} seq={o['seq']:<7} {o['kind']:8} {o['value']!s:24} "
            f"age {age(o['age_s'])}  {o['id']}"
            for o in objs
        )

    output(args, items, human)
    return 0


def _brief(payload: bytes) -> dict[str, Any]:
    r = json.loads(payload)
    return {"kind": r.get("kind"), "value": r.get("value"), "ts": r.get("ts")}


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete sent rows older than the cut-off (through the daemon when it runs)."""
    before = time_arg(args.sent_before, "--sent-before")
    cfg = config(args)
    try:
        reply = ask_daemon(cfg, {"cmd": "purge", "sent_before_ns": before})
        deleted, via = int(reply["deleted"]), "daemon"
    except CommandError:
        hint = (
            f"it does not answer on {cfg.control.path()}, so purge cannot go through it: "
            "stop it first (systemctl stop edge-agent)"
        )
        with instance.acquire(cfg.queue.path, hint):  # no daemon may start meanwhile
            outbox = q.Outbox.for_maintenance(cfg.queue.path)
            try:
                deleted, via = outbox.purge_sent_before(before), "direct"
            finally:
                outbox.close()
    output(
        args,
        {"deleted": deleted, "via": via},
        lambda o: (
            f"deleted {o['deleted']} sent "
            f"readings ({'by the running daemon' if via == 'daemon' else 'daemon not running'})"
        ),
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-publish retained rows, each kind on its own topic, with a progress bar; every PUBACK
    is checked (a refusal, e.g. 0x87 not authorised, fails the command and names the code)."""
    from rich.progress import Progress  # noqa: PLC0415

    from edge_agent.cli.broker_cmds import connect_blocking  # noqa: PLC0415
    from edge_agent.messages import messages  # noqa: PLC0415
    from edge_agent.topics import Topics  # noqa: PLC0415

    since = time_arg(args.since, "--since")  # before anything else: a typo costs nothing
    cfg = config(args, secrets=True)
    con = _reader(cfg)
    total = con.execute(
        "SELECT count(*) FROM outbox WHERE created_ns >= ?"
        + (" AND device = ?" if args.device else ""),
        (since, args.device) if args.device else (since,),
    ).fetchone()[0]
    which = f" of {args.device}" if args.device else ""
    print(
        f"replaying readings{which} since {utc(since)} (UTC): {total} in the queue ...",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    n = cfg.node
    topics = Topics(cfg.mqtt.topic_prefix, n.site, n.line, n.agent_id)
    client = connect_blocking(cfg, f"edge-agent-{n.agent_id}-replay")
    window = threading.Semaphore(cfg.mqtt.inflight)
    refused: Counter[str] = Counter()
    rows_of: dict[int, int] = {}

    def on_publish(_c: object, _u: object, mid: int, rc: Any, _p: object = None) -> None:
        if getattr(rc, "is_failure", False):
            refused[f"{rc.value:#04x} {rc}"] += rows_of.get(mid, 0)
        window.release()

    client.on_publish = on_publish
    sent, after, kinds = 0, 0, Counter[str]()
    with Progress(disable=args.json) as bar:
        task = bar.add_task("replaying", total=total)
        while rows := q.fetch_range(con, since, after, cfg.mqtt.batch_max, args.device):
            after = rows[-1].n
            for m in messages(rows, topics):
                window.acquire()
                rows_of[client.publish(m.topic, m.payload, qos=1, retain=m.retain).mid] = len(
                    m.rows
                )
                kinds.update(r.kind for r in m.rows)
                sent += len(m.rows)
                bar.update(task, advance=len(m.rows))
    for _ in range(cfg.mqtt.inflight):
        if not window.acquire(timeout=10):
            raise CommandError("broker did not acknowledge the last replayed messages within 10 s")
    client.disconnect()
    client.loop_stop()
    con.close()
    if refused:
        why = ", ".join(f"{rows} rows: {code}" for code, rows in refused.items())
        msg = (
            f"the broker refused part of the replay ({why}); {sent - refused.total()} acknowledged"
        )
        raise CommandError(msg)
    out = {"replayed": sent, "kinds": dict(kinds)}
    output(
        args,
        out,
        lambda o: (
            f"replayed {o['replayed']} rows (same ids): "
            + ", ".join(f"{v} {k}" for k, v in sorted(o["kinds"].items()))
        ),
    )
    return 0
