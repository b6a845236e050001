"""The control socket: a Unix stream socket speaking newline-delimited JSON, for the CLI.

Protocol (one request line, then response lines; UTF-8 JSON, one object per line)::

    -> {"cmd": "ping"}                       <- {"ok": true, "pid": 1234}
    -> {"cmd": "status"}                     <- {"ok": true, "status": {...}}   (see Daemon.status)
    -> {"cmd": "watch", "device": "t1"}      <- {"ok": true} then one line per event until the
                                                client closes: {"event": "reading", ...reading.v1}
                                                or {"event": "reject", "device", "reason", "hex"}
    -> {"cmd": "device", "device": "scale_1", "action": "zero"}
                                             <- {"ok": true} / {"ok": false, "error": "..."}

Errors: ``{"ok": false, "error": "<text>"}``. The socket lives in the runtime directory
(``$RUNTIME_DIRECTORY/control.sock`` under systemd), mode 0660, optionally chgrp'ed to a
configured group. There is no TCP control port. A watcher that cannot keep up loses events
(counted in its stream as ``{"event": "lagged", "lost": N}``), never slows the daemon.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import queue
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from edge_agent.instance import AlreadyRunningError

log = structlog.get_logger(__name__)

SOCKET_HINT = (
    "give this daemon its own [control] socket, or stop the other one first "
    "(systemctl stop edge-agent)"
)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class _Watcher:
    """A bounded event queue for one ``watch`` client."""

    MAX = 1000

    def __init__(self, device: str | None) -> None:
        self.device = device
        self.q: queue.Queue[dict[str, Any]] = queue.Queue(self.MAX)
        self.lost = 0

    def offer(self, event: dict[str, Any]) -> None:
        if self.device is not None and event.get("device") != self.device:
            return
        try:
            self.q.put_nowait(event)
        except queue.Full:
            self.lost += 1


class ControlServer(threading.Thread):
    """Serves the control socket.

    Args:
        path: socket path (its directory is created if missing).
        handlers: ``cmd`` name -> function(request) -> response dict (non-streaming commands).
        group: optional group name owning the socket (mode 0660).
    """

    def __init__(self, path: Path, handlers: dict[str, Handler], group: str | None = None) -> None:
        super().__init__(name="control-socket", daemon=True)
        self.path = path
        self.handlers = handlers
        self.group = group
        self._watchers: list[_Watcher] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closing = threading.Event()
        self._inode: int | None = None

    def bind(self) -> None:
        """Create the socket file. Raises :class:`AlreadyRunningError` if a live daemon answers on
        it (its socket is never taken over), OSError if it cannot be created.

        A socket file nobody answers on is stale (its daemon died) and is replaced.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            pid = answering_pid(self.path)
            if pid is not None:
                raise AlreadyRunningError(self.path, pid, SOCKET_HINT)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        self._inode = os.stat(self.path).st_ino
        if self.group:
            gid = grp.getgrnam(self.group).gr_gid
            if os.stat(self.path).st_gid != gid:  # chown is filtered under the hardened unit
                os.chown(self.path, -1, gid)
        sock.listen(8)  # blocking accept: no wake-up at idle; close() shuts it down
        self._sock = sock

    def publish(self, event: dict[str, Any]) -> None:
        """Offer an event to every watcher (non-blocking)."""
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            w.offer(event)

    @property
    def watching(self) -> bool:
        """True while at least one client watches (the daemon skips building events otherwise)."""
        return bool(self._watchers)

    def run(self) -> None:
        """Accept clients until closed; each is served in its own short-lived thread."""
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                break  # close(): shutdown() ends the accept
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        """Stop accepting and remove the socket file, if it is still the one this server made
        (never another daemon's socket that replaced it)."""
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
            self._sock.close()
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    def _serve(self, conn: socket.socket) -> None:
        """One client. A client going away (``monitor`` quit, ``probe`` interrupted) is normal:
        it ends the conversation quietly, never a traceback in the daemon's log."""
        try:
            with conn, conn.makefile("rwb") as f:
                self._converse(f)
        except OSError as err:  # BrokenPipeError, ConnectionResetError: the client left
            log.debug("control_client_left", error=err.strerror or str(err))

    def _converse(self, f: Any) -> None:
        try:
            line = f.readline(65536)
            request = json.loads(line) if line else {}
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as err:
            _send(f, {"ok": False, "error": f"bad request: {err}"})
            return
        if request.get("cmd") == "watch":
            self._watch(f, request.get("device"))
            return
        _send(f, self._dispatch(request))

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        handler = self.handlers.get(str(request.get("cmd")))
        if handler is None:
            valid = ", ".join(sorted([*self.handlers, "watch"]))
            return {"ok": False, "error": f"unknown cmd {request.get('cmd')!r} (valid: {valid})"}
        try:
            return handler(request)
        except Exception as err:
            log.warning("control_command_failed", cmd=request.get("cmd"), error=str(err))
            return {"ok": False, "error": str(err)}

    def _watch(self, f: Any, device: str | None) -> None:
        w = _Watcher(device)
        with self._lock:
            self._watchers.append(w)
        try:
            _send(f, {"ok": True})
            while not self._closing.is_set():
                try:
                    event = w.q.get(timeout=1.0)
                except queue.Empty:
                    event = {"event": "idle"}
                if w.lost:
                    _send(f, {"event": "lagged", "lost": w.lost})
                    w.lost = 0
                _send(f, event)
        except OSError:
            pass  # client went away
        finally:
            with self._lock:
                self._watchers.remove(w)


def _send(f: Any, obj: dict[str, Any]) -> None:
    f.write(json.dumps(obj).encode() + b"\n")
    f.flush()


def request(path: Path, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request/response round trip to a running daemon. Raises OSError if none listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(req).encode() + b"\n")
        with s.makefile("rb") as f:
            line = f.readline()
    if not line:
        msg = f"{path}: the daemon closed the connection without answering"
        raise OSError(msg)
    result: dict[str, Any] = json.loads(line)
    return result


def answering_pid(path: Path, timeout: float = 1.0) -> int | None:
    """The pid of the daemon answering ``ping`` on ``path``, None if nothing answers.

    A daemon that accepts but does not answer in ``timeout`` s (wedged) counts as live too
    (pid 0): its socket is not taken from it.
    """
    try:
        reply = request(path, {"cmd": "ping"}, timeout=timeout)
    except TimeoutError:
        return 0
    except (OSError, ValueError):
        return None
    pid = reply.get("pid")
    return pid if isinstance(pid, int) else 0
