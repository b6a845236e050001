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

import difflib
import os
import re
import stat
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

from edge_agent.errors import ConfigError
from edge_agent.model import (
    ID_PATTERN,
    ID_RULE,
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
    "StrictModel",
    "check_config",
    "load_config",
]

#: Why an id is restricted, by key (default: :data:`ID_WHY_DEFAULT`).
ID_WHY = {
    "site": "it becomes an MQTT topic level",
    "line": "it becomes an MQTT topic level",
    "agent_id": "it becomes an MQTT topic level and part of the client id",
    "topic_prefix": "it becomes an MQTT topic level",
    "device": "it becomes an MQTT topic level",
    "station": "it becomes an MQTT topic level",
    "username": "it is sent to the broker as the MQTT user name",
    "password_credential": "it names a file in $CREDENTIALS_DIRECTORY",
    "group": "it is a Unix group name",
}
ID_WHY_DEFAULT = "it is used as a name"
#: Environment variable names (``password_env``), and the same rule in words.
ENV_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
ENV_RULE = "an environment variable name: upper-case letters, digits and '_', not a digit first"
#: The end of a note about something only the line PC provides.
STRICT_TAIL = "not checked here; the service, doctor and `config check --strict` require it"


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


#: Remote commands (docs/backend.md "Remote commands"); the mutating ones are off by default.
RemoteCommand = Literal["ping", "status", "resend", "reload", "device"]
_DEFAULT_ALLOW: tuple[RemoteCommand, ...] = ("ping", "status", "resend")


class RemoteConfig(StrictModel):
    """``[remote]``: commands the backend sends over MQTT, and the unsent-age alarms."""

    enabled: bool = True
    allow: list[RemoteCommand] = Field(default_factory=lambda: list(_DEFAULT_ALLOW))
    #: Rows one ``resend`` may ask for; a larger range is refused (``bad_args``): split it.
    resend_max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: Commands accepted per second (token bucket of ``rate_burst``); the rest: ``rate_limited``.
    rate_per_s: Annotated[float, Field(gt=0, le=1000)] = 5.0
    rate_burst: Annotated[int, Field(ge=1, le=1000)] = 10
    #: More requests than this in one second is a flood: the agent unsubscribes from its
    #: ``cmd/#`` for ``flood_pause_s`` (alarm ``command_flood``), so the broker stops sending.
    flood_per_s: Annotated[int, Field(ge=1, le=100_000)] = 50
    flood_pause_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    #: Requests waiting for the command thread; more are dropped (counted, no response).
    inbox_max: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: Alarm ``oldest_unsent`` when the oldest unsent reading is older than this (s).
    alarm_oldest_unsent_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    #: The same for exception events (stricter: reported within minutes).
    alarm_oldest_exception_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 120.0


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
        errors.extend(_format(err, file, (), AgentConfig))
    devices: dict[str, DeviceConfig] = {}
    for dev_id, table in devices_raw.items():
        dev = _device(dev_id, table, file, errors)
        if dev is not None:
            devices[dev_id] = dev
    stations, waybills = _stations(stations_raw, waybills_raw, list(devices_raw), file, errors)
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
    try:
        read_password(mqtt, file)  # fail at load time, not at first connect
    except SecretAbsentError as err:
        if strict:
            report.errors.append(str(err))
        else:
            report.notes.append(f"{err}; {STRICT_TAIL}")
    except ConfigError as err:
        report.errors.append(str(err))
    _check_tls(mqtt, file, report, strict=strict)


def _check_tls(mqtt: MqttConfig, file: Path, report: ConfigReport, *, strict: bool) -> None:
    if mqtt.tls is None:
        return
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt.tls, key)
        if path is None:
            continue
        where = f"{file}: [mqtt.tls] {key} = {str(path)!r}"
        try:
            exists, readable = path.exists(), os.access(path, os.R_OK)
        except (OSError, ValueError):  # ValueError: a NUL in the path
            exists, readable = True, False
        if not exists and not strict:
            report.notes.append(f"{where}: no such file on this machine; {STRICT_TAIL}")
        elif not readable:
            report.errors.append(f"{where}: expected a readable file")


def check_tls_files(mqtt: MqttConfig, file: Path) -> None:
    """The daemon's start check: every configured TLS file is readable (else exit 78)."""
    report = ConfigReport(file)
    _check_tls(mqtt, file, report, strict=True)
    if report.errors:
        raise report.error()


def _id_problem(kind: str, ident: str, where: str) -> str | None:
    if re.fullmatch(ID_PATTERN, ident):
        return None
    return f"{where} {kind} id {ident!r} {ID_RULE}, because {ID_WHY[kind]}"


def _device(dev_id: str, table: Any, file: Path, errors: list[str]) -> DeviceConfig | None:
    from drivers import DRIVERS, config_class  # noqa: PLC0415 - drivers import lazily (registry)

    where = f"{file}: [devices.{dev_id}]"
    problem = _id_problem("device", dev_id, where)
    if problem is not None:
        errors.append(problem)
    if not isinstance(table, dict):
        errors.append(f"{where} expected a table of settings")
        return None
    if "type" not in table:
        errors.append(f"{where} missing required key 'type' (one of {', '.join(sorted(DRIVERS))})")
        return None
    kind = table["type"]
    if not isinstance(kind, str) or kind not in DRIVERS:
        errors.append(
            f"{where} type = {kind!r}: expected one of {', '.join(sorted(DRIVERS))}"
            + _did_you_mean(str(kind), DRIVERS)
        )
        return None
    cls = config_class(kind, where)
    try:
        dev = cls.model_validate(table)
    except ValidationError as err:
        errors.extend(_format(err, file, ("devices", dev_id), cls))
        return None
    return None if problem else dev


