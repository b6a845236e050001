"""The lab's guest disk: a Debian bookworm minbase system built with debootstrap, cached.

``base_image()`` returns a raw ext4 image plus the kernel and a trimmed initrd to boot it with
``-kernel/-initrd``. The image is built once per set of builder inputs (this file, the mirror,
the suite): the cache key is a hash of them, so a second run (or a CI machine with a warm
cache) reuses it. The guest has systemd, udev, python3 + venv, libusb (pyusb), an autologin
root shell on the serial console and ``vmlab-runner.service``, which runs the job files the
host drops into the virtio-9p share (see ``qemu.Guest.run``).

The build needs root (debootstrap, chroot) and a reachable Debian mirror: the one apt uses.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "python3",
    "python3-venv",
    "linux-image-amd64",
    "initramfs-tools",
    "kmod",
    "procps",
    "libusb-1.0-0",
]
#: Modules the trimmed initrd carries: enough to mount an ext4 root on virtio-blk.
INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]
IMAGE_SIZE = "2G"

#: The guest half of the job runner: runs every ``jobs/N.sh`` in the 9p share, writes
#: ``out/N.out`` (stdout and stderr) and then ``out/N.rc`` (exit code), renamed into place
#: so the host never reads a half-written file. Jobs run concurrently (a job may wait on another).
RUNNER = r"""#!/bin/bash
# vmlab-runner: runs the job files the host puts in /mnt/lab/jobs (tests/vm/image.py).
shopt -s nullglob
mkdir -p /mnt/lab/out
echo up >/mnt/lab/out/runner.up
while true; do
  for job in /mnt/lab/jobs/*.sh; do
    n=$(basename "$job" .sh)
    mv "$job" "/mnt/lab/jobs/$n.run" || continue
    (
      rc=0
      cd /root && timeout 600 bash "/mnt/lab/jobs/$n.run" >"/mnt/lab/out/$n.out" 2>&1 </dev/null \
        || rc=$?
      echo "$rc" >"/mnt/lab/out/$n.rc.tmp"
      mv "/mnt/lab/out/$n.rc.tmp" "/mnt/lab/out/$n.rc"
    ) &
  done
  sleep 0.1
done
"""

RUNNER_UNIT = """[Unit]
Description=vmlab job runner (virtio-9p share at /mnt/lab)
RequiresMountsFor=/mnt/lab
After=local-fs.target

[Service]
ExecStart=/usr/local/sbin/vmlab-runner
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

FSTAB = """/dev/vda / ext4 rw,errors=remount-ro 0 1
lab /mnt/lab 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
"""

NETWORK = """[Match]
Name=eth0

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
"""

AUTOLOGIN = """[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I $TERM
"""


@dataclass(frozen=True)
class BaseImage:
    """A built guest: root filesystem image (and its tree, for images derived by chroot), kernel
    and initrd, and the key they were built at."""

    disk: Path
    tree: Path
    kernel: Path
    initrd: Path
    key: str
    build_s: float | None  # seconds the build took; None when it came from the cache


class BuildError(RuntimeError):
    """The image could not be built (the message names the step and its output)."""


def cache_dir() -> Path:
    """``$EDGE_AGENT_VM_CACHE``, else ``~/.cache/edge-agent-vm``."""
    env = os.environ.get("EDGE_AGENT_VM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edge-agent-vm"


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 ``URIs:`` or one-line ``deb``)."""
    files = [*sorted(Path("/etc/apt/sources.list.d").glob("*")), Path("/etc/apt/sources.list")]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if "security" not in m.group(1) and "security" not in m.group(2):
                return m.group(1)
    return "http://deb.debian.org/debian"


def build_key(mirror: str) -> str:
    """Hash of everything the build depends on: this file, the mirror, the suite."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(f"\0{mirror}\0{SUITE}".encode())
    return h.hexdigest()[:16]


def missing_tools() -> list[str]:
    """Why the lab cannot run here (empty when it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("not root (debootstrap and chroot need root)")
    for tool in ("debootstrap", "mkfs.ext4", "qemu-system-x86_64", "qemu-img", "socat"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            why.append(f"{tool} not found (./scripts/setup installs it)")
    return why


def _run(step: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if rc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        msg = f"image build: {step} failed (exit {rc.returncode}); log {log}:\n{tail}"
        raise BuildError(msg)


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _configure(rootfs: Path) -> None:
    """The guest's own files: hostname, fstab, network, autologin console, job runner."""
    _write(rootfs, "/etc/hostname", "vmlab\n")
    _write(rootfs, "/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 vmlab\n")
    _write(rootfs, "/etc/fstab", FSTAB)
    (rootfs / "mnt/lab").mkdir(parents=True, exist_ok=True)
    _write(rootfs, "/etc/systemd/network/10-eth0.network", NETWORK)
    _write(rootfs, "/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf", AUTOLOGIN)
    _write(rootfs, "/usr/local/sbin/vmlab-runner", RUNNER, 0o755)
    _write(rootfs, "/etc/systemd/system/vmlab-runner.service", RUNNER_UNIT)
    # A short journal flush and no waiting on clocks the guest does not have.
    _write(rootfs, "/etc/systemd/journald.conf.d/vmlab.conf", "[Journal]\nStorage=persistent\n")
    _write(
        rootfs,
        "/etc/initramfs-tools/conf.d/vmlab.conf",
        "MODULES=list\nCOMPRESS=gzip\n",
    )
    _write(rootfs, "/etc/initramfs-tools/modules", "\n".join(INITRD_MODULES) + "\n")
    # A technician's login (joins group edge-agent once install.sh has created it).
    passwd = (rootfs / "etc/passwd").read_text()
    if "\ntech:" not in passwd:
        with (rootfs / "etc/passwd").open("a") as f:
            f.write("tech:x:1000:1000:technician:/home/tech:/bin/bash\n")
        with (rootfs / "etc/group").open("a") as f:
            f.write("tech:x:1000:\n")
        with (rootfs / "etc/shadow").open("a") as f:
            f.write("tech:*:19000:0:99999:7:::\n")
        (rootfs / "home/tech").mkdir(parents=True, exist_ok=True)
        os.chown(rootfs / "home/tech", 1000, 1000)
    # root without a password on the serial console (autologin), never over the network
    shadow = (rootfs / "etc/shadow").read_text()
    (rootfs / "etc/shadow").write_text(re.sub(r"^root:[^:]*:", "root::", shadow, flags=re.M))


def base_image(log: Path | None = None) -> BaseImage:
    """The cached base image, built first if this key has none yet.

    Raises:
        BuildError: a build step failed.
    """
    mirror = apt_mirror()
    key = build_key(mirror)
    root = cache_dir()
    out = root / f"base-{key}"
    disk, kernel, initrd = out / "rootfs.raw", out / "vmlinuz", out / "initrd.img"
    tree = out / "rootfs"
    if (out / "done").exists():
        return BaseImage(disk, tree, kernel, initrd, key, None)
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f"build-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = log or work / "build.log"
    rootfs = work / "rootfs"
    debs = root / "debs"  # downloaded packages, reused by a rebuild with another key
    debs.mkdir(exist_ok=True)
    _run(
        "debootstrap",
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        log,
    )
    _configure(rootfs)
    chroot_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    _run(
        "enable units",
        [
            "chroot",
            str(rootfs),
            "systemctl",
            "enable",
            "systemd-networkd.service",
            "vmlab-runner.service",
        ],
        log,
        chroot_env,
    )
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        msg = f"image build: no kernel in {rootfs / 'boot'}"
        raise BuildError(msg)
    version = kernels[-1].name.removeprefix("vmlinuz-")
    # The trimmed initrd (MODULES=list): boots in ~15 s instead of ~22 s under TCG.
    _run(
        "update-initramfs",
        ["chroot", str(rootfs), "update-initramfs", "-u", "-k", version],
        log,
        chroot_env,
    )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kernels[-1], kernel)
    shutil.copy2(rootfs / "boot" / f"initrd.img-{version}", initrd)
    # apt's package cache is not needed in the guest (it has no network for apt anyway)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    _run(
        "mkfs.ext4",
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(disk), IMAGE_SIZE],
        log,
    )
    rootfs.rename(tree)
    shutil.rmtree(work, ignore_errors=True)
    (out / "done").write_text(f"{time.monotonic() - t0:.1f}\n")
    # older keys' images are dead weight
    for old in root.glob("base-*"):
        if old != out:
            shutil.rmtree(old, ignore_errors=True)
    return BaseImage(disk, tree, kernel, initrd, key, time.monotonic() - t0)
