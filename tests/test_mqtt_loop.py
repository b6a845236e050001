"""The publisher's loop wake (``NetLoop.signal``): no signal may be lost, whatever the timing."""

from __future__ import annotations

import os
import time

import pytest

from edge_agent import mqtt_loop
from edge_agent.config import MqttConfig
from edge_agent.mqtt_client import build_client


def test_a_signal_landing_while_the_loop_takes_a_wake_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = MqttConfig.model_validate({"brokers": [{"host": "127.0.0.1", "port": 1}]})
    loop = mqtt_loop.NetLoop(build_client(cfg, "edge-agent-x", None))
    real_read = os.eventfd_read
    raced: list[bool] = []

    def read_with_a_signal_racing(fd: int) -> int:
        if not raced:  # another thread signals just as the loop takes the wake
            raced.append(True)
            loop.signal()
        return real_read(fd)

    monkeypatch.setattr(os, "eventfd_read", read_with_a_signal_racing)  # mqtt_loop's os
    try:
        loop.signal()
        loop.turn(time.monotonic() + 2.0)  # takes the first wake (and the racing one)
        assert raced
        loop.signal()  # a later post must wake the loop at once, not at its next timer
        t0 = time.monotonic()
        loop.turn(t0 + 2.0)
        assert time.monotonic() - t0 < 0.5, "the wake was lost: the loop slept to its deadline"
    finally:
        loop.close()
