"""The technician's CLI, each command a subprocess against a running daemon, broker, simulator."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.cognex_dataman import CognexDatamanDriver
from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.driver import ModbusScaleDriver
from edge_agent.cli.daemon_cmds import render_device
from edge_agent.errors import EX_CONFIG
from simulators.modbus_scale import DEFAULT_MAP, ScaleSim, ScaleSimConfig
from simulators.mosquitto import Mosquitto, free_port
from simulators.serial_line_scanner import ScannerSim
from tests.harness import ROOT, Agent, Subscriber, acl_broker_and_config, agent_config
from tests.test_e2e import received, scanner_device
from tests.tls import make_ca, make_server_cert

Factory = Callable[..., Any]


def cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


class Line:
    """A running line: broker, backend, one scanner, the daemon (with metrics on)."""

    def __init__(
        self,
        tmp: Path,
        broker: Mosquitto,
        backend: Subscriber,
        sim: ScannerSim,
        agent: Agent,
        cfg: Path,
        metrics_port: int,
    ) -> None:
        self.tmp, self.broker, self.backend, self.sim = tmp, broker, backend, sim
        self.agent, self.cfg, self.metrics_port = agent, cfg, metrics_port


@pytest.fixture
def line(
    tmp_path: Path, broker: Mosquitto, backend: Subscriber, scanner: Factory, agent_factory: Factory
) -> Iterator[Line]:
    sim = scanner("scan", rate=20, seed=31)
    port = free_port()
    cfg = agent_config(
        tmp_path,
        broker.port,
        {"scan_1": scanner_device(sim)},
        sections=f"[metrics]\nenabled = true\nport = {port}",
    )
    agent = agent_factory(cfg)
    agent.start()
    sim.start(count=0)
    assert backend.wait_for(lambda: len(received(backend, "scan_1")) >= 10, 10)
    yield Line(tmp_path, broker, backend, sim, agent, cfg, port)
    sim.stop()


def test_status_human_and_json(line: Line) -> None:
    time.sleep(1.2)
    res = cli("status", "-c", str(line.cfg), "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    dev = st["devices"]["scan_1"]
    assert dev["state"] == "connected" and dev["readings"] >= 10
    assert dev["last_reading_age_s"] < 2 and dev["type"] == "serial_line_scanner"
    assert st["broker"]["connected"] and st["broker"]["last_puback_age_s"] < 2
    assert st["queue"]["accepted"] >= 10 and st["queue"]["disk_bytes"] > 0
    human = cli("status", "-c", str(line.cfg))
    assert human.returncode == 0
    out = human.stdout
    assert re.search(r"^  scan_1  serial_line_scanner +connected$", out, re.M), out
    # the device's port, its last reading (a code: no unit), readings and reconnects in words
    m = re.search(
        rf"^ {{10}}port {re.escape(dev['port'])}; last reading \d+\.\d s ago \((\S+)\); "
        r"(\d+) readings \([\d.]+/min\); rejects none \([\d.]+/min\); 0 reconnects$",
        out,
        re.M,
    )
    assert m is not None and int(m.group(2)) >= 10, out
    assert re.search(r"\d+(\.\d)? (B|KiB|MiB) on disk;", out), out
    assert re.search(
        r"^broker: connected; 127\.0\.0\.1:\d+ MQTT 5; last PUBACK \d+\.\d s ago", out, re.M
    ), out
    assert "never ago" not in out and "port None" not in out


def test_status_says_an_unplugged_scanner_is_not_present(line: Line) -> None:
    port = str(line.sim.port.link)
    line.sim.port.unplug()  # the by-id symlink goes away with the pty, as with a pulled cable
    deadline = time.monotonic() + 10
    dev: dict[str, Any] = {}
    while time.monotonic() < deadline:
        res = cli("status", "-c", str(line.cfg), "--json")
        dev = json.loads(res.stdout)["devices"]["scan_1"]
        if dev["reason"] == f"{port}: not present":
            break
        time.sleep(0.2)
    assert (dev["state"], dev["reason"]) == ("reconnecting", f"{port}: not present"), dev
    human = cli("status", "-c", str(line.cfg)).stdout
    assert f"scan_1  serial_line_scanner  reconnecting ({port}: not present)\n" in human, human
    assert "(0.0/min); 1 reconnect\n" in human, human


def test_status_says_why_the_broker_is_down_and_when_it_retries(line: Line) -> None:
    line.broker.stop()

    def broker() -> dict[str, Any]:
        res = cli("status", "-c", str(line.cfg), "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout)["broker"])

    deadline = time.monotonic() + 15
    b = broker()
    while time.monotonic() < deadline and not (
        b["reason"] == "connection refused" and b["next_retry_in_s"] is not None
    ):
        time.sleep(0.3)
        b = broker()
    assert b["connected"] is False and b["reason"] == "connection refused", b
    assert "Connection refused" in b["last_error"], b
    assert 0 <= b["next_retry_in_s"] <= 1, b  # reconnect_max_s = 1 in the test config
    human = cli("status", "-c", str(line.cfg)).stdout
    assert re.search(
        r"^broker: DISCONNECTED \((connection refused|broker closed the connection)\); "
        r"(next try in \d+\.\d s|trying now); 127\.0\.0\.1:",
        human,
        re.M,
    ), human


def test_queue_bad_times_one_line_exit_2(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, free_port(), {})
    for args in (
        ("replay", "--since", "yesterday"),
        ("replay", "--since", "2026-13-05T01:00:00Z"),
        ("purge", "--sent-before", "7 days"),
    ):
        res = cli("queue", *args, "-c", str(cfg))
        option, text = args[1], args[2]
        assert res.returncode == 2, res
        assert res.stderr == (
            f"edge-agent: {option}: cannot read time {text!r}: use ISO 8601 "
            "(2026-12-05T09:00:00+08:00, 2026-12-05T01:00:00Z, or local 2026-12-05 09:00) "
            "or an age (30m, 2h, 1d)\n"
        ), res.stderr
    helptext = " ".join(cli("queue", "replay", "--help").stdout.split())
    assert "(2026-12-05 09:00: read as local time of this PC)" in helptext, helptext


def test_status_without_daemon_fails_clearly(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, free_port(), {})
    res = cli("status", "-c", str(cfg))
    assert res.returncode == 1 and "no daemon answers on" in res.stderr


def test_queue_stats_peek_replay_purge(line: Line) -> None:
    stats = json.loads(cli("queue", "stats", "-c", str(line.cfg), "--json").stdout)
    assert stats["accepted"] >= 10 and stats["pending"] >= 0
    peek = cli("queue", "peek", "5", "-c", str(line.cfg), "--json")
    assert peek.returncode == 0 and isinstance(json.loads(peek.stdout), list)
    before = received(line.backend, "scan_1")
    ids = {r["id"] for r in before}
    rep = cli(
        "queue", "replay", "--since", "1h", "--device", "scan_1", "-c", str(line.cfg), "--json"
    )
    assert rep.returncode == 0, rep.stderr
    replayed = json.loads(rep.stdout)["replayed"]
    assert replayed >= len(before)
    assert line.backend.wait_for(
        lambda: len(received(line.backend, "scan_1")) >= len(before) + len(ids), 10
    )
    after = received(line.backend, "scan_1")
    assert {r["id"] for r in after} >= ids  # same ids: the backend de-duplicates
    # an ISO time with an offset, echoed in UTC before replaying; without a zone: local time
    hour_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    in_utc = hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    shanghai = hour_ago.astimezone(dt.timezone(dt.timedelta(hours=8)))
    for since, env in (
        (shanghai.isoformat(), None),
        (in_utc, None),
        (shanghai.strftime("%Y-%m-%d %H:%M:%S"), {"TZ": "Asia/Shanghai"}),
    ):
        rep = cli("queue", "replay", "--since", since, "--device", "scan_1", "-c", str(line.cfg),
                  env=env)  # fmt: skip
        assert rep.returncode == 0, rep.stderr
        assert re.match(
            rf"replaying readings of scan_1 since {in_utc} \(UTC\): \d+ in the queue \.\.\.\n",
            rep.stdout,
        ), (since, rep.stdout)
    purge = cli("queue", "purge", "--sent-before", "0s", "-c", str(line.cfg), "--json")
    assert purge.returncode == 0, purge.stderr
    out = json.loads(purge.stdout)
    assert out["via"] == "daemon" and out["deleted"] >= 10


def test_broker_test_ok(line: Line) -> None:
    res = cli("broker-test", "-c", str(line.cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "round trip       ok" in res.stdout
    js = json.loads(cli("broker-test", "-c", str(line.cfg), "--json").stdout)
    assert js["ok"] and js["round_trip_ms"] > 0


def test_broker_test_wrong_ca_names_tls_step(tmp_path: Path) -> None:
    bdir = tmp_path / "tlsb"
    bdir.mkdir()
    ca, key, cert = make_ca(bdir, "ca")
    crt, k = make_server_cert(bdir, key, cert, "127.0.0.1")
    broker = Mosquitto(bdir, extra=f"cafile {ca}\ncertfile {crt}\nkeyfile {k}\n")
    broker.start()
    try:
        good = agent_config(tmp_path, broker.port, {}, f'[mqtt.tls]\nca_file = "{ca}"')
        ok = json.loads(cli("broker-test", "-c", str(good), "--json").stdout)
        assert ok["ok"] and ok["tls"]["verified"] and ok["tls"]["subject"] == "commonName=broker"
        other, _, _ = make_ca(tmp_path, "other")
        bad = agent_config(tmp_path, broker.port, {}, f'[mqtt.tls]\nca_file = "{other}"')
        res = cli("broker-test", "-c", str(bad))
        assert res.returncode == 1
        assert "certificate NOT verified" in res.stdout and "FAILED at tls" in res.stdout
    finally:
        broker.stop()


def test_broker_test_acl_denied_reason_in_words(tmp_path: Path) -> None:
    acl = "topic write edge/v1/T1/L1/test-agent/status\n"
    broker, cfg = acl_broker_and_config(tmp_path, acl)
    broker.start()
    try:
        res = cli("broker-test", "-c", str(cfg))
        assert res.returncode == 1
        assert "FAILED at publish: Not authorized (0x87)" in res.stdout, res.stdout
    finally:
        broker.stop()


def test_doctor_reports_each_check(line: Line) -> None:
    res = cli("doctor", "-c", str(line.cfg), "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["config"]["ok"] and checks["state dir"]["ok"]
    assert checks["broker"]["ok"] and checks["daemon"]["ok"]
    assert checks["port scan_1"]["ok"]
    human = cli("doctor", "-c", str(line.cfg)).stdout
    assert "[PASS] daemon" in human
    line.sim.port.unplug()
    time.sleep(0.5)
    down = {c["name"]: c for c in json.loads(cli("doctor", "-c", str(line.cfg), "--json").stdout)}
    assert down["port scan_1"]["ok"] is False and "fix" in down["port scan_1"]
    line.sim.port.plug()


def test_ports_lists_configured_devices(line: Line) -> None:
    res = cli("ports", "-c", str(line.cfg), "--json")
    out = json.loads(res.stdout)
    assert out["configured"] == [
        {
            "device": "scan_1",
            "type": "serial_line_scanner",
            "port": str(line.sim.port.link),
            "present": True,
        }
    ]
    assert res.returncode == 0


def test_probe_refuses_port_held_by_daemon_and_works_via_daemon(line: Line) -> None:
    res = cli("probe", "-t", "serial_line_scanner", "-p", str(line.sim.port.link), "--seconds", "1")
    assert res.returncode == 1 and "the running daemon holds this port" in res.stderr, res.stderr
    via = cli("probe", "scan_1", "--via-daemon", "--count", "3", "-c", str(line.cfg), "--json")
    assert via.returncode == 0, via.stderr
    events = [json.loads(x) for x in via.stdout.splitlines()]
    assert len([e for e in events if e["event"] == "reading"]) == 3
    assert all(e["device"] == "scan_1" for e in events)


def test_probe_direct_shows_readings_rejects_and_trace(tmp_path: Path, scanner: Factory) -> None:
    sim = scanner("free", rate=20, seed=32, faults={"garble": 0.3})
    sim.start(count=0)
    trace = tmp_path / "trace.txt"
    res = cli(
        "probe",
        "-t",
        "serial_line_scanner",
        "-p",
        str(sim.port.link),
        "--opt",
        "aim_ids=true",
        "--count",
        "8",
        "--trace",
        str(trace),
        "--json",
    )
    sim.stop()
    assert res.returncode == 0, res.stderr
    shown = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(shown) == 8 and all(s["kind"] == "barcode" and s["raw"] for s in shown)
    values = {t.value for t in sim.truth if t.kind == "barcode"}
    assert all(s["value"] in values for s in shown)
    lines = trace.read_text().splitlines()
    assert sum(" frame " in x for x in lines) == 8
    garbled = sum(1 for t in sim.truth if t.kind == "garbled")
    if garbled:
        assert "REJECT garbled" in res.stderr


def _tmux_alive(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], check=False).returncode == 0


def test_monitor_in_a_real_terminal(line: Line) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (scripts/apt-packages.txt installs it)")
    session = f"mon{os.getpid()}"
    cmd = f"{sys.executable} -m edge_agent monitor -c {line.cfg}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "45", "-c", str(ROOT), cmd],
        check=True,
    )
    try:
        time.sleep(4)
        screen = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        newest = received(line.backend, "scan_1")[-1]
        assert "scan_1" in screen and "connected" in screen, screen
        # a reading emitted in the last seconds shows in the scrolling log
        recent = [r["value"] for r in received(line.backend, "scan_1")[-40:]]
        assert any(v in screen for v in recent), (screen, newest)
        assert "q to quit" in screen and "never ago" not in screen, screen
        # q (no Enter) quits: the monitor exits, which ends the tmux session
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _tmux_alive(session):
            time.sleep(0.1)
        assert not _tmux_alive(session), "monitor still running after q"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_metrics_endpoint(line: Line) -> None:
    time.sleep(0.5)
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{line.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'edge_agent_readings_total{device="scan_1"}' in body
    assert "edge_agent_queue_pending" in body and "edge_agent_broker_connected 1.0" in body
    assert "edge_agent_publish_latency_seconds_bucket" in body
    assert 'edge_agent_device_state{device="scan_1",state="connected"} 1.0' in body


def test_simulate_and_help() -> None:
    res = cli("simulate", "serial_line_scanner", "--help")
    assert res.returncode == 0 and "--faults" in res.stdout
    for command in ("status", "monitor", "queue", "broker-test", "doctor", "ports", "probe"):
        assert cli(command, "--help").returncode == 0
    assert cli("no-such-command").returncode == 2


def test_simulate_lists_simulators_and_says_what_to_configure() -> None:
    listing = cli("simulate")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert re.match(r"^serial_line_scanner  Simulator of a serial line scanner ", lines[6]), lines
    assert [ln.split()[0] for ln in lines[:10]] == [
        "cognex_dataman", "datalogic", "hid_scanner", "line", "modbus_scale", "mtsics_scale",
        "serial_line_scanner", "sick_clv", "sma_scale", "toledo_continuous",
    ]  # fmt: skip
    unknown = cli("simulate", "no_such_sim")
    assert unknown.returncode == 1
    assert (
        unknown.stderr == "edge-agent: no simulator 'no_such_sim'; edge-agent simulate lists them\n"
    )
    pty = cli("simulate", "serial_line_scanner", "--count", "1", "--rate", "50")
    assert pty.returncode == 0, pty.stderr
    path = pty.stdout.splitlines()[0]
    assert path.startswith("/dev/pts/")
    assert f'configure port = "{path}"\nCtrl-C to stop\n' in pty.stderr
    tcp = cli("simulate", "modbus_scale", "--transport", "tcp", "--seconds", "0.5")
    assert tcp.returncode == 0, tcp.stderr
    port = re.search(r"Modbus TCP on 127\.0\.0\.1:(\d+),", tcp.stdout)
    assert port is not None, tcp.stdout
    assert f'configure host = "127.0.0.1", tcp_port = {port.group(1)}\nCtrl-C to stop\n' in (
        tcp.stderr
    )


def _device(address: str | None, **kw: Any) -> dict[str, Any]:
    return {
        "type": "modbus_scale", "port": None, "address": address, "state": "reconnecting",
        "reason": "", "readings": 0, "last_reading_age_s": None, "last_value": None,
        "rejects": {}, "readings_per_min": 0.0, "rejects_per_min": 0.0, "reconnects": 0, **kw,
    }  # fmt: skip


def test_render_status_words_for_tcp_devices_and_counts() -> None:
    modbus = ModbusScaleDriver(
        "scale_in",
        ModbusScaleConfig.model_validate(
            {
                "type": "modbus_scale",
                "transport": "tcp",
                "host": "10.0.3.7",
                "tcp_port": 1502,
                "registers": {"weight_register": 0, "unit": "kg", "decimals": 0},
            }
        ),
    )
    cognex = CognexDatamanDriver(
        "dataman_long_name_1",
        CognexDatamanDriver.Config.model_validate(
            {"type": "cognex_dataman", "port": "socket://10.0.3.21:23"}
        ),
    )
    assert (modbus.address, cognex.address) == ("10.0.3.7:1502", "10.0.3.21:23")
    width = len("dataman_long_name_1")
    fresh = render_device("scale_in", _device(modbus.address, reason="connection refused"), width)
    assert fresh == [
        "  scale_in             modbus_scale         reconnecting (connection refused)",
        "                       port 10.0.3.7:1502; last reading never; 0 readings (0.0/min); "
        "rejects none (0.0/min); 0 reconnects",
    ]
    one = _device(
        cognex.address, readings=1, reconnects=1, last_reading_age_s=2.04, last_value="12.345 kg"
    )
    assert render_device("dataman_long_name_1", one, width)[1] == (
        "                       port 10.0.3.21:23; last reading 2.0 s ago (12.345 kg); "
        "1 reading (0.0/min); rejects none (0.0/min); 1 reconnect"
    )


def test_clients_leaving_mid_stream_leave_no_traceback_in_the_daemon_log(line: Line) -> None:
    """monitor quit, probe --via-daemon interrupted: the watcher's socket closes under it."""
    import socket
    import struct

    sock_path = line.tmp / "ctl.sock"
    for linger in (False, True):
        for _ in range(5):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock_path))
            s.sendall(b'{"cmd": "watch"}\n')
            assert s.recv(64).startswith(b'{"ok": true}')
            if linger:  # an abrupt close: the daemon's next write fails at once
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    probe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "probe",
            "scan_1",
            "--via-daemon",
            "-c",
            str(line.cfg),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    time.sleep(2.0)
    probe.terminate()  # like a technician's Ctrl-C
    probe.communicate(timeout=10)
    time.sleep(2.5)  # the daemon's watch loop writes at least once a second: it meets the pipe
    assert cli("status", "-c", str(line.cfg)).returncode == 0  # still serving
    line.agent.stop()
    text = line.agent.log_text()
    assert "Traceback" not in text and "BrokenPipeError" not in text
    line.agent.json_events()  # every line is one JSON object


