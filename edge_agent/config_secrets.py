"""What only the line PC provides: the MQTT password (never in the TOML: ``password_file``,
``password_env`` or ``password_credential``, systemd ``LoadCredential=``) and the TLS files,
with a clear error when absent, or a note when checked off the line PC (not ``strict``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from edge_agent.errors import ConfigError

#: The end of a note about something only the line PC provides.
STRICT_TAIL = "not checked here; the service, doctor and `config check --strict` require it"

if TYPE_CHECKING:
    from edge_agent.config import MqttConfig


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
        return SecretStr(read_secret_file(path, file, "password_credential"))
    if path is None:
        return None
    return SecretStr(read_secret_file(path, file, "password_file"))


def read_secret_file(path: Path, file: Path, key: str) -> str:
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


def check_secrets(
    mqtt: MqttConfig, file: Path, errors: list[str], notes: list[str], *, strict: bool
) -> None:
    """The password source and TLS files: errors, or notes for what this machine lacks."""
    try:
        read_password(mqtt, file)  # fail at load time, not at first connect
    except SecretAbsentError as err:
        if strict:
            errors.append(str(err))
        else:
            notes.append(f"{err}; {STRICT_TAIL}")
    except ConfigError as err:
        errors.append(str(err))
    check_tls(mqtt, file, errors, notes, strict=strict)


def check_tls(
    mqtt: MqttConfig, file: Path, errors: list[str], notes: list[str], *, strict: bool
) -> None:
    """Every configured TLS file readable; one missing here is a note unless ``strict``."""
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
            notes.append(f"{where}: no such file on this machine; {STRICT_TAIL}")
        elif not readable:
            errors.append(f"{where}: expected a readable file")
