"""Boot the lab's guest under qemu (TCG) and talk to it: job runner, QMP, USB serial, power cut.

One :class:`Guest` is one qemu process on a throwaway qcow2 overlay of an image, with

* a virtio-9p share (``share``, mounted at ``/mnt/lab`` in the guest) through which
  :meth:`Guest.run` hands shell jobs to ``vmlab-runner.service`` and gets output and exit code
  back (0.2-0.3 s per command);
* the serial console in ``console.log`` (kept for diagnosis when a scenario fails);
* a QMP socket (:class:`Qmp`) for USB hotplug and keyboard input;
* optionally an emulated FTDI USB-serial adapter on an xHCI bus (:class:`UsbSerial`), kept
  attached by ``socat`` and exposed on the host as an ordinary pty;
* user networking: the host is 10.0.2.2 from the guest (a broker on the host's loopback).

:meth:`Guest.power_cut` SIGKILLs qemu: the guest loses its RAM (page cache included) while what
qemu already wrote survives in the host's page cache, as after a power cut on a disk that
honours flushes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm.image import BaseImage


class GuestError(RuntimeError):
    """The guest did not boot, a job failed or timed out; the message carries the console tail."""


@dataclass(frozen=True)
class Result:
    """What a job printed (stdout and stderr together) and its exit code."""

    rc: int
    out: str
    seconds: float


class Qmp:
    """A minimal QMP client (JSON lines over a unix socket); events are kept in ``events``."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            err = "QMP connection closed"
            raise GuestError(err)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str, **arguments: Any) -> Any:
        """Run one command; returns its ``return`` value, raises on an ``error``."""
        req: dict[str, Any] = {"execute": name}
        if arguments:
            req["arguments"] = arguments
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                err = f"QMP {name} {arguments}: {msg['error']}"
                raise GuestError(err)
            return msg.get("return")

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for an event named ``name`` (also looks at those already received)."""
        for i, ev in enumerate(self.events):
            if ev["event"] == name:
                return self.events.pop(i)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = self._read()
                if msg.get("event") == name:
                    return msg
                if "event" in msg:
                    self.events.append(msg)
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(30.0)
        err = f"no QMP event {name} within {timeout} s"
        raise GuestError(err)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


class UsbSerial:
    """The emulated FTDI adapter's chardev, kept connected by socat to a host pty.

    qemu attaches a ``usb-serial`` device only while something is connected to its chardev;
    socat (``UNIX-CONNECT`` <-> ``PTY``) keeps it attached and gives the host side an ordinary
    tty at ``pty`` that a simulator writes to.
    """

    def __init__(self, sock: Path, pty: Path, serial: str) -> None:
        self.sock = sock
        self.pty = pty
        self.serial = serial
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def by_id(self) -> str:
        """The device's udev by-id name in the guest."""
        return f"/dev/serial/by-id/usb-QEMU_QEMU_USB_SERIAL_{self.serial}-if00-port0"

    def connect(self, timeout: float = 10.0) -> None:
        """Start socat once qemu listens on the chardev socket; wait for the pty link."""
        deadline = time.monotonic() + timeout
        while not self.sock.exists():
            if time.monotonic() > deadline:
                msg = f"qemu never created {self.sock}"
                raise GuestError(msg)
            time.sleep(0.05)
        self.pty.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                "socat",
                f"UNIX-CONNECT:{self.sock}",
                f"PTY,link={self.pty},raw,echo=0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not self.pty.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                msg = f"socat did not make {self.pty} (exit {self.proc.poll()})"
                raise GuestError(msg)
            time.sleep(0.02)

    def open(self) -> int:
        """A raw, non-blocking fd on the host pty (write what the scanner sends)."""
        import termios
        import tty

        fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        return fd

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.proc = None


