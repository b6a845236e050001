"""The hub's MQTT side: a persistent session, a failover list, manual acknowledgement.

paho acknowledges nothing by itself here (``manual_ack=True``); :meth:`HubClient.ack_all`
sends the PUBACKs of messages whose rows are committed. A PUBACK must never reach a later
connection than the one its message came on (the broker may have reused the packet id for
another message by then), so every (re)connection attempt bumps :attr:`HubClient.gen` under the
same lock the acks are sent under; acks of an older generation are dropped (the broker
redelivers those messages; their rows are already there, so the second write is a no-op).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.hub.config import HubConfig
from edge_agent.mqtt_client import tune_socket

#: Topics every hub instance shares the load of (``$share/<group>/``): the readings, whose
#: seq gaps the hub sees and the agent's ``resend`` fills.
SHARED = ("reading/+", "batch")
#: Every instance subscribes on its own: the retained, last-value topics (a shared subscription
#: gets no retained messages, MQTT 5 §4.8.2; the writes are upserts) and the station events and
#: alarms. ``resend`` covers readings only, and Mosquitto forgets shared subscriptions across a
#: restart (docs/hub.md): an event published before the hubs subscribed again would be lost for
#: good. A plain subscription is restored with the session, so the broker queues them; each
#: instance gets every event and the id (alarms: the message hash) makes the second a no-op.
OWN = ("status", "kpi/+", "device/+/state", "parcel/+", "exception/+", "alarm")


class HubClient(mqtt.Client):
    """paho's client with a rotating broker list and generation-checked acknowledgements."""

    def __init__(self, cfg: HubConfig) -> None:
        v5 = cfg.mqtt.protocol == "5"
        super().__init__(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-agent-hub-{cfg.hub.instance}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        self.cfg = cfg
        self.v5 = v5
        self.brokers = [(b.host, b.port) for b in cfg.mqtt.brokers]
        self.attempt = 0
        self.gen = 0
        self.ack_lock = threading.Lock()
        self.connected_to: tuple[str, int] | None = None
        # Faster than the agents (0.5 s first retry): after a Mosquitto restart the shared
        # subscriptions exist only once the hub has subscribed again (docs/hub.md).
        self.reconnect_delay_set(cast(int, 0.25), 2)  # paho takes a float; annotated int
        self.max_inflight_messages_set(1000)
        # TCP_NODELAY and the half-open timeout, as the agent's socket (a batch of PUBACKs
        # after a commit must not wait for the broker's delayed ACK of the previous one)
        self.on_socket_open = lambda _c, _u, sock: tune_socket(sock, cfg.mqtt.keepalive_s)
        pw = cfg.mqtt_password()
        if cfg.mqtt.username:
            self.username_pw_set(cfg.mqtt.username, pw.get_secret_value() if pw else None)

    def topics(self) -> list[str]:
        """The subscriptions of this instance."""
        base = f"{self.cfg.hub.topic_prefix}/v1/+/+/+"
        share = f"$share/{self.cfg.hub.group}/" if self.cfg.mqtt.shared else ""
        out = [f"{share}{base}/{t}" for t in SHARED]
        out += [f"{base}/{t}" for t in OWN]
        out.append(f"{base}/response/{self.cfg.hub.instance}")
        return out

    def start(self) -> None:
        """Connect (asynchronously) to the first broker and start the network thread."""
        host, port = self.brokers[0]
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.mqtt.session_expiry_s
            props.ReceiveMaximum = self.cfg.mqtt.receive_max
        self.connect_async(
            host,
            port,
            keepalive=self.cfg.mqtt.keepalive_s,
            clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        self.loop_start()

    def reconnect(self) -> MQTTErrorCode:
        """Each attempt after the first goes to the next broker of the list."""
        with self.ack_lock:
            self.gen += 1
        self._host, self._port = self.brokers[self.attempt % len(self.brokers)]
        self.attempt += 1
        return super().reconnect()

    def bump(self) -> None:
        """The connection is gone: acks of its messages must not be sent any more."""
        with self.ack_lock:
            self.gen += 1

    def ack_all(self, acks: Sequence[tuple[int, int, int]]) -> int:
        """Send the PUBACKs of (gen, mid, qos) of the current connection; returns how many."""
        sent = 0
        with self.ack_lock:
            for gen, mid, qos in acks:
                if gen == self.gen and qos > 0:
                    self.ack(mid, qos)
                    sent += 1
        return sent


def on_connected(client: HubClient, log: Any, subscribed: Callable[[], None]) -> None:
    """Wire on_connect/on_disconnect: subscribe (QoS 1) on connect, log both.

    A restored session is subscribed again unless ``[mqtt] resubscribe = false``: Mosquitto 2
    restores the session but not its shared subscriptions after a restart, while NATS, on a
    SUBSCRIBE that repeats one of the session's, deletes and recreates the JetStream consumer,
    and what the old one held for nobody else is dropped (docs/hub.md, "Broker clusters").
    """

    def on_connect(c: Any, _u: Any, flags: Any, rc: Any, _props: Any = None) -> None:
        if rc.is_failure:
            log.warning("hub_connect_refused", reason=str(rc))
            return
        client.connected_to = (client._host, client._port)
        log.info(
            "hub_connected",
            host=client._host,
            port=client._port,
            session_present=bool(flags.session_present),
        )
        if client.cfg.mqtt.resubscribe or not flags.session_present:
            c.subscribe([(t, 1) for t in client.topics()])
        subscribed()

    def on_disconnect(_c: Any, _u: Any, _flags: Any, rc: Any, _props: Any = None) -> None:
        client.bump()
        client.connected_to = None
        log.warning("hub_disconnected", reason=str(rc))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
