"""The daemon's configuration: one TOML file, validated on load, frozen afterwards.

Errors name the file, the section, the key and what was expected, Klipper-style::

    config/line.toml: [devices.tunnel_1] baudrate = 9601: expected one of 1200, ..., 115200
    config/line.toml: [devices.tunnel_1] unknown key 'baudrat' (valid: baudrate, port, ...)

Secrets never live in the TOML: the MQTT password comes from ``password_file``, from
``password_env`` (an environment variable name) or from ``password_credential`` (a systemd
``LoadCredential=`` name read from ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from edge_agent.errors import ConfigError
from edge_agent.model import ID_PATTERN, Ident, StrictModel

__all__ = ["ID_PATTERN", "AgentConfig", "DeviceConfig", "Ident", "StrictModel", "load_config"]


class DeviceConfig(StrictModel):
    """Settings every device has; each driver extends it with its own ``Config``."""

    type: str
    enabled: bool = True


class NodeConfig(StrictModel):
    """Who this agent is: ends up in every reading, topic and the MQTT client id."""

    site: Ident
    line: Ident
    agent_id: Ident


class BrokerAddress(StrictModel):
    """One broker of the failover list."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883


class TlsConfig(StrictModel):
    """TLS with a private CA; hostname verification is always on (no insecure switch)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttConfig(StrictModel):
    """Broker connection and publishing knobs."""

    brokers: Annotated[list[BrokerAddress], Field(min_length=1)]
    protocol: Literal["5", "3.1.1"] = "5"
    username: Ident | None = None
    password_file: Path | None = None
    password_env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    password_credential: Ident | None = None
    tls: TlsConfig | None = None
    keepalive: Annotated[int, Field(ge=5, le=600)] = 15
    topic_prefix: Ident = "edge"
    inflight: Annotated[int, Field(ge=1, le=100)] = 20
    batch_max: Annotated[int, Field(ge=1, le=5000)] = 500
    reconnect_max_s: Annotated[float, Field(ge=0.5, le=300)] = 10.0
    failover_after: Annotated[int, Field(ge=1, le=100)] = 2
    reject_retry_s: Annotated[float, Field(ge=1, le=3600)] = 60.0

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        given = [self.password_file, self.password_env, self.password_credential]
        if sum(x is not None for x in given) > 1:
            msg = "at most one of password_file, password_env, password_credential"
            raise ValueError(msg)
        return self


class QueueConfig(StrictModel):
    """The SQLite store-and-forward queue."""

    path: Path = Path("/var/lib/edge-agent/queue.db")
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 512 << 20
    retain_sent_hours: Annotated[float, Field(ge=0, le=24 * 366)] = 72.0


class LogConfig(StrictModel):
    """Logging: JSON when not on a TTY (journald), readable on a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ControlConfig(StrictModel):
    """The control socket used by the CLI (``status``, ``monitor``, ``probe --via-daemon``)."""

    socket: Path | None = None  # None: $RUNTIME_DIRECTORY/control.sock or /run/edge-agent/...
    group: Ident | None = None
    enabled: bool = True

    def path(self) -> Path:
        """Where the socket is (or would be)."""
        if self.socket is not None:
            return self.socket
        runtime = os.environ.get("RUNTIME_DIRECTORY", "/run/edge-agent").split(":")[0]
        return Path(runtime) / "control.sock"


class MetricsConfig(StrictModel):
    """Prometheus metrics: off by default; when on, served on 127.0.0.1 only."""

    enabled: bool = False
    port: Annotated[int, Field(ge=1, le=65535)] = 9108


class AgentConfig(StrictModel):
    """The whole file, after validation. ``devices`` holds each driver's own Config."""

    node: NodeConfig
    mqtt: MqttConfig
    queue: QueueConfig = QueueConfig()
    log: LogConfig = LogConfig()
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    #: ``[stations.<id>]``: edge_agent.station.StationConfig per station (validated lazily).
    stations: dict[str, Any] = Field(default_factory=dict)
    #: ``[waybills]``: edge_agent.waybill.WaybillConfig (None: the built-in carrier table).
    waybills: Any = None
    source: Path = Path("<memory>")

    def password(self) -> SecretStr | None:
        """Read the MQTT password from its configured source (never from the TOML)."""
        return read_password(self.mqtt, self.source)


def load_config(path: str | os.PathLike[str], *, secrets: bool = True) -> AgentConfig:
    """Load and validate ``path``. Raises ConfigError with file, section, key and expectation.

    ``secrets=False`` skips reading the MQTT password (technician commands that never talk to
    the broker must work without the systemd credential).
    """
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        msg = f"{file}: file not found"
        raise ConfigError(msg) from err
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{file}: cannot read: {err}"
        raise ConfigError(msg) from err
    except tomllib.TOMLDecodeError as err:
        msg = f"{file}: TOML syntax error: {err}"
        raise ConfigError(msg) from err
    except (ValueError, RecursionError) as err:  # tomllib: int over 4300 digits, deep nesting
        msg = f"{file}: TOML syntax error: {err}"
        raise ConfigError(msg) from err
    return parse_config(raw, file, secrets=secrets)


def parse_config(raw: Mapping[str, Any], file: Path, *, secrets: bool = True) -> AgentConfig:
    """Validate an already-parsed TOML mapping (also used by tests and the demo)."""
    _refuse_inline_secrets(raw, file)
    data = dict(raw)
    devices_raw = data.pop("devices", {})
    stations_raw = data.pop("stations", {})
    waybills_raw = data.pop("waybills", {})
    if not isinstance(devices_raw, dict):
        msg = f"{file}: [devices] expected a table of device tables"
        raise ConfigError(msg)
    try:
        base = AgentConfig.model_validate({**data, "source": file})
    except ValidationError as err:
        raise ConfigError(_format(err, file, (), AgentConfig)) from err
    devices = {dev_id: _device(dev_id, table, file) for dev_id, table in devices_raw.items()}
    stations, waybills = _stations(stations_raw, waybills_raw, devices, file)
    cfg = base.model_copy(update={"devices": devices, "stations": stations, "waybills": waybills})
    if secrets:
        read_password(cfg.mqtt, file)  # fail at load time, not at first connect
    return cfg


