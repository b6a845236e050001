"""The per-id sections of the configuration: ``[devices.<id>]`` (validated by the driver's
own model, chosen by ``type``) and ``[stations.<id>]`` with ``[waybills]``. Every problem is
appended to ``errors`` so a file is reported in one go (:func:`edge_agent.config.check_config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.config_errors import ID_WHY, did_you_mean, format_errors
from edge_agent.errors import ConfigError
from edge_agent.model import ID_PATTERN, ID_RULE, DeviceConfig


def _id_problem(kind: str, ident: str, where: str) -> str | None:
    if re.fullmatch(ID_PATTERN, ident):
        return None
    return f"{where} {kind} id {ident!r} {ID_RULE}, because {ID_WHY[kind]}"


def device_section(dev_id: str, table: Any, file: Path, errors: list[str]) -> DeviceConfig | None:
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
            + did_you_mean(str(kind), DRIVERS)
        )
        return None
    cls = config_class(kind, where)
    try:
        dev = cls.model_validate(table)
    except ValidationError as err:
        errors.extend(format_errors(err, file, ("devices", dev_id), cls))
        return None
    return None if problem else dev


def validate_device(dev_id: str, table: Mapping[str, Any], file: Path) -> DeviceConfig:
    """One ``[devices.<id>]`` table (e.g. from ``probe --opt``). Raises ConfigError (all errors)."""
    errors: list[str] = []
    dev = device_section(dev_id, dict(table), file, errors)
    if errors or dev is None:
        raise ConfigError("\n".join(errors), errors)
    return dev


def stations_section(
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
        errors.extend(format_errors(err, file, ("waybills",), WaybillConfig))
    stations = {}
    for sid, table in raw.items():
        problem = _id_problem("station", sid, f"{file}: [stations.{sid}]")
        if problem is not None:
            errors.append(problem)
        try:
            stations[sid] = StationConfig.model_validate(table)
        except ValidationError as err:
            errors.extend(format_errors(err, file, ("stations", sid), StationConfig))
    if waybills is not None:
        try:
            validate_stations(stations, device_ids, waybills, file)
        except ConfigError as err:
            errors.extend(err.errors)
    return stations, waybills
