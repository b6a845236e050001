"""Config loading: shipped files are valid; errors name file, section, key, expectation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers import DRIVERS
from drivers.modbus_scale.config import ModbusScaleConfig
from edge_agent.config import check_config, load_config
from edge_agent.errors import EX_CONFIG, ConfigError
from simulators.modbus_scale import DEFAULT_MAP
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


def test_queue_gather_ms_is_bounded(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[queue]\ngather_ms = 5\n")).queue.gather_ms == 5
    err = error_of(tmp_path, "[queue]\ngather_ms = 500\n")
    assert err.endswith("line.toml: [queue] gather_ms = 500: expected less than or equal to 50")


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


# ---- every error at once ----------------------------------------------------------------------
MANY_ERRORS = """
[node]
site = "S1"
line = "L 1"
agent_id = "a1"
[mqtt]
brokers = [{ host = "tcp://10.0.0.5:1883" }]
keepalive = 1
[queue]
max_bytez = 3
[devices."scanner 1"]
type = "serial_line_scanner"
port = "loop://"
baudrat = 9600
[devices.bus_1]
type = "modbus_scale"
transport = "tcp"
host = "10.0.0.5"
"""


def many_errors(f: str) -> list[str]:
    topic = "because it becomes an MQTT topic level"
    return [
        f"{f}: [node] line = 'L 1': expected an id that may contain only letters, digits, '_' "
        f"and '-' (1-64 characters), {topic}",
        f"{f}: [mqtt.brokers.0] host = 'tcp://10.0.0.5:1883': expected a bare host name or "
        "address (no scheme, port, brackets or '/'); put the port in port = 1883",
        f"{f}: [mqtt] keepalive = 1: expected greater than or equal to 5",
        f"{f}: [queue] unknown key 'max_bytez': did you mean 'max_bytes'? "
        "(valid: gather_ms, max_bytes, path, retain_sent_hours)",
        f"{f}: [devices.scanner 1] device id 'scanner 1' may contain only letters, digits, '_' "
        f"and '-' (1-64 characters), {topic}",
        f"{f}: [devices.scanner 1] unknown key 'baudrat': did you mean 'baudrate'? (valid: "
        "aim_ids, baudrate, bytesize, enabled, exclusive, framing, inter_byte_timeout_ms, "
        "max_frame, noread, parity, port, prefix, stopbits, suffix, terminator, type)",
        f"{f}: [devices.bus_1] missing required key 'registers': a [registers] table with the "
        "indicator's register map, from its manual. Weight indicators have no standard map, and "
        "a built-in default once produced weights 1000x off without a warning (`python -m "
        "simulators.modbus_scale --help` prints an example map to adapt)",
    ]


def test_config_check_reports_every_error_in_one_run(tmp_path: Path) -> None:
    bad = tmp_path / "line.toml"
    bad.write_text(MANY_ERRORS)
    res = check(str(bad))
    assert res.returncode == EX_CONFIG
    assert res.stdout == ""
    assert res.stderr.splitlines() == [*many_errors(str(bad)), f"{bad}: 7 errors"]
    assert "Traceback" not in res.stderr


def test_load_config_raises_one_config_error_carrying_every_line(tmp_path: Path) -> None:
    bad = tmp_path / "line.toml"
    bad.write_text(MANY_ERRORS)
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert err.value.errors == many_errors(str(bad))
    assert str(err.value) == "\n".join(many_errors(str(bad)))


def test_config_check_json_carries_the_list_of_errors(tmp_path: Path) -> None:
    bad = tmp_path / "line.toml"
    bad.write_text(MANY_ERRORS)
    res = check(str(bad), "--json")
    assert res.returncode == EX_CONFIG and res.stderr == ""
    assert json.loads(res.stdout) == {
        "file": str(bad),
        "valid": False,
        "strict": False,
        "errors": many_errors(str(bad)),
        "notes": [],
        "devices": [],
    }
    good = check("config/minimal.toml", "--json")
    assert good.returncode == 0
    assert json.loads(good.stdout) == {
        "file": "config/minimal.toml",
        "valid": True,
        "strict": False,
        "errors": [],
        "notes": [],
        "devices": ["tunnel_1"],
    }


def test_station_errors_come_with_the_other_errors(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path,
        "keepalive = 1\n[stations.s1]\ndevices = ['nope']\ncorrelation = 'gate'\n"
        "window_ms = 300\ndedup_window_ms = 5000\n[stations.s2]\ndevices = ['gone']\n"
        "correlation = 'gate'\nwindow_ms = 300\ndedup_window_ms = 5000\n",
    )
    f = tmp_path / "line.toml"
    assert msg.splitlines() == [
        f"{f}: [mqtt] keepalive = 1: expected greater than or equal to 5",
        f"{f}: [stations.s1] devices: ['nope'] not defined in [devices]",
        f"{f}: [stations.s2] devices: ['gone'] not defined in [devices]",
    ]


# ---- what only the line PC has: notes on a laptop, errors with --strict -----------------------
EXAMPLE_NOTES = [
    "config/example.toml: [mqtt] password_credential = 'mqtt_password': $CREDENTIALS_DIRECTORY "
    "is not set (systemd sets it for the service, from LoadCredential=); not checked here; the "
    "service, doctor and `config check --strict` require it",
    *(
        f"config/example.toml: [mqtt.tls] {key} = '/etc/edge-agent/{name}': no such file on this "
        "machine; not checked here; the service, doctor and `config check --strict` require it"
        for key, name in [
            ("ca_file", "ca.pem"),
            ("cert_file", "client.pem"),
            ("key_file", "client.key"),
        ]
    ),
]


def test_example_passes_on_a_laptop_with_notes() -> None:
    res = check("config/example.toml")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.splitlines() == [
        *(f"note: {n}" for n in EXAMPLE_NOTES),
        "config/example.toml: ok (2 devices: handheld_1, tunnel_1)",
    ]


def test_example_fails_strict_on_a_laptop() -> None:
    res = check("--strict", "config/example.toml")
    assert res.returncode == EX_CONFIG
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "config/example.toml: [mqtt] password_credential = 'mqtt_password': "
        "$CREDENTIALS_DIRECTORY is not set (systemd sets it for the service, from LoadCredential=)",
        "config/example.toml: [mqtt.tls] ca_file = '/etc/edge-agent/ca.pem': expected a "
        "readable file",
        "config/example.toml: [mqtt.tls] cert_file = '/etc/edge-agent/client.pem': expected a "
        "readable file",
        "config/example.toml: [mqtt.tls] key_file = '/etc/edge-agent/client.key': expected a "
        "readable file",
        "config/example.toml: 4 errors",
    ]


def test_secrets_present_are_checked_even_without_strict(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    cfg = write(tmp_path, f'password_file = "{secret}"\n')
    res = check(str(cfg))
    assert res.returncode == EX_CONFIG
    assert res.stderr.splitlines() == [
        f"{cfg}: [mqtt] password_file: {secret} is readable or writable by others (mode 0644); "
        "expected 0600 or 0640",
        f"{cfg}: 1 error",
    ]
    assert "hunter2" not in res.stdout + res.stderr
    secret.chmod(0o600)
    assert check(str(cfg)).returncode == 0
    assert check("--strict", str(cfg)).returncode == 0


def test_strict_passes_when_the_line_pc_provides_everything(tmp_path: Path) -> None:
    (tmp_path / "mqtt_password").write_text("s3cret\n")
    (tmp_path / "mqtt_password").chmod(0o600)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = write(tmp_path, f'password_credential = "mqtt_password"\n[mqtt.tls]\nca_file = "{ca}"\n')
    res = check("--strict", str(cfg), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{cfg}: ok (0 devices: )\n"
    missing = check("--strict", str(cfg), env={"CREDENTIALS_DIRECTORY": str(tmp_path / "x")})
    assert missing.returncode == EX_CONFIG
    assert missing.stderr.splitlines()[0] == (
        f"{cfg}: [mqtt] password_credential: {tmp_path / 'x' / 'mqtt_password'} does not exist "
        "on this machine"
    )


def test_run_loads_strictly(tmp_path: Path) -> None:
    """The service refuses what `config check` only notes: exit 78 before anything starts."""
    cfg = write(tmp_path, 'password_credential = "mqtt_password"\n')
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    res = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
        env=env,
    )
    assert res.returncode == EX_CONFIG
    assert res.stderr.splitlines() == [  # one error: one line
        f"edge-agent: configuration error: {cfg}: [mqtt] password_credential = 'mqtt_password': "
        "$CREDENTIALS_DIRECTORY is not set (systemd sets it for the service, from LoadCredential=)",
    ]
    assert check(str(cfg)).returncode == 0


# ---- broker host ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("tcp://10.0.0.5:1883", "put the port in port = 1883"),
        ("10.0.0.5:1883", "put the port in port = 1883"),
        ("[fd00::5]:8883", "put the port in port = 8883"),
        ("mqtts://broker", "a port goes in port ="),
        ("broker/x", "a port goes in port ="),
        ("[fd00::5]", "a port goes in port ="),
    ],
)
def test_broker_host_must_be_bare(tmp_path: Path, host: str, hint: str) -> None:
    p = tmp_path / "line.toml"
    p.write_text(BASE.replace('host = "127.0.0.1", port = 1883', f'host = "{host}"'))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == (
        f"{p}: [mqtt.brokers.0] host = '{host}': expected a bare host name or address "
        f"(no scheme, port, brackets or '/'); {hint}"
    )


@pytest.mark.parametrize(
    "host", ["::1", "fd00::5", "fe80::1%eth0", "mqtt-1.hub.example", "10.0.0.5"]
)
def test_bare_hosts_and_ipv6_literals_are_accepted(tmp_path: Path, host: str) -> None:
    p = tmp_path / "line.toml"
    p.write_text(BASE.replace('host = "127.0.0.1"', f'host = "{host}"'))
    assert load_config(p).mqtt.brokers[0].host == host


def test_broken_ipv6_literal_is_named(tmp_path: Path) -> None:
    p = tmp_path / "line.toml"
    p.write_text(BASE.replace('host = "127.0.0.1"', 'host = "fd00::5::1"'))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == (
        f"{p}: [mqtt.brokers.0] host = 'fd00::5::1': expected a bare host name or address "
        "('fd00::5::1' is not an IPv6 address)"
    )


# ---- Modbus: no default register map -----------------------------------------------------------
def test_modbus_tcp_host_with_port_names_tcp_port(tmp_path: Path) -> None:
    msg = error_of(
        tmp_path,
        '[devices.s1]\ntype = "modbus_scale"\ntransport = "tcp"\nhost = "10.0.0.7:502"\n'
        '[devices.s1.registers]\nweight_register = 0\nunit = "kg"\ndecimals = 0\n',
    )
    assert msg == (
        f"{tmp_path / 'line.toml'}: [devices.s1] host = '10.0.0.7:502': expected a bare host "
        "name or address (no scheme, port, brackets or '/'); put the port in tcp_port = 502"
    )


def test_simulator_help_prints_a_register_map_the_agent_accepts(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "simulators.modbus_scale", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    snippet = res.stdout[res.stdout.index("[devices.<id>.registers]") :].strip()
    assert snippet.splitlines() == [
        "[devices.<id>.registers]",
        'function = "holding"',
        "weight_register = 0",
        'weight_type = "int32"',
        'word_order = "big"',
        'byte_order = "big"',
        'unit = "kg"',
        "scale = 1.0",
        "decimals = 3",
        "status_register = 2",
        "stable_bit = 0",
        "motion_bit = 1",
        "overload_bit = 3",
        "zero_bit = 2",
        "under_zero_bit = 4",
    ]
    p = write(
        tmp_path,
        '[devices.s1]\ntype = "modbus_scale"\nport = "loop://"\n'
        + snippet.replace("<id>", "s1")
        + "\n",
    )
    dev = load_config(p).devices["s1"]
    assert isinstance(dev, ModbusScaleConfig)
    assert dev.registers == DEFAULT_MAP


def test_a_fragment_without_node_and_mqtt_is_named(tmp_path: Path) -> None:
    frag = tmp_path / "frag.toml"
    frag.write_text('[devices.t1]\ntype = "virtual"\n')
    res = check(str(frag))
    assert res.returncode == EX_CONFIG
    assert res.stderr.splitlines() == [
        f"{frag}: missing required table [node]",
        f"{frag}: missing required table [mqtt]",
        f"{frag}: 2 errors",
    ]


#: The registered types as the error lists them (from the registry: a new device type adds no
#: line here).
TYPES = ", ".join(sorted(DRIVERS))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "[node\n",
            "TOML syntax error: Expected ']' at the end of a table declaration "
            "(at line 1, column 6)",
        ),
        ("devices = 3\n" + BASE, "[devices] expected a table of device tables"),
        (
            BASE.replace('{ host = "127.0.0.1", port = 1883 }', ""),
            "[mqtt] brokers: expected at least 1 item after validation, not 0",
        ),
        (
            BASE + '[devices.z]\nport = "loop://"\n',
            f"[devices.z] missing required key 'type' (one of {TYPES})",
        ),
        (
            BASE + '[devices.z]\ntype = "sik_clv"\n',
            f"[devices.z] type = 'sik_clv': expected one of {TYPES}; did you mean 'sick_clv'?",
        ),
    ],
    ids=["syntax", "devices_not_a_table", "no_brokers", "no_type", "type_typo"],
)
def test_bad_input_is_one_line_never_a_traceback(tmp_path: Path, text: str, line: str) -> None:
    p = tmp_path / "x.toml"
    p.write_text(text)
    res = check(str(p))
    assert res.returncode == EX_CONFIG
    assert res.stderr.splitlines() == [f"{p}: {line}", f"{p}: 1 error"]


def test_password_env_rule_is_in_words(tmp_path: Path) -> None:
    msg = error_of(tmp_path, 'password_env = "mqtt-pw"\n')
    assert msg == (
        f"{tmp_path / 'line.toml'}: [mqtt] password_env = 'mqtt-pw': expected an environment "
        "variable name: upper-case letters, digits and '_', not a digit first"
    )


@pytest.mark.parametrize("strict", [False, True])
def test_nul_in_a_tls_path_is_a_config_error(tmp_path: Path, strict: bool) -> None:
    p = write(tmp_path, '[mqtt.tls]\nca_file = "/tmp/a\\u0000b"\n')
    report = check_config(p, strict=strict)
    assert report.errors == [f"{p}: [mqtt.tls] ca_file = '/tmp/a\\x00b': expected a readable file"]
    with pytest.raises(ConfigError):
        load_config(p)


def test_modbus_registers_must_say_the_weights_scale(tmp_path: Path) -> None:
    """An empty or partial [registers] table: the keys that set the scale have no default."""
    head = '[devices.s1]\ntype = "modbus_scale"\ntransport = "tcp"\nhost = "10.0.0.7"\n'
    for table, missing in (
        ("", "weight_register, unit, decimals (or decimals_register)"),
        ("weight_register = 7\n", "unit, decimals (or decimals_register)"),
        ('weight_register = 7\nunit = "kg"\nweight_type = "int16"\n', "decimals (or "),
    ):
        msg = error_of(tmp_path, head + "[devices.s1.registers]\n" + table)
        assert msg.startswith(
            f"{tmp_path / 'line.toml'}: [devices.s1] registers: expected the indicator's map "
            f"from its manual, with {missing}"
        ), msg
    ok = 'weight_register = 2\nunit = "kg"\nweight_type = "float32"\n'  # a float needs no decimals
    load_config(write(tmp_path, head + "[devices.s1.registers]\n" + ok))
