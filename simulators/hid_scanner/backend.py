"""A pyusb backend (``usb.backend.IBackend``) with simulated HID scanners plugged into it.

``usb.core.find(backend=SimBackend(...))`` sees each :class:`SimDevice` with real descriptors,
the way pyusb's own ``tests/test_find.py`` fakes a bus; every call above the backend (find,
Device, claim, read, dispose_resources) is the real pyusb stack. Descriptors::

    device          bcdUSB 2.00, class 0 (per interface), VID:PID, strings 1/2/3 (iSerialNumber 3)
    configuration   bConfigurationValue 1, bus powered, 100 mA, one interface
    interface 0     class 3 (HID); keyboard: subclass 1 boot, protocol 1 keyboard;
                    pos: subclass 0, protocol 0 (usage page 0x8C is in the report descriptor)
                    + HID class descriptor 0x21 naming the report descriptor (0x22)
    endpoint 0x81   interrupt IN, wMaxPacketSize 8 (keyboard) or 64 (pos), bInterval 10 / 1

Behaviour of a real device under Linux usbfs, as pyusb raises it (``../shared/RELIABILITY.md``
U1-U4): the ``usbhid`` kernel driver is bound after every (re-)enumeration, so claiming before
``detach_kernel_driver`` fails with ``[Errno 16]``; ``busy_claims`` more claims fail with errno 16
after the detach too; a read with no report raises ``USBTimeoutError`` (errno 110) after the
timeout; after :meth:`SimDevice.unplug` every call on an old handle raises ``[Errno 19] No such
device (it may have been disconnected)`` and find() no longer lists it; :meth:`SimDevice.replug`
re-enumerates it at a new address.
"""

from __future__ import annotations

import array
import errno
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace as Desc  # a descriptor: pyusb reads fields as attributes
from typing import Any, Protocol

import usb.backend
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
    product: str = "Simulated HID scanner"
    generation: int = 1
    plugged: bool = True
    kernel_bound: bool = True
    configuration: int = 1
    claimed_by: object = None
    #: detach_kernel_driver calls, reads that timed out (errno 110) and feature reports
    #: received (SET_REPORT): what tests assert on.
    detach_calls: int = 0
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


class Sync(Protocol):
    """Refreshes a SimBackend's devices (see :mod:`simulators.hid_scanner.spool`)."""

    def __call__(self, *, force: bool = False) -> None: ...


def _no_sync(*, force: bool = False) -> None:
    del force


@dataclass(frozen=True)
class _Ref:
    device: SimDevice
    generation: int


class _Handle:
    def __init__(self, ref: _Ref) -> None:
        self.device, self.generation = ref.device, ref.generation


