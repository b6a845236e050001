"""A pyusb backend (``usb.backend.IBackend``) with simulated HID scanners plugged into it.

``usb.core.find(backend=SimBackend(...))`` sees each :class:`SimDevice` with real descriptors,
the way pyusb's own ``tests/test_find.py`` fakes a bus; every call above the backend (find,
Device, claim, read, dispose_resources) is the real pyusb stack. Descriptors: see
:mod:`simulators.hid_scanner.device`.

Behaviour of a real device under Linux usbfs, as pyusb raises it (``docs/reliability.md``
U1-U4): the ``usbhid`` kernel driver is bound after every (re-)enumeration, so claiming before
``detach_kernel_driver`` fails with ``[Errno 16]``; ``busy_claims`` more claims fail with errno 16
after the detach too; a read with no report raises ``USBTimeoutError`` (errno 110) after the
timeout; after :meth:`SimDevice.unplug` every call on an old handle raises ``[Errno 19] No such
device (it may have been disconnected)`` and find() no longer lists it; :meth:`SimDevice.replug`
re-enumerates it at a new address. A ``stalled`` device opens fine and fails every read with
``[Errno 32] Pipe error`` (a halted endpoint: the link breaks at once, again and again).
"""

from __future__ import annotations

import array
import errno
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import usb.backend
import usb.core

from simulators.hid_scanner.device import SimDevice, usb_error

if TYPE_CHECKING:
    from types import SimpleNamespace as Desc


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
        return dev.device.device_descriptor(dev.generation)

    def get_configuration_descriptor(self, dev: _Ref, config: int) -> Desc:
        if config != 0:
            raise IndexError(config)
        return dev.device.config_descriptor()

    def get_interface_descriptor(self, dev: _Ref, intf: int, alt: int, config: int) -> Desc:
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError((intf, alt, config))
        return dev.device.interface_descriptor()

    def get_endpoint_descriptor(self, dev: _Ref, ep: int, intf: int, alt: int, cfg: int) -> Desc:
        if (ep, intf, alt, cfg) != (0, 0, 0, 0):
            raise IndexError((ep, intf, alt, cfg))
        return dev.device.endpoint_descriptor()

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
            busy = d.kernel_bound or d.claimed_by not in (None, dev_handle)
            if not busy and d.busy_claims > 0:
                d.busy_claims -= 1
                busy = True
            if busy:
                d.busy_refusals += 1
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
        if d.stalled:
            raise usb_error(errno.EPIPE)
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
            desc = d.get_descriptor(wValue >> 8, wValue & 0xFF, bmRequestType)
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