def validate_device(dev_id: str, table: Mapping[str, Any], file: Path) -> DeviceConfig:
    """One ``[devices.<id>]`` table (e.g. from ``probe --opt``). Raises ConfigError (all errors)."""
    errors: list[str] = []
    dev = _device(dev_id, dict(table), file, errors)
    if errors or dev is None:
        raise ConfigError("\n".join(errors), errors)
    return dev


def _stations(
    raw: Any, waybills_raw: Any, device_ids: list[str], file: Path, errors: list[str]
) -> tuple[dict[str, Any], Any]:
    from edge_agent.station import StationConfig, validate_stations  # noqa: PLC0415 - cycle
    from edge_agent.waybill import WaybillConfig  # noqa: PLC0415

    if not isinstance(raw, dict) or not isinstance(waybills_raw, dict):
        errors.append(f"{file}: [stations] and [waybills] must be tables")
        return {}, None
    waybills = None
    try:
        waybills = WaybillConfig.model_validate(waybills_raw)
    except ValidationError as err:
        errors.extend(_format(err, file, ("waybills",), WaybillConfig))
    stations = {}
    for sid, table in raw.items():
        problem = _id_problem("station", sid, f"{file}: [stations.{sid}]")
        if problem is not None:
            errors.append(problem)
        try:
            stations[sid] = StationConfig.model_validate(table)
        except ValidationError as err:
            errors.extend(_format(err, file, ("stations", sid), StationConfig))
    if waybills is not None:
        try:
            validate_stations(stations, device_ids, waybills, file)
        except ConfigError as err:
            errors.extend(err.errors)
    return stations, waybills


def _format(err: ValidationError, file: Path, prefix: tuple[str, ...], model: type) -> list[str]:
    lines = []
    for e in err.errors():
        loc = prefix + tuple(str(p) for p in e["loc"])
        section = ".".join(loc[:-1]) if len(loc) > 1 else ""
        key = loc[-1] if loc else ""
        head = f"{file}: [{section}] " if section else f"{file}: "
        shown = e.get("input")
        value = f" = {shown!r}" if not isinstance(shown, dict | list) else ""
        ctx = e.get("ctx") or {}
        if e["type"] == "extra_forbidden":
            fields = sorted(_fields_at(model, loc[len(prefix) : -1]))
            lines.append(
                f"{head}unknown key '{key}'{_did_you_mean(key, fields, ':')} "
                f"(valid: {', '.join(fields)})"
            )
        elif e["type"] == "missing":
            parent = _model_at(model, loc[len(prefix) : -1])
            hint = getattr(parent, "missing_hints", {}).get(key)
            what = f"key '{key}'" if section else f"table [{key}]"
            lines.append(f"{head}missing required {what}" + (f": {hint}" if hint else ""))
        elif e["type"] == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
            why = ID_WHY.get(key, ID_WHY_DEFAULT)
            lines.append(f"{head}{key}{value}: expected an id that {ID_RULE}, because {why}")
        elif e["type"] == "string_pattern_mismatch" and ctx.get("pattern") == ENV_PATTERN:
            lines.append(f"{head}{key}{value}: expected {ENV_RULE}")
        else:
            lines.append(f"{head}{key}{value}: expected {_expected(e['msg'])}")
    return lines


def _did_you_mean(word: str, choices: Any, lead: str = ";") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"{lead} did you mean '{close[0]}'?" if close else ""


def _expected(msg: str) -> str:
    for lead in ("Input should be ", "String should ", "Value error, ", "List should have "):
        if msg.startswith(lead):
            return msg[len(lead) :]
    return msg


def _model_at(model: type, path: tuple[str, ...]) -> Any:
    """The model class at ``path`` below ``model`` (list indexes and dict keys skipped)."""
    current: Any = model
    for part in path:
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            continue  # a list index or a dict key: same model one level down
        ann = fields[part].annotation
        current = _find_model(ann) or current
    return current


def _find_model(ann: Any) -> Any:
    if hasattr(ann, "model_fields"):
        return ann
    for arg in getattr(ann, "__args__", ()):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type, path: tuple[str, ...]) -> list[str]:
    current = _model_at(model, path)
    return [f for f in getattr(current, "model_fields", {}) if f != "source"]


class SecretAbsentError(ConfigError):
    """The password source is not on this machine (variable unset, file absent)."""


def read_password(mqtt: MqttConfig, file: Path) -> SecretStr | None:
    """Return the password from file, environment or systemd credential; None if none set."""
    if mqtt.password_env is not None:
        value = os.environ.get(mqtt.password_env)
        if value is None:
            msg = (
                f"{file}: [mqtt] password_env: environment variable {mqtt.password_env} is not set"
            )
            raise SecretAbsentError(msg)
        return SecretStr(value)
    path = mqtt.password_file
    if mqtt.password_credential is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            msg = (
                f"{file}: [mqtt] password_credential = '{mqtt.password_credential}': "
                "$CREDENTIALS_DIRECTORY is not set (systemd sets it for the service, from "
                "LoadCredential=)"
            )
            raise SecretAbsentError(msg)
        path = Path(creds) / mqtt.password_credential
        return SecretStr(_read_secret_file(path, file, "password_credential"))
    if path is None:
        return None
    return SecretStr(_read_secret_file(path, file, "password_file"))


def _read_secret_file(path: Path, file: Path, key: str) -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        msg = f"{file}: [mqtt] {key}: {path} does not exist on this machine"
        raise SecretAbsentError(msg) from err
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
