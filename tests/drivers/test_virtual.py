"""virtual: the shared driver contract on the in-process queue driver."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from drivers import virtual
from drivers.virtual import VirtualConfig, VirtualDriver
from tests.drivers.contract import DriverContract, Rig

_CHANNELS = itertools.count()


class TestContract(DriverContract):
    @pytest.fixture
    def rig(self) -> Iterator[Rig]:
        channel = f"contract{next(_CHANNELS)}"
        drv = VirtualDriver("v1", VirtualConfig(type="virtual", channel=channel))
        codes = (f"SF{n:013d}" for n in itertools.count(1))

        def good() -> str:
            code = next(codes)
            virtual.send(channel, code.encode())
            return code

        def garbled() -> str:
            virtual.send(channel, b"!SF12")
            return "garbled"

        yield Rig(drv, good, garbled, lambda: virtual.send(channel, None), lambda: None)
        drv.close()
