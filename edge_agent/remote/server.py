"""The command thread: takes requests from paho's callback, checks, runs and answers them.

The publisher's thread (paho's ``on_message`` runs in it) only appends a request to a bounded
inbox (a flood past ``inbox_max`` is dropped and counted, never answered); everything else
runs here, never in the publisher's or the writer's thread. A ``resend`` runs in a thread of
its own (one at a time: a second gets ``busy``) and feeds the publisher's lowest-priority lane
(:mod:`edge_agent.lanes`) a few chunks at a time, so live
readings and exceptions keep the window; it answers once its rows are PUBACKed.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edge_agent import outbox
from edge_agent.config import RemoteConfig
from edge_agent.remote import protocol
from edge_agent.remote.feed import Port, feed
from edge_agent.remote.protocol import Request, RequestError
from edge_agent.remote.ratelimit import TokenBucket
from edge_agent.remote.resend import Plan, plan
from edge_agent.topics import Topics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


class CommandServer(threading.Thread):
    """Runs the remote commands of one agent.

    Args:
        cfg: the ``[remote]`` section.
        topics: the agent's topics (``base``, normal topics for resent rows).
        db_path: the queue (read through its own read-only connection).
        port: the publisher's seams.
        batch_max: readings per resent batch message.
        status: what ``edge-agent status --json`` shows.
        reload: ask for a config reload (the main loop does it).
        device: a device action, as :func:`edge_agent.commands.device_action` takes it.
    """

    #: A ``status`` answer may be this old (s): a burst of requests computes it once.
    STATUS_CACHE_S = 1.0

    def __init__(
        self,
        cfg: RemoteConfig,
        topics: Topics,
        db_path: Path,
        port: Port,
        batch_max: int,
        status: Callable[[], dict[str, object]],
        reload: Callable[[], None],
        device: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        super().__init__(name="remote-commands", daemon=True)
        self.cfg = cfg
        self.topics = topics
        self.db_path = db_path
        self.port = port
        self.batch_max = batch_max
        self._status, self._reload, self._device = status, reload, device
        self._inbox: queue.Queue[_Incoming | None] = queue.Queue(maxsize=cfg.inbox_max)
        self._bucket = TokenBucket(cfg.rate_per_s, cfg.rate_burst)
        self._err_bucket = TokenBucket(cfg.rate_per_s, cfg.rate_burst)
        self._resending = threading.Lock()
        #: requests by outcome: ``ok``, an error code, ``dropped`` (inbox full or over the rate)
        self.counts: Counter[str] = Counter()
        self.resent_rows = 0
        #: Requests dropped in the publisher's thread (inbox full, or a flood), never answered.
        self.inbox_dropped = 0
        #: Floods seen (each paused the subscription for ``flood_pause_s``).
        self.floods = 0
        #: Arrivals (the publisher's thread): a flood empties it.
        self._arrivals = TokenBucket(cfg.flood_per_s, cfg.flood_burst)
        self._pause, self._paused_until = cfg.flood_pause_s, 0.0
        self._status_cache: tuple[float, dict[str, object]] | None = None

    # ---- the publisher's thread (paho's on_message) ---------------------------------------
    def on_message(
        self, topic: str, payload: bytes, response_topic: str | None, correlation: bytes | None
    ) -> None:
        """A request arrived (publisher's thread): queue it, or drop and count it when full or in a
        flood (dropped here, so a flood never wakes the command thread)."""
        if self._flooded():
            self.inbox_dropped += 1
            return
        try:
            self._inbox.put_nowait(_Incoming(topic, payload, response_topic, correlation))
        except queue.Full:
            self.inbox_dropped += 1  # written here only (the publisher's thread)

    # ---- other threads ----------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the request in hand."""
        try:
            self._inbox.put_nowait(None)
        except queue.Full:
            self._inbox.get_nowait()
            self._inbox.put_nowait(None)
        self.join(2.0)

    def status(self) -> dict[str, object]:
        """Counters for ``edge-agent status``."""
        return {
            "requests": dict(self.counts),
            "inbox_dropped": self.inbox_dropped,
            "floods": self.floods,
            "resend_running": self._resending.locked(),
            "resent_rows": self.resent_rows,
            "allow": list(self.cfg.allow),
        }

    # ---- the command thread -------------------------------------------------------------
    def run(self) -> None:
        """Answer requests until stopped."""
        while (item := self._inbox.get()) is not None:
            allowed = self._bucket.take()
            if not allowed and not self._err_bucket.take():
                self.counts["dropped"] += 1  # over the rate, and over the rate of answers
                continue
            req = protocol.parse(
                self.topics.base, item.topic, item.payload, item.response_topic, item.correlation
            )
            if req.error is None and not allowed:
                req.error = RequestError("rate_limited", f"over {self.cfg.rate_per_s:g} commands/s")
            try:
                self._answer(req)
            except Exception as err:  # a handler bug answers "failed", never kills
                log.exception("remote_command_failed", command=req.command)
                req.error = RequestError("failed", f"{type(err).__name__}: {err}")
                self._send(req, None)
            time.sleep(0)  # hand the GIL to the device, writer and publisher threads at once

    def _flooded(self) -> bool:
        """A token bucket over arrivals (the publisher's thread): past ``flood_burst`` at more
        than ``flood_per_s``, stop the broker sending for a while (the publisher unsubscribes).
        A flood within one pause of the last pause's end doubles the pause (to
        ``flood_pause_max_s``); a calm of that long resets it. True: drop this request."""
        now = time.monotonic()
        if now < self._paused_until:  # the broker's tail before the UNSUBACK: dropped
            return True
        if self._arrivals.take():
            return False
        calm = now - self._paused_until > self._pause
        self._pause = (
            self.cfg.flood_pause_s if calm else min(self._pause * 2, self.cfg.flood_pause_max_s)
        )
        self._paused_until = now + self._pause
        self.floods += 1
        pause = self._pause
        log.error("remote_command_flood", per_s_over=self.cfg.flood_per_s, pause_s=pause)
        self.port.pause_commands(pause)
        self.port.alarm("command_flood", {"per_s_over": self.cfg.flood_per_s,
                                          "pause_s": pause, "floods": self.floods})  # fmt: skip
        return True

    def _answer(self, req: Request) -> None:
        if req.error is None:
            req.error = self._check(req)
        if req.error is not None:
            if req.error.code != "rate_limited" and not self._err_bucket.take():
                self.counts["dropped"] += 1  # a flood of bad requests gets no flood of answers
                return
            log.warning("remote_command_refused", command=req.command, code=req.error.code,
                        reason=req.error.reason, request_id=req.request_id)  # fmt: skip
            self._send(req, None)
            return
        log.info("remote_command", command=req.command, request_id=req.request_id)
        try:
            result = self._run(req)
        except RequestError as err:
            req.error = err
            result = None
        if result is not None or req.error is not None:
            self._send(req, result)

    def _check(self, req: Request) -> RequestError | None:
        if req.command not in ("ping", "status", "resend", "reload", "device"):
            return RequestError("unknown_command", f"no command {req.command!r}")
        if req.command not in self.cfg.allow:
            allowed = ", ".join(self.cfg.allow)
            return RequestError(
                "not_allowed", f"{req.command} is not in [remote] allow (allowed: {allowed})"
            )
        return None

    def _run(self, req: Request) -> dict[str, Any] | None:
        """The result, or None when the answer comes later (resend)."""
        if req.command == "ping":
            return {"pong": True}
        if req.command == "status":  # at most one status per STATUS_CACHE_S: a burst of
            now = time.monotonic()  # them costs one (SQLite reads, every device), not one each
            if self._status_cache is None or now - self._status_cache[0] >= self.STATUS_CACHE_S:
                self._status_cache = (now, self._status())
            return self._status_cache[1]
        if req.command == "reload":
            self._reload()
            return {"reload": "requested"}
        if req.command == "device":
            return self._device_action(req.args)
        self._start_resend(req)
        return None

    def _device_action(self, args: dict[str, Any]) -> dict[str, Any]:
        action = args.get("action")
        if action not in ("zero", "tare") or not isinstance(args.get("device"), str):
            raise RequestError("bad_args", 'args: {"device": "<id>", "action": "zero" | "tare"}')
        reply = self._device({"device": args["device"], "action": action})
        if not reply.get("ok"):
            raise RequestError("failed", str(reply.get("error")))
        return {"device": args["device"], "action": action, "reply": reply.get("result")}

    def _start_resend(self, req: Request) -> None:
        if not self._resending.acquire(blocking=False):
            raise RequestError("busy", "a resend is running: one at a time")
        try:
            con = outbox.open_reader(self.db_path)
            try:
                p = plan(con, req.args, self.cfg.resend_max_rows)
            finally:
                con.close()
        except (RequestError, sqlite3.Error, OSError):
            self._resending.release()
            raise
        t = threading.Thread(target=self._resend, args=(req, p), name="remote-resend", daemon=True)
        t.start()

    def _resend(self, req: Request, p: Plan) -> None:
        """The resend thread: feed the lane a few messages at a time, answer when PUBACKed."""
        try:
            t0 = time.monotonic()
            sent, complete = feed(p, self.port, self.batch_max)
            elapsed = time.monotonic() - t0
            self.resent_rows += sent
            result = {"device": p.device, "sent": sent, "gone": p.gone, **p.extra}
            result["seconds"] = round(elapsed, 3)
            result["complete"] = complete
            log.info("remote_resend_done", device=p.device, sent=sent, gone=len(p.gone),
                     seconds=round(elapsed, 3), complete=complete)  # fmt: skip
            self._send(req, result)
        finally:
            self._resending.release()

    def _send(self, req: Request, result: dict[str, Any] | None) -> None:
        self.counts["ok" if req.error is None else req.error.code] += 1
        body = protocol.response(req, self.topics.agent, result)
        self.port.respond(req.reply_to, body, req.correlation_prop)
