"""``HidScannerDriver``: a USB HID handheld scanner read directly through pyusb.

Open sequence (``docs/reliability.md`` U1-U4; docs/protocols.md §2.2 "Reading with pyusb")::

    usb.core.find(idVendor, idProduct[, serial], backend)   absent -> DeviceNotFoundError
    is_kernel_driver_active(intf) -> detach_kernel_driver   once per attach: usbhid re-binds
                                                            only when the device re-enumerates
    get_active_configuration (set_configuration if none)    after the detach, never before
    claim_interface(intf)                                   errno 16/13 -> DeviceInitError
    pos mode: report descriptor must set usage page 0x8C    else DeviceInitError (wrong mode)
    loop: read(ep IN, wMaxPacketSize, 100-500 ms)           errno 110 = idle, 19 = unplugged

``close()`` releases the interface and the handle (``usb.util.dispose_resources``). It does not
re-attach usbhid: on a sorting-line PC the scanner must not type into the console, and a
re-attach would need a second detach on every reconnect.

For tests, ``HidScannerDriver(id, cfg, backend=...)`` takes a pyusb backend object (the
simulator's ``SimBackend``); the daemon builds drivers without it and the backend comes from
``EDGE_AGENT_USB_BACKEND`` (see :mod:`drivers.hid_scanner.usbio`).
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import usb.core
import usb.util

from drivers.base import DetectedDevice, Driver
from drivers.common.framing import Event, Reject
from drivers.hid_scanner import usbio
from drivers.hid_scanner.config import HidScannerConfig
from drivers.hid_scanner.framer import make_framer
from drivers.hid_scanner.parser import parse_frame
from drivers.reasons import R
from edge_agent.errors import DeviceInitError, DeviceIOError, DeviceNotFoundError, EdgeAgentError
from edge_agent.reading import Decoded

#: Feature report that switches a Honeywell scanner to HID POS (WebHidBarcodeScanner main.js).
HONEYWELL_POS_ON = b"\xfe\x01"


class HidScannerDriver(Driver[HidScannerConfig]):
    """A handheld scanner in USB HID keyboard-wedge or HID POS mode.

    Args:
        device_id: the config id.
        cfg: validated settings.
        backend: a pyusb backend object; None takes it from ``EDGE_AGENT_USB_BACKEND``.
    """

    kind: ClassVar[str] = "hid_scanner"
    REJECTS: ClassVar[frozenset[R]] = frozenset(
        {
            R.BAD_LENGTH,
            R.BAD_REPORT_ID,
            R.OVERSIZE,
            R.PARTIAL,
            R.MISSING_CONTINUATION,
            R.ROLLOVER,
            R.UNKNOWN_KEY,
            R.BAD_AIM,
            R.EMPTY,
            R.GARBLED,
        }
    )
    Config = HidScannerConfig

    def __init__(self, device_id: str, cfg: HidScannerConfig, *, backend: Any = None) -> None:
        super().__init__(device_id, cfg)
        self._backend = backend
        self._spec = "" if backend is not None else usbio.backend_spec()
        self._dev: Any = None
        self._ep = 0
        self._size = 0
        self._framer = make_framer(cfg)
        #: detach_kernel_driver calls made (one per attach of the device; T11 counts them).
        self.detaches = 0
        if self._spec:
            self.log.warning("usb_backend_override", env=usbio.ENV_BACKEND, value=self._spec)

    def open(self) -> None:
        """Find, detach usbhid, claim. Raises DeviceNotFoundError or DeviceInitError."""
        self.close()
        where = self.cfg.where
        backend = self._backend if self._backend is not None else usbio.resolve_backend(self._spec)
        with usbio.usb_errors(where, opening=True):
            dev = usbio.find_device(self.cfg, backend)
        if dev is None:
            msg = f"{where}: no such USB device (check lsusb, the cable, vid/pid/serial)"
            raise DeviceNotFoundError(msg)
        try:
            with usbio.usb_errors(where, opening=True):
                self._attach(dev)
        except BaseException:
            self._dispose(dev)
            raise
        self._dev = dev
        self._framer = make_framer(self.cfg)
        self.log.info("usb_opened", usb=where, mode=self.cfg.mode, endpoint=hex(self._ep))

    def _attach(self, dev: Any) -> None:
        intf_no = self.cfg.interface
        if dev.is_kernel_driver_active(intf_no):
            dev.detach_kernel_driver(intf_no)
            self.detaches += 1
            self.log.info("kernel_driver_detached", usb=self.cfg.where, interface=intf_no)
        intf = self._interface(usbio.active_configuration(dev), intf_no)
        ep = usbio.interrupt_in(intf)
        if ep is None:
            msg = f"{self.cfg.where}: interface {intf_no} has no interrupt IN endpoint"
            raise DeviceInitError(msg)
        usb.util.claim_interface(dev, intf_no)
        if self.cfg.mode == "pos":
            self._check_pos(dev, intf_no)
        self._ep, self._size = ep.bEndpointAddress, ep.wMaxPacketSize

    def _interface(self, config: Any, intf_no: int) -> Any:
        intf = usb.util.find_descriptor(config, bInterfaceNumber=intf_no)
        if intf is None or intf.bInterfaceClass != 0x03:
            msg = f"{self.cfg.where}: interface {intf_no} is not a HID interface (class 3)"
            raise DeviceInitError(msg)
        if self.cfg.mode == "keyboard" and intf.bInterfaceProtocol != 0x01:
            msg = (
                f"{self.cfg.where}: interface {intf_no} is not a boot keyboard (protocol "
                f'{intf.bInterfaceProtocol}); is the scanner in HID POS mode? set mode = "pos"'
            )
            raise DeviceInitError(msg)
        return intf

    def _check_pos(self, dev: Any, intf_no: int) -> None:
        pages = usbio.usage_pages(usbio.report_descriptor(dev, intf_no))
        if usbio.POS_USAGE_PAGE not in pages:
            msg = (
                f"{self.cfg.where}: report descriptor has no HID POS usage page 0x8C "
                f'(pages {sorted(pages)}); is the scanner in keyboard mode? set mode = "keyboard"'
            )
            raise DeviceInitError(msg)
        if self.cfg.pos_enable_report:
            usbio.send_feature_report(dev, intf_no, HONEYWELL_POS_ON)

    def close(self) -> None:
        """Release the interface and the handle; idempotent. A partial code is dropped."""
        dev, self._dev = self._dev, None
        self._pending.clear()
        self._framer = make_framer(self.cfg)
        if dev is not None:
            self._dispose(dev)

    def _dispose(self, dev: Any) -> None:
        try:
            usb.util.dispose_resources(dev)
        except (usb.core.USBError, ValueError) as err:
            self.log.debug("usb_dispose_failed", error=str(err))

    def _read_events(self, timeout: float) -> Sequence[Event | Decoded]:
        dev = self._dev
        if dev is None:
            msg = f"{self.cfg.where}: not open"
            raise DeviceIOError(msg)
        # rounded up: a read cut short of the caller's deadline would be followed by a 1 ms one
        wait_ms = max(1, min(self.cfg.read_timeout_ms, math.ceil(timeout * 1000)))
        try:
            data = dev.read(self._ep, self._size, wait_ms)
        except usb.core.USBError as err:
            return self._read_error(err)
        return self._framer.feed(bytes(data), time.monotonic())

    def _read_error(self, err: Any) -> Sequence[Event | Decoded]:
        if isinstance(err, usb.core.USBTimeoutError) or err.errno == errno.ETIMEDOUT:
            return self._framer.expire(time.monotonic())  # idle: no log line (U4)
        if err.errno == errno.EOVERFLOW:
            return [Reject(R.BAD_LENGTH, b"")]  # a report longer than wMaxPacketSize
        raise usbio.translate(self.cfg.where, err, opening=False) from err

    def decode(self, frame: bytes) -> list[Decoded]:
        """The one reading of a scan. Raises FrameError."""
        return [parse_frame(frame, self.cfg)]

    @staticmethod
    def detect() -> list[DetectedDevice]:
        """HID interfaces visible to pyusb (``edge-agent ports``); empty without libusb."""
        found = []
        try:
            backend = usbio.resolve_backend(usbio.backend_spec())
            for dev in usb.core.find(find_all=True, backend=backend):
                for intf in (i for c in dev for i in c if i.bInterfaceClass == 0x03):
                    mode = "boot keyboard" if intf.bInterfaceProtocol == 0x01 else "other"
                    port = f"usb:{dev.idVendor:04x}:{dev.idProduct:04x}:{intf.bInterfaceNumber}"
                    found.append(DetectedDevice("hid_scanner", port, f"HID {mode}, bus {dev.bus}"))
        except (usb.core.USBError, ValueError, EdgeAgentError):
            return found
        return found
