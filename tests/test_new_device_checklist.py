"""The new-device checklist, executable (docs/new-device.md; the list in ``drivers/__init__.py``).

For every registered driver (``drivers.DRIVERS``): the driver module and class the registry
names, a contract-test subclass in ``tests/drivers/test_<name>.py``, a simulator
``simulators/<name>`` with ``for_demo``, captures (files in ``tests/data/captures/<name>/`` or
``CAPTURES`` in the contract subclass) and a fuzz target (derived for a byte-stream driver).
And the other way round: a driver class, simulator or contract test that no registry line
names is an orphan, so deleting the registry line fails too. The last test proves it on a copy
of the tree: it deletes each of the Zebra DS example's four pieces in turn and runs this file.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import drivers
from drivers import DRIVERS
from drivers.base import Driver
from tests.drivers.contract import DriverContract
from tests.fuzz import targets
from tests.fuzz.profiles import fuzz_settings

ROOT = Path(__file__).resolve().parents[1]
#: Pieces a driver may lack, and why. Nothing else is exempt.
EXEMPT = {
    "virtual": {
        "simulator": "it is its own simulator: drivers.virtual.send() feeds it in-process",
        "captures": "it reads no bytes from a device",
        "fuzz": "it reads no bytes from a device",
    },
}
#: Packages under drivers/ that hold shared parts, not a device.
SHARED = {"drivers.base", "drivers.reasons", "drivers.common", "drivers.tunnel"}


def contract_classes(kind: str) -> list[type[DriverContract]]:
    """The DriverContract subclasses in ``tests/drivers/test_<kind>.py`` (none: no module)."""
    if importlib.util.find_spec(f"tests.drivers.test_{kind}") is None:
        return []
    module = importlib.import_module(f"tests.drivers.test_{kind}")
    return [
        c
        for c in vars(module).values()
        if inspect.isclass(c) and issubclass(c, DriverContract) and c is not DriverContract
    ]


def problems(kind: str) -> list[str]:
    """What driver ``kind`` lacks, each saying where it goes."""
    out: list[str] = []
    module_name, class_name = DRIVERS[kind]
    exempt = EXEMPT.get(kind, {})
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        out.append(f"driver: {module_name}.{class_name} ({err}): write drivers/{kind}.py")
    else:
        if not (inspect.isclass(cls) and issubclass(cls, Driver) and cls.kind == kind):
            out.append(f"driver: {module_name}.{class_name} is not a Driver with kind = {kind!r}")
    try:
        contracts = contract_classes(kind)
    except ImportError as err:  # a piece it imports is missing: named below, or here
        out.append(f"contract test: tests/drivers/test_{kind}.py does not import ({err})")
        contracts = []
    if not contracts and not any(o.startswith("contract test") for o in out):
        out.append(
            f"contract test: no DriverContract subclass in tests/drivers/test_{kind}.py "
            "(a TestContract with a rig fixture; see tests/drivers/contract.py)"
        )
    if "simulator" not in exempt:
        sim = None
        if importlib.util.find_spec(f"simulators.{kind}") is not None:
            try:
                sim = importlib.import_module(f"simulators.{kind}")
            except ImportError as err:
                out.append(f"simulator: simulators/{kind} does not import ({err})")
        if sim is None and not any(o.startswith("simulator") for o in out):
            out.append(
                f"simulator: simulators/{kind}.py missing (the device's bytes on a real pty, "
                "with for_demo(device_id, cfg, rate, seed); see simulators/__init__.py)"
            )
        if sim is not None and not callable(getattr(sim, "for_demo", None)):
            out.append(
                f"simulator: simulators/{kind}.py with for_demo(device_id, cfg, rate, seed) "
                "(the demo hook, see simulators/__init__.py)"
            )
    if "captures" not in exempt:
        files = sorted((ROOT / "tests" / "data" / "captures" / kind).glob("*.bin"))
        if not files and not any(c.CAPTURES for c in contracts):
            out.append(
                f"captures: CAPTURES in the contract subclass of tests/drivers/test_{kind}.py "
                f"or recorded files in tests/data/captures/{kind}/"
            )
    if "fuzz" not in exempt and kind not in targets.ALL:
        out.append(
            f"fuzz target: none for {kind} (derived for a byte-stream driver whose config "
            "needs only port; else add one to tests/fuzz/targets.py)"
        )
    return out


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_every_registered_driver_has_its_pieces(kind: str) -> None:
    missing = problems(kind)
    assert not missing, f"{kind}: " + "; ".join(missing)


def test_exemptions_name_registered_drivers_and_known_pieces() -> None:
    assert set(EXEMPT) <= set(DRIVERS)
    assert all(set(v) <= {"simulator", "captures", "fuzz"} for v in EXEMPT.values())


def test_no_driver_simulator_or_contract_test_without_a_registry_line() -> None:
    registered = set()
    for module_name, class_name in DRIVERS.values():
        with contextlib.suppress(ImportError, AttributeError):  # reported by the test above
            registered.add(getattr(importlib.import_module(module_name), class_name))
    orphans = []
    for info in pkgutil.walk_packages(drivers.__path__, "drivers."):
        if any(info.name == s or info.name.startswith(f"{s}.") for s in SHARED):
            continue
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            concrete = inspect.isclass(cls) and issubclass(cls, Driver)
            mine = concrete and cls.__module__ == info.name and not inspect.isabstract(cls)
            if mine and cls not in registered:
                orphans.append(f"drivers: {info.name}.{name} (kind {cls.kind!r})")
    for path in sorted((ROOT / "simulators").iterdir()):
        name = path.stem
        if name.startswith("_") or name in DRIVERS:
            continue
        if (path.suffix == ".py" or path.is_dir()) and re.search(
            r"^def for_demo\(", _text(path), re.M
        ):
            orphans.append(f"simulators: {path.name} has for_demo but no driver {name!r}")
    for path in sorted((ROOT / "tests" / "drivers").glob("test_*.py")):
        name = path.stem.removeprefix("test_")
        if name not in DRIVERS and re.search(r"\(DriverContract\)", path.read_text()):
            orphans.append(f"tests/drivers: {path.name} tests a driver {name!r} not registered")
    assert not orphans, "add the registry line in drivers/__init__.py (DRIVERS) for:\n" + "\n".join(
        orphans
    )


def _text(path: Path) -> str:
    if path.is_dir():
        return "\n".join(p.read_text() for p in sorted(path.glob("*.py")))
    return path.read_text()


@pytest.mark.parametrize("kind", sorted(targets.DERIVED))
def test_derived_fuzz_target_runs_clean(kind: str) -> None:
    """A derived target, fed damaged copies of the driver's inline captures and random bytes
    (tests/faults/test_fuzz.py runs the hand-written ones)."""
    seeds = [c.data for cls in contract_classes(kind) for c in cls.CAPTURES] or [b"\r\n"]
    target = targets.TARGETS[kind]
    frames = st.one_of(
        st.sampled_from(seeds),
        st.builds(lambda b, i, x: b[:i] + bytes([x]) + b[i + 1 :], st.sampled_from(seeds),
                  st.integers(0, 60), st.integers(0, 255)),
        st.binary(max_size=40),
    )  # fmt: skip

    @fuzz_settings()
    @given(chunks=st.lists(frames, max_size=8))
    def run(chunks: list[bytes]) -> None:
        target.check_split(0, chunks)

    run()


#: The Zebra DS example's four pieces: the file (and line) to remove, what the checklist says.
PIECES = {
    "driver module": ("drivers/zebra_ds.py", None, "write drivers/zebra_ds.py"),
    "registry line": ("drivers/__init__.py",
                      '    "zebra_ds": ("drivers.zebra_ds", "ZebraDsDriver"),\n',
                      "add the registry line in drivers/__init__.py"),
    "simulator": ("simulators/zebra_ds.py", None, "simulators/zebra_ds.py missing"),
    "test subclass": ("tests/drivers/test_zebra_ds.py", None,
                      "no DriverContract subclass in tests/drivers/test_zebra_ds.py"),
}  # fmt: skip


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("tree") / "edge-agent"
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".mypy_cache", ".hypothesis",
                                    ".ruff_cache", ".pytest_cache")  # fmt: skip
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


#: pytest in the copy, without the editable install's finder (it would find the deleted
#: modules in the original tree).
RUN_IN_COPY = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import pytest
sys.exit(pytest.main(["-p", "no:xdist", "-p", "no:cacheprovider", "-q",
                      "tests/test_new_device_checklist.py", "-k", "not deleting and not derived"]))
"""


def run_checklist(tree: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", RUN_IN_COPY]
    return subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("piece", sorted(PIECES))
def test_deleting_any_zebra_ds_piece_fails_the_checklist(piece: str, tree_copy: Path) -> None:
    if piece == sorted(PIECES)[0]:  # the untouched copy passes (once per module run)
        ok = run_checklist(tree_copy)
        assert ok.returncode == 0, ok.stdout[-3000:]
    rel, line, says = PIECES[piece]
    path = tree_copy / rel
    original = path.read_text()
    try:
        if line is None:
            path.unlink()
        else:
            assert line in original, f"{rel} lost the line the example adds"
            path.write_text(original.replace(line, ""))
        res = run_checklist(tree_copy)
    finally:
        path.write_text(original)
    assert res.returncode == 1, res.stdout[-3000:]  # tests failed (2 would be a crash)
    assert says in res.stdout, res.stdout[-3000:]
