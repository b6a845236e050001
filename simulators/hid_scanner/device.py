"""One simulated HID scanner: its state, its descriptors and the errors libusb would raise.

Descriptors (what ``usb.core.find`` and ``lsusb -v`` would show)::

    device          bcdUSB 2.00, class 0 (per interface), VID:PID, strings 1/2/3 (iSerialNumber 3)
    configuration   bConfigurationValue 1, bus powered, 100 mA, one interface
    interface 0     class 3 (HID); keyboard: subclass 1 boot, protocol 1 keyboard;
                    pos: subclass 0, protocol 0 (usage page 0x8C is in the report descriptor)
                    + HID class descriptor 0x21 naming the report descriptor (0x22)
    endpoint 0x81   interrupt IN, wMaxPacketSize 8 (keyboard) or 64 (pos), bInterval 10 / 1

Every (re-)enumeration gets a new address and binds ``usbhid`` again, as on Linux.
"""

from __future__ import annotations

import errno
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace as Desc  # a descriptor: pyusb reads fields as attributes
from typing import Any

import usb.core

from simulators.hid_scanner.reports import BOOT_KEYBOARD_DESCRIPTOR, POS_DESCRIPTOR

#: libusb error codes as pyusb's libusb1 backend reports them: (code, errno, text).
ERRORS = {
    errno.EACCES: (-3, "Access denied (insufficient permissions)"),
    errno.ENODEV: (-4, "No such device (it may have been disconnected)"),
    errno.ENOENT: (-5, "Entity not found"),
    errno.EBUSY: (-6, "Resource busy"),
    errno.EOVERFLOW: (-8, "Overflow"),
    errno.EPIPE: (-9, "Pipe error"),
}


def usb_error(code: int) -> Any:
    """The ``usb.core.USBError`` pyusb's libusb1 backend raises for ``code``."""
    libusb, text = ERRORS[code]
    return usb.core.USBError(text, libusb, code)


@dataclass
class SimDevice:
    """One simulated scanner on the virtual bus; the test side calls send/unplug/replug."""

    vid: int
    pid: int
    serial: str | None
    mode: str = "keyboard"
    busy_claims: int = 0
    denied: bool = False  # opening fails with errno 13 (no udev rule)
    stalled: bool = False  # the interrupt IN endpoint is halted: every read fails with errno 32
    product: str = "Simulated HID scanner"
    generation: int = 1
    plugged: bool = True
    kernel_bound: bool = True
    configuration: int = 1
    claimed_by: object = None
    #: detach_kernel_driver calls, claims refused with errno 16, reads that timed out
    #: (errno 110) and feature reports received (SET_REPORT): what tests assert on.
    detach_calls: int = 0
    busy_refusals: int = 0
    idle_timeouts: int = 0
    feature_reports: list[bytes] = field(default_factory=list)
    reports: deque[bytes] = field(default_factory=deque)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def report_size(self) -> int:
        """wMaxPacketSize of the interrupt IN endpoint."""
        return 64 if self.mode == "pos" else 8

    def send(self, reports: Sequence[bytes]) -> bool:
        """Queue reports for the host to read; False (nothing queued) while unplugged."""
        with self.cond:
            if not self.plugged:
                return False
            self.reports.extend(reports)
            self.cond.notify_all()
            return True

    def unplug(self) -> None:
        """Pull the cable: pending reports are lost, open handles die with errno 19."""
        with self.cond:
            self.plugged = False
            self.reports.clear()
            self.claimed_by = None
            self.cond.notify_all()

    def replug(self, generation: int | None = None) -> None:
        """Plug back in: re-enumerated at a new address, usbhid bound again."""
        with self.cond:
            self.generation = generation if generation is not None else self.generation + 1
            self.plugged, self.kernel_bound, self.configuration = True, True, 1
            self.claimed_by = None
            self.reports.clear()
            self.cond.notify_all()

    # ---- descriptors -------------------------------------------------------------------
    def device_descriptor(self, generation: int) -> Desc:
        """The device descriptor as enumerated in plug ``generation``."""
        return Desc(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=self.vid, idProduct=self.pid,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3 if self.serial else 0,
            bNumConfigurations=1, bus=1, address=(10 + generation) % 128 or 1,
            port_number=1, port_numbers=(1,), speed=2,
        )  # fmt: skip

    @staticmethod
    def config_descriptor() -> Desc:
        """The one configuration."""
        return Desc(
            bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50,
            extra_descriptors=[],
        )  # fmt: skip

    def interface_descriptor(self) -> Desc:
        """The HID interface, with its HID class descriptor in ``extra_descriptors``."""
        keyboard = self.mode == "keyboard"
        n = len(self.report_descriptor())
        hid = [9, 0x21, 0x11, 0x01, 0, 1, 0x22, n & 0xFF, n >> 8]
        return Desc(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=1, bInterfaceClass=3, bInterfaceSubClass=int(keyboard),
            bInterfaceProtocol=int(keyboard), iInterface=0, extra_descriptors=hid,
        )  # fmt: skip

    def endpoint_descriptor(self) -> Desc:
        """The interrupt IN endpoint."""
        return Desc(
            bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=0x03,
            wMaxPacketSize=self.report_size, bInterval=10 if self.mode == "keyboard" else 1,
            bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    def report_descriptor(self) -> bytes:
        """The HID report descriptor (boot keyboard, or HID POS usage page 0x8C)."""
        return POS_DESCRIPTOR if self.mode == "pos" else BOOT_KEYBOARD_DESCRIPTOR

    def get_descriptor(self, kind: int, index: int, request_type: int) -> bytes:
        """GET_DESCRIPTOR on endpoint 0: strings (type 3) and the report descriptor (0x22)."""
        if kind == 0x22 and request_type == 0x81:
            return self.report_descriptor()
        if kind == 0x03:
            if index == 0:
                return bytes([4, 3, 0x09, 0x04])  # LANGID en-US
            text = {1: "edge-agent sim", 2: self.product, 3: self.serial or ""}.get(index)
            if text is not None:
                raw = text.encode("utf-16-le")
                return bytes([2 + len(raw), 3]) + raw
        raise usb_error(errno.EPIPE)