def test_cli_survives_a_closed_pipe(line: Line) -> None:
    """`edge-agent queue peek | head -1`: the reader went away before the output was written."""
    for args in (("queue", "stats"), ("queue", "peek", "50"), ("status",), ("status", "--json")):
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write now fails with EPIPE
        try:
            res = subprocess.run(
                [sys.executable, "-m", "edge_agent", *args, "-c", str(line.cfg)],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                timeout=30,
                check=False,
            )
        finally:
            os.close(write_end)
        assert res.returncode == 0, (args, res.stderr)
        assert res.stderr == "", (args, res.stderr)
    shell = subprocess.run(
        f"{sys.executable} -m edge_agent queue peek 50 -c {line.cfg} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert shell.returncode == 0 and len(shell.stdout.splitlines()) == 1
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr


# ---- probe --opt: the config check's own messages; Modbus TCP without a dummy --port ---------
def test_probe_opt_errors_are_config_check_lines() -> None:
    res = cli(
        "probe", "-t", "serial_line_scanner", "-p", "loop://",
        "--opt", "baudrate=9601", "--opt", "framng=stx_etx",
    )  # fmt: skip
    assert res.returncode == EX_CONFIG
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "edge-agent: configuration error:",
        "probe --opt: [devices.probe] baudrate = 9601: expected 1200, 2400, 4800, 9600, 19200, "
        "38400, 57600, 115200 or 230400",
        "probe --opt: [devices.probe] unknown key 'framng': did you mean 'framing'? (valid: "
        "aim_ids, baudrate, bytesize, enabled, exclusive, framing, inter_byte_timeout_ms, "
        "max_frame, noread, parity, port, prefix, stopbits, suffix, terminator, type)",
    ]


