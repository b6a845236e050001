"""Device drivers and their registry.

Adding a device type (the rtl_433 checklist; docs/new-device.md walks through an example):

1. one module ``drivers/<name>.py`` with ``class <Name>Driver(Driver)``, its ``Config`` and the
   reject reasons it declares (``REJECTS``, members of :class:`drivers.reasons.RejectReason`);
2. one line in :data:`DRIVERS` below (module name, registry key and class name agree);
3. one simulator ``simulators/<name>.py`` speaking the same bytes, with ``for_demo``;
4. one subclass of the contract test in ``tests/drivers/test_<name>.py`` (a rig, plus captures:
   inline ``CAPTURES`` or recorded files in ``tests/data/captures/<name>/``).

A byte-stream driver gets its fuzz target derived (``tests/fuzz/targets.py``).
``tests/test_new_device_checklist.py`` checks all of this for every registered driver, and
flags a driver, simulator or contract test no registry line names.

Modules are imported lazily, so a driver's library is only loaded when a device uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from drivers.base import Driver
    from edge_agent.model import DeviceConfig

#: config ``type`` -> (module, class)
DRIVERS: dict[str, tuple[str, str]] = {
    "cognex_dataman": ("drivers.cognex_dataman", "CognexDatamanDriver"),
    "datalogic": ("drivers.datalogic", "DatalogicDriver"),
    "hid_scanner": ("drivers.hid_scanner.driver", "HidScannerDriver"),
    "modbus_scale": ("drivers.modbus_scale", "ModbusScaleDriver"),
    "mtsics_scale": ("drivers.mtsics_scale", "MtSicsScaleDriver"),
    "serial_line_scanner": ("drivers.serial_line_scanner", "SerialLineScannerDriver"),
    "sick_clv": ("drivers.sick_clv", "SickClvDriver"),
    "sma_scale": ("drivers.sma_scale", "SmaScaleDriver"),
    "toledo_continuous": ("drivers.toledo_continuous", "ToledoContinuousDriver"),
    "virtual": ("drivers.virtual", "VirtualDriver"),
    "zebra_ds": ("drivers.zebra_ds", "ZebraDsDriver"),
}


def driver_class(kind: str, where: str = "") -> type[Driver[Any]]:
    """The driver class registered as ``kind``. Raises ConfigError listing the valid types."""
    try:
        module, name = DRIVERS[kind]
    except KeyError:
        prefix = f"{where} " if where else ""
        msg = f"{prefix}type = {kind!r}: expected one of {', '.join(sorted(DRIVERS))}"
        raise ConfigError(msg) from None
    cls: type[Driver[Any]] = getattr(importlib.import_module(module), name)
    return cls


def config_class(kind: str, where: str = "") -> type[DeviceConfig]:
    """The ``Config`` model of the driver registered as ``kind``."""
    return driver_class(kind, where).Config
