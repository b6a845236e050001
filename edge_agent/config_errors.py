"""Pydantic validation errors as the lines a technician reads: file, section, key, what was
expected, and for an unknown key the closest valid one ("did you mean 'baudrate'?")."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.model import ID_PATTERN, ID_RULE

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


def format_errors(
    err: ValidationError, file: Path, prefix: tuple[str, ...], model: type
) -> list[str]:
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
                f"{head}unknown key '{key}'{did_you_mean(key, fields, ':')} "
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


def did_you_mean(word: str, choices: Any, lead: str = ";") -> str:
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
