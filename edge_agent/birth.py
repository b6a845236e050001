"""The retained ``{base}/status`` payload (``status.v1``): birth, will and clean stop.

``online`` is published after each CONNACK; the MQTT will (sent by the broker when the agent
vanishes: a crash, a kill -9, a cut link once keepalive expires) is the ``offline`` form; a
graceful stop publishes ``offline-clean`` before disconnecting. The backend tells the three
apart: ``offline-clean`` is a stop, ``offline`` with the same ``boot_id`` followed by
``online`` with another ``started_at`` is a crash and restart, ``offline`` then ``online`` with
the same ``started_at`` is a network cut.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.reading import Identity, iso_utc

SCHEMA_STATUS = "edge-agent/status/v1"


def config_digest(cfg: AgentConfig) -> str:
    """``sha256:<hex>`` of the effective config as canonical JSON. Secrets are never in it (the
    password comes from a file, the environment or a credential, and is not read here); the
    config file's own path is left out so a copied config hashes the same."""
    doc = cfg.model_dump(mode="json", exclude={"source"})
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Birth:
    """Builds ``status.v1`` payloads from the running agent's parts.

    Args:
        node: identity (agent, site, line, boot_id).
        digest: :func:`config_digest` of the running config.
        queue: ``() -> (depth, oldest unsent age s or None)``.
        devices: ``() -> [{"id", "type", "state"}, ...]``.
    """

    def __init__(
        self,
        node: Identity,
        digest: str,
        queue: Callable[[], tuple[int, float | None]],
        devices: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.node = node
        self.digest = digest
        self.queue = queue
        self.devices = devices
        self.started_ns = time.time_ns()

    def payload(self, state: str) -> bytes:
        """The ``status.v1`` JSON for ``state`` (``online``, ``offline``, ``offline-clean``)."""
        try:
            depth, oldest = self.queue()
            devices = self.devices()
        except (RuntimeError, OSError, ValueError):  # a part mid-change: report it empty
            depth, oldest, devices = 0, None, []
        body = {
            "schema": SCHEMA_STATUS,
            "state": state,
            "agent": self.node.agent,
            "site": self.node.site,
            "line": self.node.line,
            "version": __version__,
            "config_digest": self.digest,
            "boot_id": self.node.boot_id,
            "started_at": iso_utc(self.started_ns),
            "ts": iso_utc(time.time_ns()),
            "queue_depth": depth,
            "oldest_unsent_s": None if oldest is None else round(oldest, 1),
            "devices": devices,
        }
        return json.dumps(body, separators=(",", ":")).encode()
