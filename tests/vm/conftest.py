"""Fixtures of the VM lab (``pytest -m vm``): the base image, the wheelhouse, an image with
edge-agent installed by ``install.sh`` on a live system, a password broker on the host, guests.

Everything skips with the reason when the lab cannot run here (not root, no qemu/debootstrap).
Every guest's console log, qemu stderr and share stay in pytest's tmp dir for diagnosis.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulators.mosquitto import Mosquitto
from tests.vm import lab
from tests.vm.image import BaseImage, base_image, missing_tools
from tests.vm.qemu import Guest

PASSWORD = "vmlab-Pw-4f2a9c"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)


@dataclass(frozen=True)
class Wheels:
    """The offline wheelhouse (made on the host: the guest has no network for pip)."""

    path: Path
    seconds: float


def timing(name: str, seconds: float) -> None:
    """Append a timing to ``$EDGE_AGENT_VM_TIMINGS`` (JSON lines) and print it (-s / -rA)."""
    print(f"vm timing: {name} {seconds:.1f} s")
    path = os.environ.get("EDGE_AGENT_VM_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "s": round(seconds, 1)}) + "\n")


@pytest.fixture(scope="session")
def vm_image() -> BaseImage:
    why = missing_tools()
    if why:
        pytest.skip("VM lab cannot run here: " + "; ".join(why))
    img = base_image()
    timing(
        "base image build" if img.build_s is not None else "base image (cached)", img.build_s or 0
    )
    return img


@pytest.fixture(scope="session")
def vm_wheels(vm_image: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    path = tmp_path_factory.mktemp("vm-wheels") / "wheels"
    secs = lab.wheelhouse(path)
    timing("wheelhouse on the host", secs)
    return Wheels(path, secs)


@pytest.fixture(scope="session")
def vm_ready(
    vm_image: BaseImage, vm_wheels: Wheels, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The image scenarios 2-6 start from: edge-agent installed (chroot install.sh), enabled."""
    disk, secs = lab.installed_image(vm_image, vm_wheels.path, tmp_path_factory.mktemp("vm-ready"))
    timing("installed image (chroot install.sh)" if secs else "installed image (cached)", secs or 0)
    return disk


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = lab.auth_broker(tmp_path / "broker", PASSWORD)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def guest(
    vm_image: BaseImage, vm_ready: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Guest]:
    """A guest on a fresh overlay of the installed image (not started: the test starts it)."""
    g = Guest(vm_image, tmp_path / "guest", backing=vm_ready)
    t0 = time.monotonic()
    try:
        yield g
    finally:
        g.close()
        timing(f"{request.node.name} total", time.monotonic() - t0)
        print(f"guest files (console.log, qemu.stderr, share/): {g.dir}")
