"""Config loading: shipped files are valid; errors name file, section, key, expectation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import check_config, load_config
from edge_agent.errors import EX_CONFIG, ConfigError
from tests.harness import ROOT

BASE = """
[node]
site = "S1"
line = "L1"
agent_id = "a1"
[mqtt]
brokers = [{ host = "127.0.0.1", port = 1883 }]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "line.toml"
    p.write_text(BASE + text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    return str(err.value)


def test_demo_config_is_valid() -> None:
    cfg = load_config(ROOT / "config" / "demo.toml")
    kinds = {d.type for d in cfg.devices.values()}
    assert kinds >= {
        "serial_line_scanner",
        "sick_clv",
        "cognex_dataman",
        "datalogic",
        "hid_scanner",
        "mtsics_scale",
        "toledo_continuous",
        "modbus_scale",
    }
    assert list(cfg.stations) == ["induct_1"]


SHIPPED = sorted((ROOT / "config").glob("*.toml")) + sorted(
    (ROOT / "config" / "devices").glob("*.toml")
)


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``edge-agent config check ARGS`` as a technician runs it (no systemd credentials)."""
    base = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
        env={**base, **(env or {})},
    )


def test_every_shipped_config_is_found() -> None:
    names = {p.relative_to(ROOT / "config").as_posix() for p in SHIPPED}
    assert names >= {
        "demo.toml",
        "example.toml",
        "minimal.toml",
        "devices/hid_scanner.toml",
        "devices/modbus_scale.toml",
        "devices/scales.toml",
        "devices/station.toml",
        "devices/tunnel_scanners.toml",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_config_passes_config_check(path: Path) -> None:
    res = check(str(path.relative_to(ROOT)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr == ""
    assert res.stdout.splitlines()[-1].startswith(f"{path.relative_to(ROOT)}: ok (")


def test_example_config_is_valid_with_its_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    (tmp_path / "mqtt_password").chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    example = ROOT / "config" / "example.toml"
    report = check_config(example, strict=False)  # the TLS files live on the line PC only
    assert report.errors == []
    assert report.notes == [
        f"{example}: [mqtt.tls] {key} = '/etc/edge-agent/{name}': no such file on this machine; "
        "not checked here; the service, doctor and `config check --strict` require it"
        for key, name in [
            ("ca_file", "ca.pem"),
            ("cert_file", "client.pem"),
            ("key_file", "client.key"),
        ]
    ]
    cfg = report.config
    assert cfg is not None and cfg.node.agent_id == "szx1-l03-pc1"
    secret = cfg.password()
    assert secret is not None and secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(secret)


def test_unknown_key_is_named_with_valid_choices(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path, '[devices.t1]\ntype = "serial_line_scanner"\nport = "loop://"\nbaudrat = 9600\n'
    )
    assert msg == (
        f"{tmp_path / 'line.toml'}: [devices.t1] unknown key 'baudrat': did you mean 'baudrate'? "
        "(valid: aim_ids, baudrate, bytesize, enabled, exclusive, framing, inter_byte_timeout_ms, "
        "max_frame, noread, parity, port, prefix, stopbits, suffix, terminator, type)"
    )


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[log]\nzzz = 1\n")
    assert msg == f"{tmp_path / 'line.toml'}: [log] unknown key 'zzz' (valid: format, level)"


def test_wrong_value_names_key_and_expectation(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path, '[devices.t1]\ntype = "serial_line_scanner"\nport = "loop://"\nbaudrate = 9601\n'
    )
    assert "[devices.t1] baudrate = 9601: expected 1200, 2400" in msg


def test_out_of_range_in_nested_section(tmp_path: Path) -> None:
    text = (BASE + "keepalive = 1\n").replace("port = 1883 }]", "port = 70000 }]")
    p = tmp_path / "x.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "[mqtt.brokers.0] port = 70000: expected less than or equal to 65535" in str(err.value)
    assert "[mqtt] keepalive = 1: expected greater than or equal to 5" in str(err.value)


def test_unknown_driver_type_lists_valid_types(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[devices.t1]\ntype = "scannr"\n')
    assert "[devices.t1] type = 'scannr': expected one of" in msg and "serial_line_scanner" in msg


@pytest.mark.parametrize("bad", ["t/1", "t+1", "#", "$SYS", "a b"])
def test_device_ids_that_could_change_topics_are_refused(tmp_path: Path, bad: str) -> None:
    msg = error_of(tmp_path, f'[devices."{bad}"]\ntype = "virtual"\n')
    assert msg == (
        f"{tmp_path / 'line.toml'}: [devices.{bad}] device id '{bad}' may contain only letters, "
        "digits, '_' and '-' (1-64 characters), because it becomes an MQTT topic level"
    )


def test_identity_ids_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text(BASE.replace('agent_id = "a1"', 'agent_id = "a/#"'))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == (
        f"{p}: [node] agent_id = 'a/#': expected an id that may contain only letters, digits, "
        "'_' and '-' (1-64 characters), because it becomes an MQTT topic level and part of the "
        "client id"
    )


def test_password_in_toml_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text(BASE + 'password = "hunter2"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "[mqtt] password: secrets are not accepted" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    msg = error_of(tmp_path, f'password_file = "{secret}"\n'.replace("\n", "\n", 1))
    assert "readable or writable by others" in msg and "hunter2" not in msg


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "x.toml"
    p.write_text(BASE + 'username = "u1"\npassword_env = "EA_TEST_PW"\n')
    with pytest.raises(ConfigError, match="EA_TEST_PW is not set"):
        load_config(p)
    monkeypatch.setenv("EA_TEST_PW", "pw1")
    pw = load_config(p).password()
    assert pw is not None and pw.get_secret_value() == "pw1"


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[node\n")
    with pytest.raises(ConfigError, match=r"x.toml: TOML syntax error"):
        load_config(p)


def test_cli_config_check_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(ROOT / "config" / "demo.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad = write(tmp_path, "[queue]\nmax_bytes = 10\n")
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == EX_CONFIG
    assert "[queue] max_bytes = 10: expected greater than or equal to 1048576" in res.stderr


def test_run_with_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    bad = write(
        tmp_path, '[devices.t1]\ntype = "serial_line_scanner"\nport = "loop://"\nframing = "slip"\n'
    )
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
        env={**os.environ},
    )
    assert res.returncode == EX_CONFIG
    assert "[devices.t1] framing = 'slip': expected 'stx_etx' or 'terminator'" in res.stderr