def check_tls_files(mqtt: MqttConfig, file: Path) -> None:
    """The daemon's start check: every configured TLS file is readable (else exit 78)."""
    if mqtt.tls is None:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt.tls, key)
        if path is not None and not os.access(path, os.R_OK):
            msg = f"{file}: [mqtt.tls] {key} = '{path}': expected a readable file"
            raise ConfigError(msg)


def _device(dev_id: str, table: Any, file: Path) -> DeviceConfig:
    from drivers import config_class  # noqa: PLC0415 - drivers import lazily (registry)

    where = f"{file}: [devices.{dev_id}]"
    if not re.fullmatch(ID_PATTERN, dev_id):
        msg = f"{where} device id must match {ID_PATTERN} (letters, digits, '_' and '-')"
        raise ConfigError(msg)
    if not isinstance(table, dict) or "type" not in table:
        msg = f"{where} missing required key 'type'"
        raise ConfigError(msg)
    cls = config_class(str(table["type"]), where)
    try:
        return cls.model_validate(table)
    except ValidationError as err:
        raise ConfigError(_format(err, file, ("devices", dev_id), cls)) from err


def _stations(
    raw: Any, waybills_raw: Any, devices: Mapping[str, DeviceConfig], file: Path
) -> tuple[dict[str, Any], Any]:
    from edge_agent.station import StationConfig, validate_stations  # noqa: PLC0415 - cycle
    from edge_agent.waybill import WaybillConfig  # noqa: PLC0415

    if not isinstance(raw, dict) or not isinstance(waybills_raw, dict):
        msg = f"{file}: [stations] and [waybills] must be tables"
        raise ConfigError(msg)
    try:
        waybills = WaybillConfig.model_validate(waybills_raw)
    except ValidationError as err:
        raise ConfigError(_format(err, file, ("waybills",), WaybillConfig)) from err
    stations = {}
    for sid, table in raw.items():
        if not re.fullmatch(ID_PATTERN, sid):
            msg = f"{file}: [stations.{sid}] station id must match {ID_PATTERN}"
            raise ConfigError(msg)
        try:
            stations[sid] = StationConfig.model_validate(table)
        except ValidationError as err:
            raise ConfigError(_format(err, file, ("stations", sid), StationConfig)) from err
    validate_stations(stations, list(devices), waybills, file)
    return stations, waybills


def _refuse_inline_secrets(raw: Mapping[str, Any], file: Path) -> None:
    mqtt = raw.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        msg = (
            f"{file}: [mqtt] password: secrets are not accepted in the TOML file; "
            "use password_file, password_env or password_credential"
        )
        raise ConfigError(msg)


def _format(err: ValidationError, file: Path, prefix: tuple[str, ...], model: type) -> str:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(str(p) for p in e["loc"])
        section = ".".join(loc[:-1]) if len(loc) > 1 else ""
        key = loc[-1] if loc else ""
        head = f"{file}: [{section}] " if section else f"{file}: "
        if e["type"] == "extra_forbidden":
            valid = ", ".join(sorted(_fields_at(model, loc[len(prefix) : -1])))
            lines.append(f"{head}unknown key '{key}' (valid: {valid})")
        elif e["type"] == "missing":
            lines.append(f"{head}missing required key '{key}'")
        else:
            shown = e.get("input")
            value = f" = {shown!r}" if not isinstance(shown, dict | list) else ""
            lines.append(f"{head}{key}{value}: expected {_expected(e['msg'])}")
    return "\n".join(lines)


def _expected(msg: str) -> str:
    for lead in ("Input should be ", "String should ", "Value error, "):
        if msg.startswith(lead):
            return msg[len(lead) :]
    return msg


def _fields_at(model: type, path: tuple[str, ...]) -> list[str]:
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return list(fields) if fields else []
        ann = fields[part].annotation
        current = next(
            (a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), ann
        )
    return [f for f in getattr(current, "model_fields", {}) if f != "source"]


def read_password(mqtt: MqttConfig, file: Path) -> SecretStr | None:
    """Return the password from file, environment or systemd credential; None if none set."""
    if mqtt.password_env is not None:
        value = os.environ.get(mqtt.password_env)
        if value is None:
            msg = (
                f"{file}: [mqtt] password_env: environment variable {mqtt.password_env} is not set"
            )
            raise ConfigError(msg)
        return SecretStr(value)
    path = mqtt.password_file
    if mqtt.password_credential is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            msg = f"{file}: [mqtt] password_credential: $CREDENTIALS_DIRECTORY is not set"
            raise ConfigError(msg)
        path = Path(creds) / mqtt.password_credential
        return SecretStr(_read_secret_file(path, file, "password_credential"))
    if path is None:
        return None
    return SecretStr(_read_secret_file(path, file, "password_file"))


def _read_secret_file(path: Path, file: Path, key: str) -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        msg = f"{file}: [mqtt] {key}: cannot read {path}: {getattr(err, 'strerror', err)}"
        raise ConfigError(msg) from err
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        msg = (
            f"{file}: [mqtt] {key}: {path} is readable or writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); expected 0600 or 0640"
        )
        raise ConfigError(msg)
    return text.rstrip("\r\n")