class Guest:
    """One qemu process: a qcow2 overlay of ``image``, 9p share, console log, QMP, USB.

    Args:
        image: the base image (kernel, initrd, root filesystem).
        workdir: this guest's directory (overlay, share, console log, sockets).
        backing: boot this disk (e.g. an installed image) instead of ``image.disk``.
        usb_serial: the adapter's serial number, or None for no adapter at boot.
        usb_kbd: attach a ``usb-kbd`` (a keyboard-wedge scanner) on the xHCI bus.
        overlay: keep an existing overlay (a reboot after a power cut) instead of a new one.
    """

    def __init__(
        self,
        image: BaseImage,
        workdir: Path,
        *,
        backing: Path | None = None,
        usb_serial: str | None = "LAB0001",
        usb_kbd: bool = False,
    ) -> None:
        self.image = image
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.share = self.dir / "share"
        (self.share / "jobs").mkdir(parents=True, exist_ok=True)
        (self.share / "out").mkdir(parents=True, exist_ok=True)
        self.disk = self.dir / "disk.qcow2"
        self.backing = backing or image.disk
        self.console = self.dir / "console.log"
        self.qmp_path = self.dir / "qmp.sock"
        self.usb_sock = self.dir / "usb-serial.sock"
        self.usb_serial_id = usb_serial
        self.usb: UsbSerial | None = None
        self.usb_kbd = usb_kbd
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self._jobs = itertools.count(1)
        self.boot_s = 0.0
        self.boots = 0

    # ---- lifecycle -----------------------------------------------------------------------
    def create_overlay(self) -> None:
        """A fresh qcow2 overlay on the backing disk (a clean disk for this scenario)."""
        self.disk.unlink(missing_ok=True)
        fmt = "raw" if self.backing.suffix == ".raw" else "qcow2"  # never probe a raw image
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(self.backing),
                "-F",
                fmt,
                str(self.disk),
            ],
            check=True,
        )

    def command_line(self) -> list[str]:
        cmd = [
            "qemu-system-x86_64",
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1024",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 quiet loglevel=4 "
            "systemd.show_status=0",
            "-drive",
            f"file={self.disk},if=virtio,format=qcow2,cache=writeback",
            "-virtfs",
            f"local,path={self.share},mount_tag=lab,security_model=none,id=lab",
            # no option ROM: -kernel boots need no iPXE (ipxe-qemu is only a Recommends)
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            # appended to, so the console of every boot (power cuts) stays in one file
            "-chardev",
            f"file,id=console,path={self.console},append=on",
            "-serial",
            "chardev:console",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-device",
            "qemu-xhci,id=xhci",
            "-chardev",
            f"socket,id=usbser,path={self.usb_sock},server=on,wait=off",
        ]
        if self.usb_serial_id is not None:
            cmd += ["-device", self.usb_serial_device(self.usb_serial_id)]
        if self.usb_kbd:
            cmd += ["-device", "usb-kbd,bus=xhci.0,id=kbd1"]
        return cmd

    @staticmethod
    def usb_serial_device(serial: str) -> str:
        return f"usb-serial,bus=xhci.0,chardev=usbser,id=us1,serial={serial}"

    def start(self, *, new_disk: bool = True, timeout: float = 120.0) -> None:
        """Boot (a new overlay unless ``new_disk`` is False) and wait for the job runner."""
        if new_disk or not self.disk.exists():
            self.create_overlay()
        for path in (self.qmp_path, self.usb_sock, self.share / "out" / "runner.up"):
            path.unlink(missing_ok=True)
        for stale in (*(self.share / "jobs").iterdir(), *(self.share / "out").iterdir()):
            stale.unlink()
        t0 = time.monotonic()
        with self.console.open("a") as c:
            c.write(f"\n===== boot {self.boots + 1} =====\n")
        with (self.dir / "qemu.stderr").open("ab") as err:
            self.proc = subprocess.Popen(
                self.command_line(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        self.qmp = Qmp(self.qmp_path)
        self.usb = UsbSerial(self.usb_sock, self.dir / "scanner.pty", self.usb_serial_id or "")
        self.usb.connect()
        deadline = time.monotonic() + timeout
        while not (self.share / "out" / "runner.up").exists():
            if self.proc.poll() is not None:
                msg = f"qemu exited with {self.proc.returncode}\n{self.console_tail()}"
                raise GuestError(msg)
            if time.monotonic() > deadline:
                msg = f"guest not up within {timeout} s\n{self.console_tail()}"
                raise GuestError(msg)
            time.sleep(0.1)
        self.boots += 1
        self.boot_s = time.monotonic() - t0

    def shutdown(self, timeout: float = 60.0) -> None:
        """A clean poweroff (systemd stops every unit, file systems are synced)."""
        if self.proc is None:
            return
        if self.qmp is not None:
            with contextlib.suppress(GuestError, OSError):
                self.qmp.command("system_powerdown")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._closed()

    def power_cut(self) -> None:
        """SIGKILL qemu: the guest's RAM and page cache are gone, written blocks stay."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._closed()

    def _closed(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.usb is not None:
            self.usb.close()
        self.proc = None

    def close(self) -> None:
        """Whatever state it is in: kill qemu and socat."""
        if self.proc is not None and self.proc.poll() is None:
            self.power_cut()
        self._closed()

    # ---- jobs --------------------------------------------------------------------------
    def run(self, script: str, timeout: float = 120.0, check: bool = True) -> Result:
        """Run a bash ``script`` in the guest as root; with ``check`` under ``set -euo
        pipefail`` and raising when it fails, else every line runs and the last one's exit
        code is returned."""
        n = next(self._jobs)
        jobs, out = self.share / "jobs", self.share / "out"
        tmp = jobs / f"{n}.tmp"
        # checked jobs stop at the first failing command; unchecked ones run every line
        tmp.write_text(("set -euo pipefail\n" if check else "") + script + "\n")
        t0 = time.monotonic()
        tmp.rename(jobs / f"{n}.sh")
        rc_file = out / f"{n}.rc"
        deadline = t0 + timeout
        while not rc_file.exists():
            if self.proc is None or self.proc.poll() is not None:
                msg = f"qemu is not running (job {script[:80]!r})"
                raise GuestError(msg)
            if time.monotonic() > deadline:
                partial = (
                    (out / f"{n}.out").read_text(errors="replace")
                    if (out / f"{n}.out").exists()
                    else ""
                )
                msg = f"job timed out after {timeout} s: {script[:200]!r}\n{partial[-2000:]}"
                raise GuestError(msg)
            time.sleep(0.05)
        res = Result(
            int(rc_file.read_text().strip() or "255"),
            (out / f"{n}.out").read_text(errors="replace"),
            time.monotonic() - t0,
        )
        if check and res.rc != 0:
            msg = f"job failed with exit {res.rc}: {script[:300]!r}\n{res.out[-3000:]}"
            raise GuestError(msg)
        return res

    def wait_until(self, script: str, timeout: float = 30.0, interval: float = 0.3) -> float:
        """Run ``script`` until it exits 0 (within ``timeout``); returns the seconds it took."""
        t0 = time.monotonic()
        last = ""
        while time.monotonic() - t0 < timeout:
            res = self.run(script, timeout=timeout, check=False)
            if res.rc == 0:
                return time.monotonic() - t0
            last = res.out
            time.sleep(interval)
        msg = f"not true within {timeout} s: {script!r}\nlast output: {last[-2000:]}"
        raise GuestError(msg)

    def console_tail(self, lines: int = 40) -> str:
        if not self.console.exists():
            return "(no console log)"
        text = self.console.read_text(errors="replace").splitlines()
        return "console:\n" + "\n".join(text[-lines:])

    # ---- USB serial hotplug ------------------------------------------------------------
    def unplug_usb_serial(self) -> None:
        """QMP ``device_del`` of the adapter; returns once qemu reports it gone."""
        assert self.qmp is not None
        self.qmp.command("device_del", id="us1")
        self.qmp.wait_event("DEVICE_DELETED", timeout=10)

    def plug_usb_serial(self, serial: str = "LAB0001") -> None:
        """QMP ``device_add`` of the adapter (the chardev stays connected through socat)."""
        assert self.qmp is not None
        self.qmp.command(
            "device_add",
            driver="usb-serial",
            bus="xhci.0",
            chardev="usbser",
            id="us1",
            serial=serial,
        )
