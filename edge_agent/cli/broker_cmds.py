"""``broker-test``: prove the broker path with the daemon's own settings, step by step.

Steps: DNS, TCP connect, TLS handshake (certificate subject, expiry, verification result),
MQTT CONNECT/CONNACK, SUBSCRIBE, PUBLISH/PUBACK, round trip back to us. On failure the report
names the step and the MQTT reason code in words.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.cli.common import CommandError, add_config, add_json, config, output
from edge_agent.config import AgentConfig, BrokerAddress
from edge_agent.mqtt_client import build_client, tls_context
from edge_agent.topics import Topics


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``broker-test``."""
    p = sub.add_parser("broker-test", help="publish and receive a test message via the broker")
    add_config(p)
    add_json(p)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per step")
    p.set_defaults(func=cmd_broker_test)


def connect_blocking(cfg: AgentConfig, client_id: str, timeout: float = 10.0) -> mqtt.Client:
    """A connected paho client (network loop running) or CommandError naming the reason."""
    client = build_client(cfg.mqtt, client_id, cfg.password())
    done = threading.Event()
    result: list[ReasonCode] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    b = cfg.mqtt.brokers[0]
    try:
        client.connect(b.host, b.port, keepalive=cfg.mqtt.keepalive)
    except (OSError, ssl.SSLError) as err:
        msg = f"cannot connect to {b.host}:{b.port}: {err}"
        raise CommandError(msg) from err
    client.loop_start()
    if not done.wait(timeout) or result[0].is_failure:
        client.loop_stop()
        why = f"{result[0]} ({result[0].value:#04x})" if result else "no CONNACK"
        msg = f"broker {b.host}:{b.port} refused the connection: {why}"
        raise CommandError(msg)
    return client


def _preflight(cfg: AgentConfig, b: BrokerAddress, timeout: float) -> dict[str, Any]:
    report: dict[str, Any] = {"broker": f"{b.host}:{b.port}"}
    try:
        addr = socket.getaddrinfo(b.host, b.port, type=socket.SOCK_STREAM)[0][4]
        report["address"] = addr[0]
    except OSError as err:
        return {**report, "failed_step": "dns", "error": str(err)}
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((b.host, b.port), timeout)
    except OSError as err:
        return {**report, "failed_step": "tcp", "error": str(err)}
    report["tcp_ms"] = round((time.monotonic() - t0) * 1000, 2)
    with sock:
        if cfg.mqtt.tls is None:
            return report
        try:
            with tls_context(cfg.mqtt.tls).wrap_socket(sock, server_hostname=b.host) as tls:
                cert = tls.getpeercert() or {}
                report["tls"] = {
                    "version": tls.version(),
                    "subject": _name(cert.get("subject", ())),
                    "issuer": _name(cert.get("issuer", ())),
                    "not_after": cert.get("notAfter"),
                    "verified": True,
                }
        except ssl.SSLCertVerificationError as err:
            report["tls"] = {"verified": False, "verify_message": err.verify_message}
            return {**report, "failed_step": "tls", "error": str(err)}
        except (ssl.SSLError, OSError) as err:
            return {**report, "failed_step": "tls", "error": str(err)}
    return report


def _name(rdns: Any) -> str:
    return ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)


def _round_trip(cfg: AgentConfig, timeout: float) -> dict[str, Any]:
    n = cfg.node
    topic = (
        f"{Topics(cfg.mqtt.topic_prefix, n.site, n.line, n.agent_id).base}/test/"
        + uuid.uuid4().hex[:12]
    )
    events: dict[str, Any] = {}
    got, acked, subbed = threading.Event(), threading.Event(), threading.Event()
    try:
        client = connect_blocking(cfg, f"edge-agent-{n.agent_id}-test", timeout)
    except CommandError as err:
        return {"failed_step": "connect", "error": str(err)}

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        events.setdefault("received", time.monotonic())
        got.set()

    def on_subscribe(_c: Any, _u: Any, _m: Any, rcs: list[ReasonCode], _p: Any = None) -> None:
        events["suback"] = rcs[0]
        subbed.set()

    def on_publish(_c: Any, _u: Any, _m: Any, rc: ReasonCode, _p: Any = None) -> None:
        events["puback"] = rc
        acked.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    try:
        client.subscribe(topic, qos=1)
        if not subbed.wait(timeout) or events["suback"].is_failure:
            return _fail("subscribe", events.get("suback"))
        t0 = time.monotonic()
        client.publish(topic, b"edge-agent broker-test", qos=1)
        if not acked.wait(timeout) or events["puback"].is_failure:
            return _fail("publish", events.get("puback"))
        puback_ms = round((time.monotonic() - t0) * 1000, 2)
        if not got.wait(timeout):
            return {
                "failed_step": "round_trip",
                "error": f"no message back on {topic} in {timeout} s",
            }
        return {
            "topic": topic,
            "puback_ms": puback_ms,
            "round_trip_ms": round((events["received"] - t0) * 1000, 2),
        }
    finally:
        client.disconnect()
        client.loop_stop()


def _fail(step: str, rc: ReasonCode | None) -> dict[str, Any]:
    if rc is None:
        return {"failed_step": step, "error": "no answer from the broker"}
    return {"failed_step": step, "error": f"{rc} ({rc.value:#04x})", "reason_code": rc.value}


def cmd_broker_test(args: argparse.Namespace) -> int:
    """Run the steps; exit 0 when the round trip worked."""
    cfg = config(args, secrets=True)
    report = _preflight(cfg, cfg.mqtt.brokers[0], args.timeout)
    if "failed_step" not in report:
        report.update(_round_trip(cfg, args.timeout))
    report["ok"] = "failed_step" not in report
    output(args, report, _human)
    return 0 if report["ok"] else 1


def _human(r: dict[str, Any]) -> str:
    lines = [f"broker {r['broker']} ({r.get('address', '?')})"]
    if "tcp_ms" in r:
        lines.append(f"  tcp connect      ok, {r['tcp_ms']} ms")
    if "tls" in r:
        t = r["tls"]
        if t.get("verified"):
            lines.append(
                f"  tls              ok, {t['version']}, subject {t['subject']}, "
                f"issuer {t['issuer']}, expires {t['not_after']}"
            )
        else:
            lines.append(f"  tls              certificate NOT verified: {t.get('verify_message')}")
    if r["ok"]:
        lines.append(f"  publish/PUBACK   ok, {r['puback_ms']} ms")
        lines.append(f"  round trip       ok, {r['round_trip_ms']} ms via {r['topic']}")
        return "\n".join(lines)
    lines.append(f"  FAILED at {r['failed_step']}: {r['error']}")
    return "\n".join(lines)