class SimBackend(usb.backend.IBackend):  # type: ignore[misc]
    """A virtual USB bus. ``sync`` (if given) is called before enumerating and while reading.

    Args:
        devices: the devices on the bus.
        sync: refreshes the devices from elsewhere (the spool directory, in another process);
            ``force=False`` lets it skip a refresh made a few milliseconds ago.
    """

    def __init__(self, devices: Iterable[SimDevice] = (), sync: Sync | None = None) -> None:
        super().__init__()
        self.devices = list(devices)
        self._sync: Sync = sync or _no_sync
        #: open_device minus close_device calls: handles pyusb still holds (leak check).
        self.open_handles = 0
        self._lock = threading.Lock()

    # ---- enumeration and descriptors -------------------------------------------------
    def enumerate_devices(self) -> list[_Ref]:
        self._sync(force=True)
        return [_Ref(d, d.generation) for d in self.devices if d.plugged]

    def get_parent(self, dev: _Ref) -> None:
        return None

    def get_device_descriptor(self, dev: _Ref) -> Desc:
        d = dev.device
        return Desc(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=d.vid, idProduct=d.pid,
            bcdDevice=0x0100, iManufacturer=1, iProduct=2, iSerialNumber=3 if d.serial else 0,
            bNumConfigurations=1, bus=1, address=(10 + dev.generation) % 128 or 1,
            port_number=1, port_numbers=(1,), speed=2,
        )  # fmt: skip

    def get_configuration_descriptor(self, dev: _Ref, config: int) -> Desc:
        if config != 0:
            raise IndexError(config)
        return Desc(
            bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1,
            bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80, bMaxPower=50,
            extra_descriptors=[],
        )  # fmt: skip

    def get_interface_descriptor(self, dev: _Ref, intf: int, alt: int, config: int) -> Desc:
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError((intf, alt, config))
        keyboard = dev.device.mode == "keyboard"
        n = len(_report_descriptor(dev.device))
        hid = [9, 0x21, 0x11, 0x01, 0, 1, 0x22, n & 0xFF, n >> 8]
        return Desc(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0,
            bNumEndpoints=1, bInterfaceClass=3, bInterfaceSubClass=int(keyboard),
            bInterfaceProtocol=int(keyboard), iInterface=0, extra_descriptors=hid,
        )  # fmt: skip

    def get_endpoint_descriptor(self, dev: _Ref, ep: int, intf: int, alt: int, cfg: int) -> Desc:
        if (ep, intf, alt, cfg) != (0, 0, 0, 0):
            raise IndexError((ep, intf, alt, cfg))
        d = dev.device
        return Desc(
            bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=0x03,
            wMaxPacketSize=d.report_size, bInterval=10 if d.mode == "keyboard" else 1,
            bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    # ---- handles and interfaces ------------------------------------------------------
    def open_device(self, dev: _Ref) -> _Handle:
        handle = _Handle(dev)
        if _alive(handle).denied:
            raise usb_error(errno.EACCES)
        with self._lock:
            self.open_handles += 1
        return handle

    def close_device(self, dev_handle: _Handle) -> None:
        with self._lock:
            self.open_handles -= 1
        d = dev_handle.device
        with d.cond:
            if d.claimed_by is dev_handle:
                d.claimed_by = None

    def get_configuration(self, dev_handle: _Handle) -> int:
        return _alive(dev_handle).configuration

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        d = _alive(dev_handle)
        if d.kernel_bound:
            raise usb_error(errno.EBUSY)
        d.configuration = config_value

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return _alive(dev_handle).kernel_bound

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        d = _alive(dev_handle)
        if not d.kernel_bound:
            raise usb_error(errno.ENOENT)
        d.kernel_bound = False
        d.detach_calls += 1

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        _alive(dev_handle).kernel_bound = True

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        d = _alive(dev_handle)
        with d.cond:
            if d.kernel_bound or d.claimed_by not in (None, dev_handle):
                raise usb_error(errno.EBUSY)
            if d.busy_claims > 0:
                d.busy_claims -= 1
                raise usb_error(errno.EBUSY)
            d.claimed_by = dev_handle

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        d = _alive(dev_handle)
        with d.cond:
            if d.claimed_by is dev_handle:
                d.claimed_by = None

    # ---- transfers -------------------------------------------------------------------
    def intr_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        d = _alive(dev_handle)
        deadline = time.monotonic() + (timeout or 3600_000) / 1000
        while True:
            self._sync()
            with d.cond:
                _alive(dev_handle)
                if d.reports:
                    return _copy(d.reports.popleft(), buff)
                left = deadline - time.monotonic()
                if left <= 0:
                    d.idle_timeouts += 1
                    raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
                d.cond.wait(min(left, 0.01))

    def ctrl_transfer(
        self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int,  # noqa: N803
        wIndex: int, data: array.array[int], timeout: int,  # noqa: N803
    ) -> int:  # fmt: skip
        d = _alive(dev_handle)
        if bmRequestType in (0x80, 0x81) and bRequest == 0x06:
            desc = _descriptor(d, wValue >> 8, wValue & 0xFF, bmRequestType)
            return _copy(desc[: len(data)], data)  # a device sends at most wLength bytes
        if bmRequestType == 0x21 and bRequest == 0x09:  # HID SET_REPORT
            d.feature_reports.append(bytes(data))
            return len(data)
        if bmRequestType == 0x21 and bRequest == 0x0A:  # HID SET_IDLE
            return 0
        raise usb_error(errno.EPIPE)


def _alive(handle: _Handle) -> SimDevice:
    d = handle.device
    if not d.plugged or d.generation != handle.generation:
        raise usb_error(errno.ENODEV)
    return d


def _copy(src: bytes, buff: array.array[int]) -> int:
    if len(src) > len(buff) * buff.itemsize:
        raise usb_error(errno.EOVERFLOW)
    buff[: len(src)] = array.array("B", src)
    return len(src)


def _report_descriptor(d: SimDevice) -> bytes:
    return POS_DESCRIPTOR if d.mode == "pos" else BOOT_KEYBOARD_DESCRIPTOR


def _descriptor(d: SimDevice, kind: int, index: int, request_type: int) -> bytes:
    if kind == 0x22 and request_type == 0x81:
        return _report_descriptor(d)
    if kind == 0x03:
        if index == 0:
            return bytes([4, 3, 0x09, 0x04])  # LANGID en-US
        text = {1: "edge-agent sim", 2: d.product, 3: d.serial or ""}.get(index)
        if text is not None:
            raw = text.encode("utf-16-le")
            return bytes([2 + len(raw), 3]) + raw
    raise usb_error(errno.EPIPE)
