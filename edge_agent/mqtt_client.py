"""The paho client as edge-agent uses it: protocol, TLS with a private CA, credentials, reconnect
delays, and the reason a connection attempt failed.

paho's ``on_connect_fail`` and ``on_disconnect`` carry no reason for socket and TLS errors, so
:class:`_Client` remembers the last one (from ``reconnect()`` and from paho's own error log
lines) for :func:`connect_error`; the publisher puts it in its log line, STATUS= and alarm.
Hostname verification and CA pinning are always on: there is no insecure switch (D8).
"""

from __future__ import annotations

import logging
import re
import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from pydantic import SecretStr

from edge_agent.config import MqttConfig, TlsConfig

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


class _Client(mqtt.Client):
    """paho's client, remembering why the current connection attempt failed (paho's
    ``on_connect_fail`` and ``on_disconnect`` carry no reason for socket and TLS errors).
    ``connect_error`` is written and read in paho's network thread only."""

    connect_error: str | None = None
    #: When paho's network loop tries to reconnect next (``time.monotonic()``); None while it
    #: is not waiting (connected, or an attempt under way).
    retry_at: float | None = None

    def _reconnect_wait(self) -> None:
        # paho keeps the end of this wait in a local variable: work it out the same way paho
        # does (reconnect_delay_set: the min delay after the first failure, doubling to max)
        with self._reconnect_delay_mutex:
            last = self._reconnect_delay
            delay = (
                self._reconnect_min_delay
                if last is None
                else min(last * 2, self._reconnect_max_delay)
            )
        self.retry_at = time.monotonic() + delay
        try:
            super()._reconnect_wait()
        finally:
            self.retry_at = None

    def reconnect(self) -> MQTTErrorCode:
        self.connect_error = None
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


#: Seconds before the first reconnect attempt after a drop or a failed attempt (then doubling).
RECONNECT_MIN_S = 0.5


def build_client(cfg: MqttConfig, client_id: str, password: SecretStr | None) -> mqtt.Client:
    """A paho client configured from ``cfg`` (protocol, TLS, credentials); not connected."""
    proto = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    client.watch_socket_errors(client_id)
    client.max_inflight_messages_set(cfg.inflight + 4)  # room for status/alarm messages
    client.max_queued_messages_set(0)
    # paho types the delays as int but takes floats: the first retry 0.5 s after a drop, doubling
    # to reconnect_max_s. Mosquitto 2.0 closes the connection after a PUBACK 0x87 (#2579): the
    # alarm raised by that rejection must not wait a whole second for the reconnect (T17).
    client.reconnect_delay_set(
        min_delay=RECONNECT_MIN_S,  # type: ignore[arg-type]
        max_delay=max(1, int(cfg.reconnect_max_s)),
    )
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
    for pattern, words in _WORDS:
        if pattern.search(why):
            return words
    return why


def connect_error(client: mqtt.Client) -> str | None:
    """Why the current attempt failed, read in paho's thread (None: no socket or TLS error)."""
    return getattr(client, "connect_error", None)