def test_probe_opt_without_equals_and_modbus_without_registers() -> None:
    res = cli("probe", "-t", "serial_line_scanner", "-p", "loop://", "--opt", "baudrate")
    assert (res.returncode, res.stderr.splitlines()) == (
        EX_CONFIG,
        [
            "edge-agent: configuration error: probe --opt: 'baudrate': expected KEY=VALUE (JSON "
            "values), e.g. baudrate=9600",
        ],
    )
    res = cli("probe", "-t", "modbus_scale", "--opt", "transport=tcp", "--opt", "host=10.0.0.7:502")
    assert res.returncode == EX_CONFIG and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "edge-agent: configuration error:",
        "probe --opt: [devices.probe] host = '10.0.0.7:502': expected a bare host name or address "
        "(no scheme, port, brackets or '/'); put the port in tcp_port = 502",
        "probe --opt: [devices.probe] missing required key 'registers': a [registers] table with "
        "the indicator's register map, from its manual. Weight indicators have no standard map, "
        "and a built-in default once produced weights 1000x off without a warning (`python -m "
        "simulators.modbus_scale --help` prints an example map to adapt)",
    ]
    res = cli("probe", "-t", "serial_line_scanner")
    assert (res.returncode, res.stderr) == (
        1,
        "edge-agent: --type serial_line_scanner needs --port (a pyserial URL or device path)\n",
    )


