"""The commands a running daemon answers, as ``request dict -> response dict`` handlers.

The control socket (:mod:`edge_agent.control`) serves them to the CLI; they live here, not in
:mod:`edge_agent.daemon`, so that the daemon only wires and runs things and any other channel
can offer the same commands. Each handler runs in the caller's (the socket client's) thread and
reaches the pipeline only through its owners: a device action through the device thread's
``call``, a purge through the writer's ``call``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.control import Handler
from edge_agent.supervisor import DeviceWorker
from edge_agent.writer import Writer


def handlers(
    status: Callable[[], dict[str, object]],
    workers: Callable[[], Sequence[DeviceWorker]],
    writer: Writer,
) -> dict[str, Handler]:
    """``ping``, ``status``, ``device`` (a driver action), ``purge`` (sent rows, by the writer).

    ``workers`` is called per request: a reload replaces the list.
    """
    return {
        "ping": lambda _r: {"ok": True, "pid": os.getpid()},
        "status": lambda _r: {"ok": True, "status": status()},
        "device": lambda r: device_action(workers(), r),
        "purge": lambda r: {
            "ok": True,
            "deleted": writer.call(lambda ob: ob.purge_sent_before(int(r["sent_before_ns"]))),
        },
    }


def device_action(workers: Sequence[DeviceWorker], req: dict[str, Any]) -> dict[str, Any]:
    """``{"cmd": "device", "device": ID, "action": NAME}``: one of the driver's ``ACTIONS``, run
    in the device thread; ``result`` is the device's reply (MT-SICS zero: ``A`` done, ``I``
    moving, ``+``/``-`` out of range)."""
    worker = next((w for w in workers if w.driver.device_id == req.get("device")), None)
    if worker is None:
        known = ", ".join(w.driver.device_id for w in workers) or "none"
        return {"ok": False, "error": f"no device {req.get('device')!r} (devices: {known})"}
    action = str(req.get("action", ""))
    drv = worker.driver
    if action not in drv.ACTIONS:
        valid = ", ".join(sorted(drv.ACTIONS)) or "none"
        msg = f"{drv.device_id} ({drv.kind}) does not support {action!r} (actions: {valid})"
        return {"ok": False, "error": msg}
    try:
        result = worker.call(getattr(drv, action))
    except TimeoutError:
        return {"ok": False, "error": f"{drv.device_id} is {worker.state}: try again"}
    return {"ok": True, "result": str(result)}
