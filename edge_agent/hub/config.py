"""The hub's configuration: its own TOML file (``hub.toml``), validated on load, frozen.

Errors name the file, the section, the key and what was expected, exactly like the agent's
(:mod:`edge_agent.config`), and every problem of the file is reported in one go::

    hub.toml: [hub] batch_max = 0: expected greater than or equal to 1
    hub.toml: [database] unknown key 'dns': did you mean 'dsn'? (valid: dsn, password_env, ...)

Secrets never live in the TOML: the database password comes from ``password_file`` or
``password_env`` (a ``password=`` inside ``dsn`` is refused), the MQTT password likewise.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, StringConstraints, ValidationError

from edge_agent.config import BrokerAddress, LogConfig
from edge_agent.config_errors import ENV_PATTERN, format_errors
from edge_agent.config_secrets import read_secret_file
from edge_agent.errors import ConfigError
from edge_agent.model import Ident, StrictModel

Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_PATTERN)]


class HubSection(StrictModel):
    """Who this hub instance is and how it keeps the backend's half of the promise."""

    missing_hints: ClassVar[dict[str, str]] = {
        "instance": "each hub instance needs its own name (client id, replies)"
    }

    instance: Ident
    group: Ident = "edge-hub"
    topic_prefix: Ident = "edge"
    batch_max: Annotated[int, Field(ge=1, le=50_000)] = 2000
    batch_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 50
    gap_grace_s: Seconds = 30.0
    gap_scan_s: Seconds = 2.0
    rescan_s: Seconds = 300.0
    resend_retry_s: Seconds = 60.0
    resend_max_tries: Annotated[int, Field(ge=1, le=1000)] = 5
    resend_max_span: Annotated[int, Field(ge=1)] = 10_000
    kpi_window_h: Seconds = 24.0
    noread_threshold_pct: Annotated[float, Field(ge=0, le=100)] = 0.2
    reconciliation_threshold_pct: Annotated[float, Field(ge=0, le=100)] = 0.5


class HubMqtt(StrictModel):
    """The broker (or cluster nodes, tried in order) and the subscription style."""

    brokers: Annotated[list[BrokerAddress], Field(min_length=1)]
    protocol: Literal["5", "3.1.1"] = "5"
    #: MQTT 5 shared subscription ``$share/<group>/...``; false for brokers without one (NATS).
    shared: bool = True
    #: SUBSCRIBE again when the broker restored the session (Mosquitto forgets shared
    #: subscriptions across its restart); false for NATS (a repeat replaces the consumer).
    resubscribe: bool = True
    username: Ident | None = None
    password_file: Path | None = None
    password_env: EnvName | None = None
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 86400
    receive_max: Annotated[int, Field(ge=1, le=65535)] = 4000
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 15


class DatabaseConfig(StrictModel):
    """PostgreSQL: a libpq connection string without the password."""

    dsn: Annotated[str, StringConstraints(min_length=1)]
    password_file: Path | None = None
    password_env: EnvName | None = None


class HubMetrics(StrictModel):
    """Prometheus metrics of the hub: off by default; when on, served on 127.0.0.1 only."""

    enabled: bool = False
    port: Annotated[int, Field(ge=1, le=65535)] = 9118


class HubConfig(StrictModel):
    """The whole hub file."""

    hub: HubSection
    mqtt: HubMqtt
    database: DatabaseConfig
    metrics: HubMetrics = HubMetrics()
    log: LogConfig = LogConfig()
    source: Path = Path("<memory>")

    def db_password(self) -> SecretStr | None:
        """The database password from its configured source (never from the TOML)."""
        return _secret(self.database.password_file, self.database.password_env, self, "database")

    def mqtt_password(self) -> SecretStr | None:
        """The MQTT password from its configured source."""
        return _secret(self.mqtt.password_file, self.mqtt.password_env, self, "mqtt")

    def conninfo(self) -> str:
        """The libpq connection string with the password added (never logged)."""
        pw = self.db_password()
        if pw is None:
            return self.database.dsn
        quoted = pw.get_secret_value().replace("\\", "\\\\").replace("'", "\\'")
        return f"{self.database.dsn} password='{quoted}'"


def _secret(file: Path | None, env: str | None, cfg: HubConfig, section: str) -> SecretStr | None:
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            msg = f"{cfg.source}: [{section}] password_env: environment variable {env} is not set"
            raise ConfigError(msg)
        return SecretStr(value)
    if file is None:
        return None
    try:
        return SecretStr(read_secret_file(file, cfg.source, "password_file"))
    except ConfigError as err:
        raise ConfigError(str(err).replace("[mqtt]", f"[{section}]")) from err


def load_hub_config(path: str | os.PathLike[str]) -> HubConfig:
    """Load and validate ``path``; raises ConfigError listing every problem, one line each."""
    file = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{file}: file not found"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{file}: cannot read: {err}"
        raise ConfigError(msg) from None
    except (ValueError, RecursionError) as err:  # TOMLDecodeError is a ValueError
        msg = f"{file}: TOML syntax error: {err}"
        raise ConfigError(msg) from None
    errors: list[str] = []
    for section in ("database", "mqtt"):
        table = raw.get(section)
        if isinstance(table, dict) and "password" in table:
            errors.append(
                f"{file}: [{section}] password: secrets are not accepted in the TOML file; "
                "use password_file or password_env"
            )
            raw[section] = {k: v for k, v in table.items() if k != "password"}
    table = raw.get("database")
    if isinstance(table, dict) and _has_password(table.get("dsn")):
        errors.append(
            f"{file}: [database] dsn: contains a password (not shown); a connection string "
            "without it, and password_file or password_env"
        )
        raw["database"] = {**table, "dsn": "redacted"}
    try:
        cfg = HubConfig.model_validate({**raw, "source": file})
    except ValidationError as err:
        errors.extend(format_errors(err, file, (), HubConfig))
        cfg = None
    if errors or cfg is None:
        raise ConfigError("\n".join(errors), errors)
    cfg.db_password()  # an absent or unsafe secret fails at load time, not at first connect
    cfg.mqtt_password()
    return cfg


def _has_password(dsn: Any) -> bool:
    """A libpq key/value ``password=`` or a URI with ``user:password@``."""
    if not isinstance(dsn, str):
        return False
    low = dsn.lower()
    if "password=" in low.replace(" ", ""):
        return True
    if "://" in low:
        userinfo = low.split("://", 1)[1].split("@", 1)
        return len(userinfo) == 2 and ":" in userinfo[0]
    return False