def test_probe_modbus_tcp_needs_no_port() -> None:
    sim = ScaleSim(ScaleSimConfig(transport="tcp", units=(1,), auto=False, seed=5)).start()
    try:
        sim.place(1, 1234.0)
        regs = json.dumps(DEFAULT_MAP.model_dump(exclude_none=True))
        res = cli(
            "probe", "-t", "modbus_scale", "--opt", "transport=tcp", "--opt", "host=127.0.0.1",
            "--opt", f"tcp_port={sim.server.port}", "--opt", f"registers={regs}",
            "--count", "1", "--seconds", "15", "--json",
        )  # fmt: skip
    finally:
        sim.stop()
    assert res.returncode == 0, res.stderr
    shown = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(s["kind"], s["value"], s["stable"]) for s in shown] == [("weight", 1234.0, True)]


# ---- doctor checks the config as strictly as the service -------------------------------------
def test_doctor_config_is_strict(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, free_port(), {}, f'[mqtt.tls]\nca_file = "{tmp_path}/ca.pem"')
    assert cli("config", "check", str(cfg)).returncode == 0  # a note on a laptop
    res = cli("doctor", "-c", str(cfg), "--json")
    assert res.returncode == 1
    first = json.loads(res.stdout)[0]
    assert first == {
        "name": "config",
        "ok": False,
        "detail": f"{cfg}: [mqtt.tls] ca_file = '{tmp_path}/ca.pem': expected a readable file",
        "fix": f"edit {cfg}; check with `edge-agent config check --strict {cfg}`",
    }
    human = cli("doctor", "-c", str(cfg)).stdout.splitlines()
    assert human[:2] == [
        f"[FAIL] config         {cfg}: [mqtt.tls] ca_file = '{tmp_path}/ca.pem': expected a "
        "readable file",
        f"{'':22}fix: edit {cfg}; check with `edge-agent config check --strict {cfg}`",
    ]


