"""Device reasons in words a technician can act on: "not present", "connection refused"."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.common.serial_link import SerialLink
from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.driver import ModbusScaleDriver
from drivers.serial_line_scanner import SerialLineScannerConfig
from edge_agent.errors import DeviceError, DeviceIOError, DeviceNotFoundError
from simulators.mosquitto import free_port
from simulators.pty_port import PtyPort


def scanner_cfg(port: str) -> SerialLineScannerConfig:
    return SerialLineScannerConfig.model_validate({"type": "serial_line_scanner", "port": port})


def test_absent_serial_port_is_not_present(tmp_path: Path) -> None:
    path = str(tmp_path / "usb-scanner-if00")
    with pytest.raises(DeviceNotFoundError) as err:
        SerialLink(scanner_cfg(path), timeout=0.1).open()
    assert str(err.value) == f"{path}: not present"


def test_unplugged_serial_port_is_not_present(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "usb-scanner-if00")
    port.plug()
    link = SerialLink(scanner_cfg(port.url), timeout=0.1)
    link.open()
    try:
        port.unplug()  # the symlink goes, the pty closes: the read fails (EIO)
        with pytest.raises(DeviceIOError) as err:
            for _ in range(20):
                link.read()
        assert str(err.value) == f"{port.url}: not present"
    finally:
        link.close()
        port.close()


def test_tcp_serial_port_refused_in_words() -> None:
    url = f"socket://127.0.0.1:{free_port()}"
    with pytest.raises(DeviceError) as err:
        SerialLink(scanner_cfg(url), timeout=0.1).open()
    assert str(err.value) == f"{url}: connection refused"


def test_modbus_tcp_refused_in_words() -> None:
    port = free_port()
    cfg = ModbusScaleConfig.model_validate(
        {"type": "modbus_scale", "transport": "tcp", "host": "127.0.0.1", "tcp_port": port}
    )
    with pytest.raises(DeviceNotFoundError) as err:
        ModbusScaleDriver("scale", cfg).open()
    assert str(err.value) == f"127.0.0.1:{port}: connection refused"


def test_modbus_rtu_absent_port_is_not_present(tmp_path: Path) -> None:
    path = str(tmp_path / "usb-rs485-if00")
    cfg = ModbusScaleConfig.model_validate({"type": "modbus_scale", "port": path})
    with pytest.raises(DeviceNotFoundError) as err:
        ModbusScaleDriver("scale", cfg).open()
    assert str(err.value) == f"{path}: not present"
