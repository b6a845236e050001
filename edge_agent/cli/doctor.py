"""``doctor``: every check a technician would make at 3 a.m., each with pass/fail and a fix."""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_agent import control
from edge_agent.cli.common import add_config, add_json, output
from edge_agent.config import AgentConfig, check_config

UDEV_RULES = Path("/etc/udev/rules.d/99-edge-agent.rules")
MIN_FREE = 200 << 20


@dataclass
class Check:
    """One line of the report."""

    name: str
    ok: bool | None  # None: could not tell (warning)
    detail: str
    fix: str = ""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``doctor``."""
    p = sub.add_parser(
        "doctor", help="check config, disk, permissions, ports, clock, broker, daemon"
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_doctor)


def _config(path: str) -> tuple[Check, AgentConfig | None]:
    """Strict, as the service loads it: the password source and TLS files must be readable."""
    report = check_config(path, strict=True)
    fix = f"edit {path}; check with `edge-agent config check --strict {path}`"
    if report.errors:
        return Check("config", False, "\n".join(report.errors), fix), report.config
    cfg = report.config
    assert cfg is not None  # no errors: every section validated
    return Check("config", True, f"{path} valid, {len(cfg.devices)} devices"), cfg


def _state_dir(cfg: AgentConfig) -> Check:
    d = cfg.queue.path.parent
    if not d.exists():
        return Check("state dir", False, f"{d} missing", f"mkdir -p {d} (systemd StateDirectory=)")
    if not os.access(d, os.W_OK):
        return Check(
            "state dir", False, f"{d} not writable by uid {os.getuid()}", f"chown edge-agent {d}"
        )
    free = shutil.disk_usage(d).free
    ok = free >= MIN_FREE
    return Check(
        "state dir",
        ok,
        f"{d} writable, {free >> 20} MiB free",
        "" if ok else "free disk space: the queue needs room during outages",
    )


def _groups() -> Check:
    if os.getuid() == 0:
        return Check("permissions", True, "running as root (the service runs as edge-agent)")
    user = pwd.getpwuid(os.getuid()).pw_name
    names = {grp.getgrgid(g).gr_name for g in os.getgroups()}
    missing = {"dialout", "plugdev"} - names
    if not missing or UDEV_RULES.exists():
        return Check(
            "permissions",
            True,
            f"{user} in {sorted(names & {'dialout', 'plugdev'})}"
            f"{'; udev rules installed' if UDEV_RULES.exists() else ''}",
        )
    return Check(
        "permissions",
        False,
        f"{user} not in {sorted(missing)}",
        f"sudo usermod -aG {','.join(sorted(missing))} {user}, or install "
        "systemd/99-edge-agent.rules",
    )


def _ports(cfg: AgentConfig) -> list[Check]:
    out = []
    for dev_id, dev in cfg.devices.items():
        port = getattr(dev, "port", None)
        if not isinstance(port, str) or not port.startswith("/"):
            continue
        ok = Path(port).exists()
        out.append(
            Check(
                f"port {dev_id}",
                ok,
                port if ok else f"{port} not present",
                ""
                if ok
                else "check the cable/adapter; `edge-agent ports` lists what is plugged in",
            )
        )
    return out


def _clock() -> Check:
    if shutil.which("timedatectl"):
        res = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
        if res.returncode == 0 and res.stdout.strip() in ("yes", "no"):
            ok = res.stdout.strip() == "yes"
            return Check(
                "clock",
                ok,
                f"NTP synchronised: {res.stdout.strip()}",
                "" if ok else "enable systemd-timesyncd or chrony",
            )
    return Check(
        "clock",
        None,
        "cannot tell whether the clock is synchronised (no timedatectl)",
        "readings carry mono_ns+boot_id; still, run NTP on line PCs",
    )


def _broker(cfg: AgentConfig) -> Check:
    b = cfg.mqtt.brokers[0]
    try:
        socket.create_connection((b.host, b.port), 3).close()
    except OSError as err:
        return Check(
            "broker",
            False,
            f"{b.host}:{b.port}: {err}",
            "check network/firewall; `edge-agent broker-test` shows which step fails",
        )
    return Check("broker", True, f"{b.host}:{b.port} reachable (TCP)")


def _daemon(cfg: AgentConfig) -> Check:
    try:
        st = control.request(cfg.control.path(), {"cmd": "status"})["status"]
    except (OSError, ValueError, KeyError) as err:
        return Check(
            "daemon",
            False,
            f"not answering on {cfg.control.path()}: {err}",
            "systemctl status edge-agent; journalctl -u edge-agent",
        )
    down = [d for d, v in st["devices"].items() if v["state"] != "connected"]
    ok = st["broker"]["connected"] and not down
    detail = st["summary"] + (f"; not connected: {', '.join(down)}" if down else "")
    return Check("daemon", ok, detail, "" if ok else "`edge-agent status` shows why")


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check; exit 1 if any failed."""
    first, cfg = _config(args.config)
    checks = [first]
    if cfg is not None:
        checks += [_state_dir(cfg), _groups(), *_ports(cfg), _clock(), _broker(cfg), _daemon(cfg)]
    output(args, [asdict(c) for c in checks], _human)
    return 0 if all(c.ok is not False for c in checks) else 1


def _human(items: list[dict[str, object]]) -> str:
    mark = {True: "PASS", False: "FAIL", None: "WARN"}
    lines = []
    for c in items:
        detail = str(c["detail"]).replace("\n", "\n" + " " * 22)  # one config error a line
        lines.append(f"[{mark[c['ok']]}] {c['name']:14} {detail}")  # type: ignore[index]
        if c["fix"]:
            lines.append(f"{'':22}fix: {c['fix']}")
    return "\n".join(lines)