def test_ports_without_a_config_lists_ports_and_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "edge-agent.toml"
    res = cli("ports", env={"EDGE_AGENT_CONFIG": str(missing)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("serial ports:"), res.stdout
    assert f"no config found at {missing}" in res.stdout
    as_json = json.loads(cli("ports", "--json", "-c", str(missing)).stdout)
    assert as_json["configured"] == [] and as_json["config"] is None
    assert "no config found" in as_json["config_note"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    broken = cli("ports", "-c", str(bad))
    assert broken.returncode == 78 and "serial ports:" in broken.stdout
    assert "TOML syntax error" in broken.stdout


def test_ports_offers_an_onboard_uart_only_when_something_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Onboard UARTs (no VID:PID) stood in for by real ptys, as list_ports would report them."""
    import fcntl

    from serial.tools import list_ports
    from serial.tools.list_ports_common import ListPortInfo

    from edge_agent.cli import device_cmds, main

    ptys = {name: os.openpty() for name in ("silent", "chatty", "held", "console")}
    tty = {name: os.ttyname(slave) for name, (_m, slave) in ptys.items()}
    os.write(ptys["chatty"][0], b"0123456789\r\n")  # a scanner's reading, waiting to be read
    fcntl.flock(ptys["held"][1], fcntl.LOCK_EX)  # as the daemon's driver holds its port
    console = tmp_path / "console-active"
    console.write_text(tty["console"][len("/dev/") :] + "\n")
    monkeypatch.setattr(device_cmds, "CONSOLES", console)
    usb = ListPortInfo("/dev/ttyUSB7", skip_link_detection=True)
    usb.vid, usb.pid, usb.description = 0x0403, 0x6001, "FT232R USB UART"
    infos = [usb] + [ListPortInfo(t, skip_link_detection=True) for t in tty.values()]
    monkeypatch.setattr(list_ports, "comports", lambda *_a, **_k: infos)
    try:
        code = main(["ports", "--json", "-c", str(tmp_path / "none.toml"), "--listen", "0.3"])
    finally:
        for m, s in ptys.values():
            os.close(m)
            os.close(s)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    ports = {p["device"]: p for p in out["serial"]}
    assert ports["/dev/ttyUSB7"]["candidate"] is True and ports["/dev/ttyUSB7"]["note"] is None
    assert ports[tty["chatty"]]["candidate"] is True
    assert "bytes received" in ports[tty["chatty"]]["note"]
    assert ports[tty["held"]]["candidate"] is True and "busy" in ports[tty["held"]]["note"]
    assert ports[tty["silent"]]["candidate"] is False
    assert "nothing answered" in ports[tty["silent"]]["note"]
    assert ports[tty["console"]]["candidate"] is False
    assert "console" in ports[tty["console"]]["note"]
    detected = {d["port"] for d in out["detected"] if d["kind"] == "serial_line_scanner"}
    assert detected == {"/dev/ttyUSB7", tty["chatty"], tty["held"]}


def test_uart_check_restores_the_port_settings() -> None:
    import termios

    from edge_agent.cli.device_cmds import uart_answers

    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert uart_answers(os.ttyname(slave), 0.1) == (
            False,
            "nothing answered (no modem line up, no byte in 0.1 s)",
        )
        assert termios.tcgetattr(slave) == before  # canonical mode, echo: as found
    finally:
        os.close(master)
        os.close(slave)
