"""Device reasons in words a technician can act on: "not present", "connection refused"."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import serial

from drivers.common.link import Link
from drivers.modbus_scale.config import ModbusScaleConfig
from drivers.modbus_scale.driver import ModbusScaleDriver
from drivers.serial_line_scanner import SerialLineScannerConfig
from edge_agent.errors import DeviceError, DeviceIOError, DeviceNotFoundError, in_words
from edge_agent.mqtt_client import reason_words
from simulators.mosquitto import free_port
from simulators.pty_port import PtyPort


def scanner_cfg(port: str) -> SerialLineScannerConfig:
    return SerialLineScannerConfig.model_validate({"type": "serial_line_scanner", "port": port})


def test_absent_serial_port_is_not_present(tmp_path: Path) -> None:
    path = str(tmp_path / "usb-scanner-if00")
    with pytest.raises(DeviceNotFoundError) as err:
        Link(scanner_cfg(path)).open()
    assert str(err.value) == f"{path}: not present"


def test_unplugged_serial_port_is_not_present(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "usb-scanner-if00")
    port.plug()
    link = Link(scanner_cfg(port.url))
    link.open()
    try:
        port.unplug()  # the symlink goes, the pty closes: the read fails (EIO)
        with pytest.raises(DeviceIOError) as err:
            for _ in range(20):
                link.read(0.1)
        assert str(err.value) == f"{port.url}: not present"
    finally:
        link.close()
        port.close()


def test_tcp_serial_port_refused_in_words() -> None:
    url = f"socket://127.0.0.1:{free_port()}"
    with pytest.raises(DeviceError) as err:
        Link(scanner_cfg(url)).open()
    assert str(err.value) == f"{url}: connection refused"


def test_modbus_tcp_refused_in_words() -> None:
    port = free_port()
    cfg = ModbusScaleConfig.model_validate(
        {
            "type": "modbus_scale",
            "transport": "tcp",
            "host": "127.0.0.1",
            "tcp_port": port,
            "registers": {"weight_register": 0, "unit": "kg", "decimals": 0},
        }
    )
    with pytest.raises(DeviceNotFoundError) as err:
        ModbusScaleDriver("scale", cfg).open()
    assert str(err.value) == f"127.0.0.1:{port}: connection refused"


def test_modbus_rtu_absent_port_is_not_present(tmp_path: Path) -> None:
    path = str(tmp_path / "usb-rs485-if00")
    cfg = ModbusScaleConfig.model_validate(
        {
            "type": "modbus_scale",
            "port": path,
            "registers": {"weight_register": 0, "unit": "kg", "decimals": 0},
        }
    )
    with pytest.raises(DeviceNotFoundError) as err:
        ModbusScaleDriver("scale", cfg).open()
    assert str(err.value) == f"{path}: not present"


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (OSError(errno.EHOSTUNREACH, "No route to host"), "no route to host"),
        (TimeoutError("timed out"), "timed out"),
        (OSError(errno.ENODEV, "No such device"), "not present"),
        (
            serial.SerialException("Could not open port socket://10.0.3.7:23: timed out"),
            "timed out",
        ),
        (
            serial.SerialException("Could not open port socket://h:23: [Errno 113] No route"),
            "no route to host",
        ),
        (socket.gaierror(-2, "Name or service not known"), "unknown host name"),
        (
            serial.SerialException("device reports readiness to read but returned no data"),
            "device disconnected",
        ),
        (ValueError("odd"), "odd"),
    ],
)
def test_in_words(err: BaseException, words: str) -> None:
    assert in_words(err) == words


@pytest.mark.parametrize(
    ("last_error", "words"),
    [
        ("CONNACK 0x87 Not authorized", "not authorised"),
        ("CONNACK 0x86 Bad user name or password", "not authorised: bad user name or password"),
        ("CONNACK 0x85 Client identifier not valid", "not authorised: client id refused"),
        ("Connection refused (errno 111)", "connection refused"),
        ("disconnected: Unspecified error", "broker closed the connection"),
        ("closed before CONNACK: Unspecified error", "broker closed the connection"),
        ("disconnected: Keep alive timeout", "timed out"),
        ("TimeoutError: timed out", "timed out"),
        (
            "TLS [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed",
            "TLS [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed",
        ),
        (None, None),
    ],
)
def test_broker_reason_words(last_error: str | None, words: str | None) -> None:
    assert reason_words(last_error) == words
