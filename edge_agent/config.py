"""The daemon's configuration: one TOML file, validated on load, frozen afterwards.

Errors name the file, the section, the key and what was expected, Klipper-style::

    config/line.toml: [devices.tunnel_1] baudrate = 9601: expected one of 1200, ..., 115200
    line.toml: [devices.tunnel_1] unknown key 'baudrat': did you mean 'baudrate'? (valid: ...)

Every problem of a file is reported in one go (:func:`check_config`; :class:`ConfigError`
carries them as ``errors``), so a technician fixes the file in one edit, not one per run.
What only the line PC can provide (the MQTT password source, TLS files) is checked strictly
by the daemon, ``doctor`` and ``config check --strict``; plain ``config check`` checks it
when present and otherwise reports a note, so a shipped example passes on a laptop.

Secrets never live in the TOML: the MQTT password comes from ``password_file``, from
``password_env`` (an environment variable name) or from ``password_credential`` (a systemd
``LoadCredential=`` name read from ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.config_errors import ENV_PATTERN, format_errors
from edge_agent.config_remote import RemoteConfig
from edge_agent.config_secrets import check_secrets, check_tls, read_password
from edge_agent.config_sections import device_section, stations_section, validate_device
from edge_agent.errors import ConfigError
from edge_agent.model import (
    ID_PATTERN,
    DeviceConfig,
    Ident,
    StrictModel,
    bare_host_problem,
)

__all__ = [
    "ID_PATTERN",
    "AgentConfig",
    "ConfigReport",
    "DeviceConfig",
    "Ident",
    "RemoteConfig",
    "StrictModel",
    "check_config",
    "load_config",
    "validate_device",
]


class NodeConfig(StrictModel):
    """Who this agent is: ends up in every reading, topic and the MQTT client id."""

    site: Ident
    line: Ident
    agent_id: Ident


class BrokerAddress(StrictModel):
    """One broker of the failover list."""

    host: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883

    @field_validator("host")
    @classmethod
    def _bare(cls, v: str) -> str:
        problem = bare_host_problem(v, "port")
        if problem is not None:
            raise ValueError(problem)
        return v


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
    password_env: Annotated[str, StringConstraints(pattern=ENV_PATTERN)] | None = None
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
    #: Under load, a commit waits this long after the last one so that what arrives meanwhile
    #: shares its fsync (README "The queue": CPU per reading against latency).
    gather_ms: Annotated[float, Field(ge=0, le=50)] = 2.0


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
    remote: RemoteConfig = RemoteConfig()
    devices: dict[str, DeviceConfig] = Field(default_factory=dict)
    #: ``[stations.<id>]``: edge_agent.station.StationConfig per station (validated lazily).
    stations: dict[str, Any] = Field(default_factory=dict)
    #: ``[waybills]``: edge_agent.waybill.WaybillConfig (None: the built-in carrier table).
    waybills: Any = None
    source: Path = Path("<memory>")

    def password(self) -> SecretStr | None:
        """Read the MQTT password from its configured source (never from the TOML)."""
        return read_password(self.mqtt, self.source)


@dataclass
class ConfigReport:
    """What :func:`check_config` found: the config (None unless every section validated; the
    password source and TLS files may still be in ``errors``), every error, and notes about
    what could not be checked on this machine."""

    file: Path
    config: AgentConfig | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self) -> ConfigError:
        """All errors as one ConfigError (one line each)."""
        return ConfigError("\n".join(self.errors), self.errors)


def load_config(path: str | os.PathLike[str], *, secrets: bool = True) -> AgentConfig:
    """Load and validate ``path``. Raises ConfigError listing every error, one line each.

    ``secrets=True`` (the daemon): the MQTT password source and the TLS files must be readable.
    ``secrets=False`` skips them (technician commands that never talk to the broker must work
    without the systemd credential).
    """
    report = check_config(path, strict=secrets, secrets=secrets)
    if report.errors or report.config is None:
        raise report.error()
    return report.config


def check_config(
    path: str | os.PathLike[str], *, strict: bool = True, secrets: bool = True
) -> ConfigReport:
    """Validate ``path`` and report every error; never raises for a bad file.

    ``strict=False``: a password source or TLS file that is absent on this machine is a note,
    not an error (present ones are still checked). ``secrets=False``: neither is looked at.
    """
    file = Path(path)
    report = ConfigReport(file)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.errors.append(f"{file}: file not found")
    except (OSError, UnicodeDecodeError) as err:
        report.errors.append(f"{file}: cannot read: {err}")
    except tomllib.TOMLDecodeError as err:
        report.errors.append(f"{file}: TOML syntax error: {err}")
    except (ValueError, RecursionError) as err:  # tomllib: int over 4300 digits, deep nesting
        report.errors.append(f"{file}: TOML syntax error: {err}")
    else:
        _parse(raw, report, strict=strict, secrets=secrets)
    return report


def parse_config(raw: Mapping[str, Any], file: Path, *, secrets: bool = True) -> AgentConfig:
    """Validate an already-parsed TOML mapping (also used by tests and the demo)."""
    report = ConfigReport(file)
    _parse(raw, report, strict=secrets, secrets=secrets)
    if report.errors or report.config is None:
        raise report.error()
    return report.config


def _parse(raw: Mapping[str, Any], report: ConfigReport, *, strict: bool, secrets: bool) -> None:
    file, errors = report.file, report.errors
    data = dict(raw)
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        errors.append(
            f"{file}: [mqtt] password: secrets are not accepted in the TOML file; "
            "use password_file, password_env or password_credential"
        )
        data["mqtt"] = {k: v for k, v in mqtt.items() if k != "password"}
    devices_raw = data.pop("devices", {})
    stations_raw = data.pop("stations", {})
    waybills_raw = data.pop("waybills", {})
    if not isinstance(devices_raw, dict):
        errors.append(f"{file}: [devices] expected a table of device tables")
        devices_raw = {}
    base: AgentConfig | None = None
    try:
        base = AgentConfig.model_validate({**data, "source": file})
    except ValidationError as err:
        errors.extend(format_errors(err, file, (), AgentConfig))
    devices: dict[str, DeviceConfig] = {}
    for dev_id, table in devices_raw.items():
        dev = device_section(dev_id, table, file, errors)
        if dev is not None:
            devices[dev_id] = dev
    stations, waybills = stations_section(
        stations_raw, waybills_raw, list(devices_raw), file, errors
    )
    if base is None:
        return
    if not errors:
        report.config = base.model_copy(
            update={"devices": devices, "stations": stations, "waybills": waybills}
        )
    if secrets:
        _check_secrets(base.mqtt, file, report, strict=strict)


def _check_secrets(mqtt: MqttConfig, file: Path, report: ConfigReport, *, strict: bool) -> None:
    """The password source and TLS files: errors, or notes for what this machine lacks."""
    check_secrets(mqtt, file, report.errors, report.notes, strict=strict)


def check_tls_files(mqtt: MqttConfig, file: Path) -> None:
    """The daemon's start check: every configured TLS file is readable (else exit 78)."""
    report = ConfigReport(file)
    check_tls(mqtt, file, report.errors, report.notes, strict=True)
    if report.errors:
        raise report.error()
