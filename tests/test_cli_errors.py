"""Every CLI command with bad input: a wrong config, no daemon, a closed stdout, a bad ``--opt``,
a bad time. Each must end with a clear one-line error per problem and the documented exit code,
and no Python traceback anywhere (a technician at 3 a.m. reads the first line and acts on it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.errors import EX_CONFIG
from simulators.mosquitto import free_port
from tests.harness import ROOT, agent_config

#: Every command that reads the daemon's config, as a technician types it (``-c`` appended).
COMMANDS: list[list[str]] = [
    ["run"],
    ["status"],
    ["status", "--json"],
    ["monitor", "--once"],
    ["queue", "stats"],
    ["queue", "peek", "5"],
    ["queue", "replay", "--since", "1h"],
    ["queue", "purge", "--sent-before", "7d"],
    ["broker-test", "--timeout", "1"],
    ["doctor"],
    ["ports"],
    ["probe", "scan_1", "--seconds", "1"],
]


def run(
    args: list[str], stdout: int | None = subprocess.PIPE, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
        env=env,
    )


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    for stream in (res.stdout or "", res.stderr):
        assert "Traceback" not in stream and 'File "' not in stream, stream


def name(cmd: list[str]) -> str:
    return " ".join(cmd)


@pytest.mark.parametrize("cmd", COMMANDS, ids=name)
def test_missing_config_is_one_line_exit_78(tmp_path: Path, cmd: list[str]) -> None:
    missing = tmp_path / "nope.toml"
    res = run([*cmd, "-c", str(missing)])
    no_traceback(res)
    if cmd[0] == "doctor":  # doctor reports it as its first failed check and goes on
        assert res.returncode == 1
        assert res.stdout.splitlines()[0] == f"[FAIL] config         {missing}: file not found"
        return
    if cmd[0] == "ports":  # ports works without a config: it says so and lists the ports
        assert res.returncode == 0, res.stderr
        assert f"no config found at {missing}" in res.stdout
        return
    assert res.returncode == EX_CONFIG
    assert res.stderr.splitlines() == [
        f"edge-agent: configuration error: {missing}: file not found"
    ]


@pytest.mark.parametrize("cmd", COMMANDS, ids=name)
def test_invalid_config_lists_every_error_one_per_line(tmp_path: Path, cmd: list[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[node]\nsite = "hub 7"\nline = "L1"\nagent_id = "a1"\n'
        '[mqtt]\nbrokers = [{ host = "tcp://10.0.0.5:1883" }]\n'
        '[devices.scan_1]\ntype = "serial_line_scanner"\nport = "/dev/edge/s1"\nbaudrat = 9600\n'
    )
    res = run([*cmd, "-c", str(bad)])
    no_traceback(res)
    out = res.stdout if cmd[0] in ("doctor", "ports") else res.stderr
    errors = [line for line in out.splitlines() if f"{bad}: [" in line]
    got = " | ".join(errors)
    assert len(errors) == 3, out
    assert "site = 'hub 7'" in got and "put the port in port = 1883" in got
    assert "unknown key 'baudrat': did you mean 'baudrate'?" in got
    assert res.returncode == (1 if cmd[0] == "doctor" else EX_CONFIG)
    if cmd[0] not in ("doctor", "ports"):  # those two report it among their other findings
        assert res.stderr.splitlines()[0] == "edge-agent: configuration error:"
        assert len(res.stderr.splitlines()) == 1 + 3


@pytest.fixture
def down(tmp_path: Path) -> Path:
    """A valid config whose daemon never ran: no queue, no control socket, no broker."""
    return agent_config(
        tmp_path, free_port(), {"scan_1": {"type": "serial_line_scanner", "port": "loop://"}}
    )


@pytest.mark.parametrize(
    ("cmd", "first_words"),
    [
        (["status"], "edge-agent: no daemon answers on "),
        (["monitor", "--once"], "edge-agent: no daemon answers on "),
        (["queue", "stats"], "edge-agent: queue "),
        (["queue", "peek", "5"], "edge-agent: queue "),
        (["queue", "replay", "--since", "1h"], "edge-agent: queue "),
        (["queue", "purge", "--sent-before", "7d"], "edge-agent: queue "),
    ],
    ids=lambda v: name(v) if isinstance(v, list) else "",
)
def test_daemon_down_is_one_line_exit_1(down: Path, cmd: list[str], first_words: str) -> None:
    res = run([*cmd, "-c", str(down)])
    no_traceback(res)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(first_words), lines


def test_broker_and_doctor_with_nothing_running_name_the_failing_step(down: Path) -> None:
    res = run(["broker-test", "--timeout", "1", "-c", str(down)])
    no_traceback(res)
    assert res.returncode == 1
    assert "refused" in (res.stdout + res.stderr).lower()
    res = run(["doctor", "-c", str(down)])
    no_traceback(res)
    assert res.returncode == 1
    assert any(line.startswith("[FAIL] daemon") for line in res.stdout.splitlines()), res.stdout


@pytest.mark.parametrize(
    "cmd",
    [
        ["doctor"],
        ["ports"],
        ["status"],
        ["queue", "stats"],
        ["--help"],
        ["queue", "--help"],
    ],
    ids=name,
)
def test_a_closed_stdout_is_no_traceback(down: Path, cmd: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `edge-agent ... | head -0`: every write fails with EPIPE
    try:
        args = cmd if "--help" in cmd else [*cmd, "-c", str(down)]
        res = run(args, stdout=write_end)
    finally:
        os.close(write_end)
    no_traceback(res)
    assert "BrokenPipe" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr


def test_bad_opt_and_bad_times_are_one_line(down: Path) -> None:
    res = run(["probe", "-t", "serial_line_scanner", "-p", "loop://", "--opt", "parity=X"])
    no_traceback(res)
    assert res.returncode == EX_CONFIG
    assert len(res.stderr.splitlines()) == 1 and "parity" in res.stderr
    res = run(["probe", "-t", "serial_line_scanner", "-p", "loop://", "--opt", "{bad json"])
    no_traceback(res)
    assert res.returncode == EX_CONFIG and len(res.stderr.splitlines()) == 1
    for cmd in (
        ["queue", "replay", "--since", "yesterday"],
        ["queue", "replay", "--since", "2026-13-40T99:00"],
        ["queue", "purge", "--sent-before", "7 fortnights"],
    ):
        res = run([*cmd, "-c", str(down)])
        no_traceback(res)
        assert res.returncode == 2, res.stderr  # usage error, as argparse reports it
        last = res.stderr.splitlines()[-1]
        assert "cannot read time" in last, res.stderr
    res = run(["probe", "-c", str(down)])  # neither a device id nor --type
    no_traceback(res)
    assert res.returncode in (1, 2) and len(res.stderr.strip().splitlines()) <= 2
    res = run(["probe", "nosuch", "-c", str(down)])
    no_traceback(res)
    assert res.returncode == 1 and res.stderr.startswith("edge-agent: ") and "nosuch" in res.stderr
    res = run(["simulate", "no_such_simulator"])
    no_traceback(res)
    assert res.returncode in (1, 2) and "no_such_simulator" in res.stderr
    missing = down.parent / "missing.toml"
    res = run(["config", "check", str(missing)])
    no_traceback(res)
    assert res.returncode == EX_CONFIG  # config check: one line per error, then the count
    assert res.stderr.splitlines() == [f"{missing}: file not found", f"{missing}: 1 error"]
