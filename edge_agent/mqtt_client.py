"""The paho client as edge-agent uses it: protocol, TLS with a private CA, credentials, reconnect
delays, and the reason a connection attempt failed.

paho's ``on_connect_fail`` and ``on_disconnect`` carry no reason for socket and TLS errors, so
:class:`_Client` remembers the last one (from ``reconnect()`` and from paho's own error log
lines) for :func:`connect_error`; the publisher puts it in its log line, STATUS= and alarm.
Hostname verification and CA pinning are always on: there is no insecure switch (D8).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from edge_agent.config import MqttConfig, TlsConfig
from edge_agent.reconnect_jitter import RECONNECT_MIN_S, jittered_delay

_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def describe_error(err: BaseException) -> str:
    """A connect error as one line for a technician: ``TLS [SSL: CODE] what`` or the OS error."""
    if isinstance(err, ssl.SSLError):
        return "TLS " + _SSL_SOURCE.sub("", str(err))
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} (errno {err.errno})"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class _LastSocketError(logging.Handler):
    """Keeps the last socket error paho reports only through its logger (an alert the broker
    sends after the handshake, e.g. an expired client certificate, shows up as a failed read)."""

    def __init__(self, client: _Client) -> None:
        super().__init__(logging.ERROR)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        err = next((a for a in args if isinstance(a, OSError)), None)
        if err is not None:
            self.client.connect_error = describe_error(err)
            self.client.connect_errno = err.errno


#: MQTT 5 DISCONNECT reason "Session taken over": another client connected with our client id.
SESSION_TAKEN_OVER = 0x8E
#: First wait after a takeover (s), doubling per takeover within TAKEOVER_MEMORY_S, up to
#: TAKEOVER_MAX_S, each stretched by a random 0-50 % so two agents drift apart.
TAKEOVER_FIRST_S = 5.0
TAKEOVER_MAX_S = 120.0
TAKEOVER_MEMORY_S = 600.0
#: Brokers that close the old connection without saying why (MQTT 3.1.1; Mosquitto before
#: 2.0.15, e.g. Debian 12's 2.0.11): SHORT_LIVED_N connections in a row accepted and then
#: closed by the broker within SHORT_LIVED_S, with no rejected PUBACK just before (Mosquitto
#: also closes after a PUBACK 0x87), are taken for a takeover. A close by reset (ECONNRESET)
#: is not: the broker closed with packets of ours unread, i.e. it refused one of them (an ACL
#: denial; the reset drops its PUBACK 0x87 from our receive buffer, so note_rejected never
#: runs). A takeover closes the old connection when the other client connects, not as a reply.
SHORT_LIVED_S = 10.0
SHORT_LIVED_N = 2
_CONNECTION_LOST = 0x80  # what paho reports when the socket closed with no DISCONNECT packet


class _Client(mqtt.Client):
    """paho's client, remembering why the current connection attempt failed (paho's
    ``on_connect_fail`` and ``on_disconnect`` carry no reason for socket and TLS errors).
    ``connect_error`` is written and read in paho's network thread only.

    It also backs off when the broker hands our session to another client (two agents with
    one ``agent_id``, a copied config): reconnecting at once would take the session back and
    the two would kick each other out twice a second. :meth:`takeover` runs in paho's thread,
    in ``on_disconnect``, before paho computes its reconnect wait.
    """

    connect_error: str | None = None
    #: errno of the last socket error (None: none in this connection attempt).
    connect_errno: int | None = None
    normal_max_delay: int = 1
    _takeovers: deque[float] | None = None
    _backing_off = False
    _delay_lock = threading.Lock()
    _up_since: float | None = None
    _last_reject = -1e9
    _short_lived = 0

    def note_connected(self) -> None:
        """A success CONNACK (paho's thread): normal reconnect delays again."""
        self._up_since = time.monotonic()
        self._waits = 0
        self.retry_at = None
        self.restore_delays()

    def note_rejected(self) -> None:
        """A PUBACK with a failure code (paho's thread): a close right after it is not a
        takeover."""
        self._last_reject = time.monotonic()

    def takeover(self, rc: ReasonCode, from_server: bool) -> tuple[str, float] | None:
        """Was this disconnect a session takeover? ``("certain" | "suspected", wait_s)`` with
        the next attempt already delayed by ``wait_s``, or None (paho's thread)."""
        now = time.monotonic()
        up = None if self._up_since is None else now - self._up_since
        self._up_since = None
        if rc.value == SESSION_TAKEN_OVER:
            self._short_lived = 0
            return "certain", self.back_off_after_takeover()
        closed_early = (
            up is not None
            and up < SHORT_LIVED_S
            and not from_server
            and rc.value == _CONNECTION_LOST
            and now - self._last_reject > 2.0
            and self.connect_errno != errno.ECONNRESET
        )
        self._short_lived = self._short_lived + 1 if closed_early else 0
        if self._short_lived >= SHORT_LIVED_N:
            return "suspected", self.back_off_after_takeover()
        return None

    def back_off_after_takeover(self) -> float:
        """Stretch the next reconnect wait; returns it (s)."""
        with self._delay_lock:
            now = time.monotonic()
            if self._takeovers is None:
                self._takeovers = deque()
            while self._takeovers and now - self._takeovers[0] > TAKEOVER_MEMORY_S:
                self._takeovers.popleft()
            self._takeovers.append(now)
            base = TAKEOVER_FIRST_S * 2.0 ** (len(self._takeovers) - 1)
            delay = min(base, TAKEOVER_MAX_S) * random.uniform(1.0, 1.5)
            self.reconnect_delay_set(delay, max(delay, self.normal_max_delay))
            self._backing_off = True
            return delay

    def restore_delays(self) -> None:
        """Back to the normal reconnect delays (after a successful CONNACK)."""
        with self._delay_lock:
            if self._backing_off:
                self._backing_off = False
                self.reconnect_delay_set(RECONNECT_MIN_S, self.normal_max_delay)

    #: When paho's network loop tries to reconnect next (``time.monotonic()``); None while it
    #: is not waiting (connected, or an attempt under way).
    retry_at: float | None = None
    _min_delay: float = 1.0
    _max_delay: float = 1.0
    _waits = 0

    def reconnect_delay_set(self, min_delay: float = 1, max_delay: float = 120) -> None:
        """paho's own, remembered for :meth:`note_failure` (public API only: no paho internals).
        paho types the delays as int but takes floats (the first retry 0.5 s after a drop)."""
        super().reconnect_delay_set(min_delay, max_delay)  # type: ignore[arg-type]
        self._min_delay, self._max_delay, self._waits = float(min_delay), float(max_delay), 0

    def note_failure(self) -> None:
        """A connection attempt failed or the connection dropped (paho's thread, in
        ``on_connect_fail`` / ``on_disconnect``, just before paho waits to retry): when the
        next attempt comes, by paho's documented rule (``reconnect_delay_set``: the min delay
        first, doubling to the max, back to the min after a success CONNACK)."""
        if self._backing_off:  # a takeover's back-off: paho's own doubling of that delay
            delay = min(self._min_delay * 2.0**self._waits, self._max_delay)
        else:  # randomised (issue 14): a fleet does not reconnect in lockstep after a restart
            delay = jittered_delay(
                self._waits, self._max_delay, time.monotonic() - self._last_reject
            )
        self._waits += 1
        self.retry_at = time.monotonic() + delay

    #: The thread that drives the client (the publisher's), known from inside: every
    #: connection attempt runs :meth:`reconnect` in it. None until the first attempt.
    network_thread: threading.Thread | None = None

    def reconnect(self) -> MQTTErrorCode:
        self.network_thread = threading.current_thread()
        self.connect_error, self.connect_errno = None, None
        self.retry_at = None
        try:
            return super().reconnect()
        except OSError as err:
            self.connect_error = describe_error(err)
            raise

    def watch_socket_errors(self, name: str) -> None:
        """Route paho's error log lines (only those) to :class:`_LastSocketError`."""
        logger = logging.getLogger(f"edge_agent.paho.{name}")
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        logger.handlers = [_LastSocketError(self)]
        self.enable_logger(logger)


def tune_socket(sock: object, keepalive: int) -> None:
    """As the socket opens (paho's ``on_socket_open``; skipped without setsockopt: websockets).

    * ``TCP_USER_TIMEOUT`` (P12): the kernel drops a link whose sent data stays unacknowledged
      for keepalive/2, so a cut link is seen keepalive/2 after the next publish (paho alone:
      2 x keepalive after the last byte in; ~1.5 x keepalive when idle, T5).
    * ``TCP_NODELAY`` (paho 2 does not set it): else Nagle holds a reading's PUBLISH behind an
      unacknowledged small segment (a PUBACK to a command) for the broker's 40 ms delayed ACK
      (issue 14's flood test)."""
    setsockopt = getattr(sock, "setsockopt", None)
    opt = getattr(socket, "TCP_USER_TIMEOUT", None)
    for name, value in ((opt, keepalive * 500), (socket.TCP_NODELAY, 1)):
        if name is not None and setsockopt is not None:
            with contextlib.suppress(OSError):
                setsockopt(socket.IPPROTO_TCP, name, value)


def build_client(cfg: MqttConfig, client_id: str, password: SecretStr | None) -> _Client:
    """A paho client configured from ``cfg`` (protocol, TLS, credentials); not connected."""
    proto = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    client.watch_socket_errors(client_id)
    client.max_inflight_messages_set(cfg.inflight + 4)  # room for status/alarm messages
    client.max_queued_messages_set(0)
    # paho types the delays as int but takes floats: the first retry 0.5 s after a drop, doubling
    # to reconnect_max_s. Mosquitto 2.0 closes the connection after a PUBACK 0x87 (#2579): the
    # alarm raised by that rejection must not wait a whole second for the reconnect (T17).
    client.normal_max_delay = max(1, int(cfg.reconnect_max_s))
    client.reconnect_delay_set(RECONNECT_MIN_S, client.normal_max_delay)
    if cfg.username is not None:
        secret = password.get_secret_value() if password is not None else None
        client.username_pw_set(cfg.username, secret)
    if cfg.tls is not None:
        client.tls_set_context(tls_context(cfg.tls))
    return client


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Verify against the private CA only, hostname checked, TLS >= 1.2, optional client cert."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        key = str(tls.key_file) if tls.key_file else None
        ctx.load_cert_chain(str(tls.cert_file), key)
    return ctx


def next_retry_in(client: mqtt.Client) -> float | None:
    """Seconds until paho's next reconnect attempt, to 0.1 s (None: connected or trying now)."""
    at = getattr(client, "retry_at", None)
    return None if at is None else round(max(0.0, at - time.monotonic()), 1)


#: The common broker failures, as the publisher records them, in words (first match wins).
_WORDS = (
    (re.compile(r"0x87|Not authori[sz]ed", re.I), "not authorised"),
    (
        re.compile(r"0x86|Bad user name or password", re.I),
        "not authorised: bad user name or password",
    ),
    (re.compile(r"0x85|Client identifier not valid", re.I), "not authorised: client id refused"),
    (re.compile(r"Connection refused|errno 111\b", re.I), "connection refused"),
    (re.compile(r"No route to host|errno 113\b", re.I), "no route to host"),
    (re.compile(r"Network is unreachable|errno 101\b", re.I), "network unreachable"),
    (re.compile(r"timed out|errno 110\b|Keep alive timeout", re.I), "timed out"),
    (re.compile(r"Name or service not known|getaddrinfo|gaierror", re.I), "unknown host name"),
    (
        re.compile(r"Unspecified error|closed before CONNACK|Connection reset|errno 104\b", re.I),
        "broker closed the connection",
    ),
)


def reason_words(why: str | None) -> str | None:
    """A broker failure (``last_error``) in the words a technician acts on.

    ``CONNACK 0x87 Not authorized`` -> ``not authorised``, ``Connection refused (errno 111)`` ->
    ``connection refused``, a dropped socket (paho: ``Unspecified error``) -> ``broker closed
    the connection``. Anything else (a TLS error, which says exactly what is wrong) is kept.
    """
    if why is None:
        return None
    if why.startswith("session taken over"):  # already in words (another PC with our id)
        return why
    for pattern, words in _WORDS:
        if pattern.search(why):
            return words
    return why


def connect_error(client: mqtt.Client) -> str | None:
    """Why the current attempt failed, read in paho's thread (None: no socket or TLS error)."""
    return getattr(client, "connect_error", None)
