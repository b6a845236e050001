"""Settings and field checks shared by the tunnel scanner drivers (see :mod:`.tunnel`)."""

from __future__ import annotations

from pydantic import Field

from drivers.common.aim import has_control
from drivers.common.link import Baud, LinkConfig
from drivers.reasons import RejectReason as R
from edge_agent.errors import FrameError

__all__ = ["Baud", "TunnelConfig", "code_text", "counter"]


class TunnelConfig(LinkConfig):
    """Settings every tunnel scanner has, beside the port's (:class:`LinkConfig`)."""

    max_frame: int = Field(default=1024, ge=16, le=65536)
    #: A frame left open this long is rejected as ``partial``. 500 ms rides out a TCP
    #: retransmission (200 ms minimum RTO on Linux) between two segments of one telegram.
    inter_byte_timeout_ms: int = Field(default=500, ge=1, le=10_000)
    dedup_window: int = Field(default=32, ge=0, le=4096)


def code_text(data: bytes) -> str:
    """Bytes of a code field as text. Raises FrameError ``garbled`` on control bytes or bad UTF-8.

    GS (0x1D, FNC1 in GS1-128) is kept; every other C0 control and DEL is a transmission fault.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(R.GARBLED, f"not UTF-8 at byte {err.start}") from None
    if has_control(text):
        raise FrameError(R.GARBLED, "control character in telegram")
    return text


def counter(text: str | None, what: str) -> int | None:
    """A decimal counter field (gate counter, code count); None when the field is not sent."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise FrameError(R.GARBLED, f"{what} {text[:20]!r} is not a number")
    return int(text)
