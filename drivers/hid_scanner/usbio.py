"""pyusb plumbing for the HID scanner: backend choice, device lookup, error translation.

Error translation at the driver boundary (L6; ``docs/reliability.md`` U1-U4)::

    USBTimeoutError / [Errno 110]   idle: no report within the read timeout (not an error)
    [Errno 19] No such device       unplugged: DeviceIOError mid-read, DeviceNotFoundError on open
    [Errno 16] Resource busy        DeviceInitError: another program holds the interface
    [Errno 13] Access denied        DeviceInitError naming the udev rule / plugdev fix
    NoBackendError                  DeviceInitError: libusb-1.0 is not installed
    any other USBError              DeviceInitError on open, DeviceIOError mid-read

The backend hook. ``EDGE_AGENT_USB_BACKEND`` chooses what pyusb talks to::

    (unset or empty)    pyusb's own choice: libusb1, then openusb, then libusb0 (production)
    libusb1 | libusb0 | openusb
                        that pyusb backend, nothing else (field diagnosis)
    sim:<spool dir>     ``simulators.hid_scanner.spool_backend(<spool dir>)``: a pyusb
                        ``IBackend`` living in this process whose devices are plugged, unplugged
                        and fed reports through files in <spool dir> by another process

The value is a closed vocabulary: no module path is ever imported from the environment, the
production default is pyusb's untouched, and a daemon running on the simulator says so in a
``usb_backend_override`` warning at start. The end-to-end tests and ``edge-agent demo`` set it,
because there the daemon is a separate process that cannot be handed a backend object.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import usb.core
import usb.util

from drivers.hid_scanner.config import HidScannerConfig
from edge_agent.errors import ConfigError, DeviceInitError, DeviceIOError, DeviceNotFoundError

ENV_BACKEND = "EDGE_AGENT_USB_BACKEND"
PYUSB_BACKENDS = ("libusb1", "libusb0", "openusb")
#: HID class-specific descriptor types (HID 1.11 §7.1).
HID_REPORT_DESCRIPTOR = 0x22
#: HID POS Bar Code Scanner usage page (docs/protocols.md §2.1).
POS_USAGE_PAGE = 0x8C


def backend_spec() -> str:
    """The validated ``EDGE_AGENT_USB_BACKEND`` value ("" = pyusb default). Raises ConfigError."""
    value = os.environ.get(ENV_BACKEND, "").strip()
    if value in ("", *PYUSB_BACKENDS) or (value.startswith("sim:") and len(value) > 4):
        return value
    msg = f"${ENV_BACKEND} = {value!r}: expected {', '.join(PYUSB_BACKENDS)} or sim:<spool dir>"
    raise ConfigError(msg)


def resolve_backend(spec: str) -> Any:
    """The pyusb backend object for ``spec``; None lets pyusb choose. Raises DeviceInitError."""
    if not spec:
        return None
    if spec.startswith("sim:"):
        sim = importlib.import_module("simulators.hid_scanner")
        return sim.spool_backend(Path(spec[4:]))
    backend = importlib.import_module(f"usb.backend.{spec}").get_backend()
    if backend is None:
        msg = f"pyusb backend {spec} not available (is libusb-1.0-0 installed?)"
        raise DeviceInitError(msg)
    return backend


@contextlib.contextmanager
def usb_errors(where: str, *, opening: bool) -> Iterator[None]:
    """Translate pyusb errors into the edge-agent tree (see the module docstring)."""
    try:
        yield
    except usb.core.NoBackendError as err:
        msg = f"{where}: no pyusb backend: install libusb-1.0 ({err})"
        raise DeviceInitError(msg) from err
    except usb.core.USBError as err:
        raise translate(where, err, opening=opening) from err


def translate(where: str, err: Any, *, opening: bool) -> Exception:
    """The edge-agent exception for a pyusb ``USBError`` (see the module docstring)."""
    code = err.errno
    if code == errno.ENODEV:
        cls = DeviceNotFoundError if opening else DeviceIOError
        return cls(f"{where}: unplugged: {err}")
    if code == errno.EBUSY:
        return DeviceInitError(
            f"{where}: interface busy ({err}): another program (a second edge-agent?) has "
            "claimed it; the agent detaches the usbhid kernel driver itself"
        )
    if code == errno.EACCES:
        return DeviceInitError(
            f"{where}: access denied ({err}): add a udev rule such as "
            'SUBSYSTEM=="usb", ATTRS{idVendor}=="<vid>", ATTRS{idProduct}=="<pid>", '
            'GROUP="plugdev", MODE="0660" and put the service user in plugdev; never run as root'
        )
    if opening:
        return DeviceInitError(f"{where}: {err}")
    return DeviceIOError(f"{where}: {err}")


def find_device(cfg: HidScannerConfig, backend: Any) -> Any:
    """The first device matching VID:PID (and serial, if configured), or None."""
    found = usb.core.find(find_all=True, idVendor=cfg.vid, idProduct=cfg.pid, backend=backend)
    for dev in found:
        if cfg.serial is None or _serial(dev, cfg) == cfg.serial:
            return dev
        usb.util.dispose_resources(dev)  # reading the serial opened it
    return None


def _serial(dev: Any, cfg: HidScannerConfig) -> str | None:
    try:
        serial: str | None = dev.serial_number
    except ValueError as err:
        # pyusb turns an unreadable string descriptor (EACCES on open) into "no langid"
        denied = usb.core.USBError(str(err), None, errno.EACCES)
        raise translate(cfg.where, denied, opening=True) from err
    return serial


def active_configuration(dev: Any) -> Any:
    """The active configuration, setting the first one if the device is unconfigured."""
    try:
        return dev.get_active_configuration()
    except usb.core.USBError as err:
        if err.errno is not None:
            raise
    dev.set_configuration()
    return dev.get_active_configuration()


def interrupt_in(intf: Any) -> Any:
    """The interface's interrupt IN endpoint, or None."""
    return usb.util.find_descriptor(
        intf,
        custom_match=lambda e: (
            usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
            and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
        ),
    )


def report_descriptor(dev: Any, interface: int, length: int = 1024) -> bytes:
    """The HID report descriptor of ``interface`` (GET_DESCRIPTOR 0x22, HID 1.11 §7.1.1)."""
    request_type = usb.util.build_request_type(
        usb.util.CTRL_IN, usb.util.CTRL_TYPE_STANDARD, usb.util.CTRL_RECIPIENT_INTERFACE
    )
    data = dev.ctrl_transfer(request_type, 0x06, HID_REPORT_DESCRIPTOR << 8, interface, length)
    return bytes(data)


def usage_pages(descriptor: bytes) -> set[int]:
    """Every Usage Page (global item tag 0) set in a HID report descriptor (HID 1.11 §6.2.2)."""
    pages, i = set(), 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:  # long item: 0xFE, size, tag, data
            i += 3 + (descriptor[i + 1] if i + 1 < len(descriptor) else 0)
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        if prefix & 0xFC == 0x04 and size:
            pages.add(int.from_bytes(descriptor[i + 1 : i + 1 + size], "little"))
        i += 1 + size
    return pages


def send_feature_report(dev: Any, interface: int, report: bytes) -> None:
    """HID SET_REPORT (feature) with ``report[0]`` as the report id (HID 1.11 §7.2.2)."""
    request_type = usb.util.build_request_type(
        usb.util.CTRL_OUT, usb.util.CTRL_TYPE_CLASS, usb.util.CTRL_RECIPIENT_INTERFACE
    )
    dev.ctrl_transfer(request_type, 0x09, (0x03 << 8) | report[0], interface, report)
