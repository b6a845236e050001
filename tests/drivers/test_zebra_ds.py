"""zebra_ds: the shared contract on a real pty, inline captures, the simulator run by hand."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.zebra_ds import ZebraDsConfig, ZebraDsDriver
from edge_agent.config import load_config
from simulators.pty_port import PtyPort
from simulators.zebra_ds import ZebraSim, for_demo
from tests.drivers.contract import Capture, DriverContract, Rig, read_until, reopen

ROOT = Path(__file__).resolve().parents[2]
GS = "\x1d"


class TestContract(DriverContract):
    CAPTURES = (
        Capture(
            "codes_and_noread",  # the default table; NR alone and after a code id
            {},
            b"C0SF1234567890123\r\nE04006381333931\r\nNR\r\nA0NR\r\nQ1https://ex.cn/a?b=1\r\n",
            [{"value": "SF1234567890123", "symbology": "code128"},
             {"value": "4006381333931", "symbology": "ean-upc"},
             {"value": None, "symbology": None}, {"value": None, "symbology": None},
             {"value": "https://ex.cn/a?b=1", "symbology": "qr"}],
        ),
        Capture(
            "gs1_fnc1_kept",
            {},
            b"C10109501101020917\x1d10ABC\r\n",
            [{"value": f"0109501101020917{GS}10ABC", "symbology": "gs1-128"}],
        ),
        Capture(
            "faults",  # unknown id, id without data, bad UTF-8, blank line, oversize, cut tail
            {"max_frame": 32},
            b"ZZ1234\r\nC0\r\nC0\xff\xfe\r\n\r\nC0" + b"9" * 40 + b"\r\nC0SF1\r\nC0SF12",
            [{"reject": "garbled"}, {"reject": "empty"}, {"reject": "garbled"},
             {"reject": "noise"}, {"reject": "oversize"}, {"value": "SF1", "symbology": "code128"},
             {"reject": "partial"}],
        ),
        Capture(
            "site_table",  # a site's own code ids and no-read text
            {"symbologies": {"K1": "gs1-128", "B3": "code39"}, "noread": "NOREAD"},
            b"K1SF9\r\nB3ABC\r\nC0SF1\r\nNOREAD\r\n",
            [{"value": "SF9", "symbology": "gs1-128"}, {"value": "ABC", "symbology": "code39"},
             {"reject": "garbled"}, {"value": None, "symbology": None}],
        ),
    )  # fmt: skip

    @pytest.fixture
    def rig(self, tmp_path: Path) -> Iterator[Rig]:
        port = PtyPort(tmp_path / "zebra")
        port.plug()
        sim = ZebraSim(port)
        drv = ZebraDsDriver("z1", cfg(str(port.link)))

        def garbled() -> str:
            port.write(b"ZZSF1234\r\n")
            return "garbled"

        yield Rig(drv, sim.send, garbled, port.unplug, lambda: port.plug() and None)
        drv.close()
        port.close()


def cfg(port: str = "loop://", **kw: object) -> ZebraDsConfig:
    return ZebraDsConfig.model_validate({"type": "zebra_ds", "port": port, **kw})


def test_simulator_cli_prints_its_pty_and_sends_what_the_driver_reads() -> None:
    cmd = [sys.executable, "-m", "simulators.zebra_ds", "--count", "5", "--rate", "20"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True) as proc:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        drv = ZebraDsDriver("cli", cfg(path))
        reopen(drv)
        got = [read_until(drv) for _ in range(5)]
        drv.close()
    assert proc.returncode == 0
    assert all(d is not None and d.symbology in ("code128", "ean-upc", "datamatrix") for d in got)
    assert not drv.rejects


def test_config_file_and_demo_hook(tmp_path: Path) -> None:
    """A config naming a zebra_ds loads, and for_demo plugs a scanner in where it says."""
    toml = tmp_path / "agent.toml"
    toml.write_text(
        '[node]\nsite = "S1"\nline = "L01"\nagent_id = "pc1"\n'
        '[mqtt]\nbrokers = [{ host = "127.0.0.1", port = 1 }]\n'
        f'[queue]\npath = "{tmp_path / "q.db"}"\n'
        f'[devices.zebra_1]\ntype = "zebra_ds"\nport = "{tmp_path / "zebra-1"}"\n'
        'symbologies = { C0 = "code128", E0 = "ean-upc", d1 = "datamatrix" }\n'
    )
    dev = load_config(toml).devices["zebra_1"]
    assert isinstance(dev, ZebraDsConfig)
    demo = for_demo("zebra_1", dev, 50.0, 3)
    drv = ZebraDsDriver("zebra_1", dev)
    reopen(drv)
    demo.start()
    got = [read_until(drv) for _ in range(10)]
    demo.stop()
    drv.close()
    sent = [(dev.symbologies.get(code_id, "noread"), v) for code_id, v in demo.sim.sent[:10]]
    assert [(d.symbology or "noread", d.value) for d in got if d is not None] == sent
    assert demo.expected() >= 10 and "Zebra DS" in demo.describe()
