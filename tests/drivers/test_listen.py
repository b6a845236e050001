"""``listen://``: the scanner connects to the line PC and pushes telegrams; real sockets only.

The SICK and Cognex simulators run in client mode (:class:`TcpClientPort`) against the
driver's listening port; a foreign device is a socket from another loopback address.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from drivers.cognex_dataman import CognexDatamanConfig, CognexDatamanDriver
from drivers.common.link import LinkConfig
from drivers.sick_clv import SickClvConfig, SickClvDriver
from edge_agent.errors import DeviceError, DeviceIOError, DeviceNotFoundError
from edge_agent.reading import Capture, Decoded
from edge_agent.supervisor import DeviceWorker
from simulators.cognex_dataman import DataManSim, DataManSimConfig
from simulators.mosquitto import free_port
from simulators.sick_clv import ClvSim, ClvSimConfig
from simulators.tunnel.model import waybill
from simulators.tunnel.tcp_client import TcpClientPort


@pytest.fixture
def client() -> Iterator[TcpClientPort]:
    port = TcpClientPort(free_port())
    yield port
    port.close()


def sick(url: str) -> SickClvDriver:
    return SickClvDriver("clv1", SickClvConfig.model_validate({"type": "sick_clv", "port": url}))


def reopen(drv: SickClvDriver | CognexDatamanDriver, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            drv.open()
            return
        except DeviceError:
            assert time.monotonic() < deadline, "no device connected in time"


def connect(drv: SickClvDriver | CognexDatamanDriver, client: TcpClientPort) -> None:
    """Bind the driver's port (no device yet: the open fails), let the device in, reopen."""
    with contextlib.suppress(DeviceNotFoundError):
        drv.open()
    client.plug()
    reopen(drv)


def codes(drv: SickClvDriver | CognexDatamanDriver, n: int, within: float = 3.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + within
    while len(got) < n and time.monotonic() < deadline:
        d = drv.read(0.1)
        if isinstance(d, Decoded) and isinstance(d.value, str):
            got.append(d.value)
    return got


def test_no_device_connected_is_not_found_then_the_peer_is_read(client: TcpClientPort) -> None:
    sim = ClvSim(client, ClvSimConfig())
    drv = sick(client.url)
    with pytest.raises(DeviceNotFoundError, match="no device connected"):
        drv.open()  # bound: the device can connect now
    assert client.plug() and client.connected
    reopen(drv)
    sent = [waybill(1, g) for g in range(1, 4)]
    for code in sent:
        assert sim.send(sim.telegram([code], None))
    assert codes(drv, 3) == sent
    assert drv.address == f"127.0.0.1:{client.port}"
    drv.close()


def test_cognex_simulator_in_client_mode(client: TcpClientPort) -> None:
    sim = DataManSim(client, DataManSimConfig())
    cfg = {"type": "cognex_dataman", "port": client.url}
    drv = CognexDatamanDriver("dm1", CognexDatamanConfig.model_validate(cfg))
    connect(drv, client)
    sim.start(count=5)
    got = codes(drv, 5)
    sim.stop()
    assert got == [v for _k, v, _g in sim.readings()]
    drv.close()


def test_foreign_peer_is_refused_and_counted(client: TcpClientPort) -> None:
    sim = ClvSim(client, ClvSimConfig())
    drv = sick(client.url)
    connect(drv, client)
    foreign = socket.create_connection(("127.0.0.1", client.port), source_address=("127.0.0.2", 0))
    try:
        foreign.sendall(b"\x02SF9999999999999\x03")
        assert sim.send(sim.telegram(["SF1000000000001"], None))
        assert codes(drv, 1) == ["SF1000000000001"]
        deadline = time.monotonic() + 2
        while drv.refused < 1 and time.monotonic() < deadline:
            drv.read(0.05)
        assert drv.refused == 1
        foreign.settimeout(1.0)
        try:
            closed = foreign.recv(16) == b""  # FIN
        except ConnectionResetError:
            closed = True  # RST: it was closed with the foreign telegram unread
        assert closed
    finally:
        foreign.close()
    assert sim.send(sim.telegram(["SF1000000000002"], None))
    assert codes(drv, 1) == ["SF1000000000002"]  # the allowed peer was never disturbed
    assert not drv.rejects
    drv.close()


def test_a_new_connection_replaces_a_half_open_one_and_loses_nothing(
    client: TcpClientPort,
) -> None:
    sim = ClvSim(client, ClvSimConfig())
    drv = sick(client.url)
    connect(drv, client)
    assert sim.send(sim.telegram(["SF1000000000001"], None))
    assert sim.send(b"\x02SF10000")  # cut by the device's reconnect: a partial, not glued
    assert codes(drv, 1) == ["SF1000000000001"]
    assert client.reconnect()  # the old connection stays open, silent
    after = [waybill(2, g) for g in range(1, 21)]
    for code in after:  # sent at once, before the driver has even seen the new peer
        assert sim.send(sim.telegram([code], None))
    assert codes(drv, 20) == after
    assert drv.rejects == {"partial": 1}
    drv.close()


def test_peer_reset_is_a_link_error_then_the_next_connection_is_read(
    client: TcpClientPort,
) -> None:
    sim = ClvSim(client, ClvSimConfig())
    drv = sick(client.url)
    connect(drv, client)
    client.unplug()  # RST
    with pytest.raises(DeviceIOError):
        for _ in range(40):
            drv.read(0.05)
    drv.close()
    client.plug()
    after = [waybill(3, g) for g in range(1, 6)]
    for code in after:  # sent before the driver reopened: waiting in the backlog
        assert sim.send(sim.telegram([code], None))
    reopen(drv)
    assert codes(drv, 5) == after
    drv.close()


def test_device_state_follows_the_peer(client: TcpClientPort) -> None:
    sim = ClvSim(client, ClvSimConfig())
    drv = sick(client.url)
    got: list[Capture] = []
    states: list[str] = []
    worker = DeviceWorker(drv, got.append, lambda _d, s, _r: states.append(s))
    worker.start()
    try:
        wait_for(lambda: states[-1:] == ["reconnecting"])
        client.plug()
        wait_for(lambda: states[-1:] == ["connected"])
        assert sim.send(sim.telegram(["SF1000000000001"], None))
        wait_for(lambda: len(got) == 1)
        client.unplug()
        wait_for(lambda: states[-1:] == ["reconnecting"])
        client.plug()
        assert sim.send(sim.telegram(["SF1000000000002"], None))
        wait_for(lambda: len(got) == 2)
        assert states[-1] == "connected"
    finally:
        worker.stop()
        worker.join(3)
    assert [c.decoded.value for c in got] == ["SF1000000000001", "SF1000000000002"]
    assert worker.reason == ""


def wait_for(cond: object, within: float = 5.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("listen://0.0.0.0:51236?allow=10.0.0.5,not-an-ip", "does not appear to be an IPv4"),
        ("listen://0.0.0.0:51236?peer=10.0.0.5", "unknown option 'peer'"),
        ("listen://0.0.0.0", "expected listen://<host>:<port>"),
    ],
)
def test_bad_listen_urls_are_config_errors(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        LinkConfig.model_validate({"type": "x", "port": url})
