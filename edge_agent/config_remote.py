"""``[remote]``: the backend's commands over MQTT and the unsent-age alarms (issue 14; see
docs/backend.md "Remote commands"). Its own module so :mod:`edge_agent.config` stays small."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from edge_agent.model import StrictModel

#: Remote commands (docs/backend.md "Remote commands"); the mutating ones are off by default.
RemoteCommand = Literal["ping", "status", "resend", "reload", "device"]
_DEFAULT_ALLOW: tuple[RemoteCommand, ...] = ("ping", "status", "resend")


class RemoteConfig(StrictModel):
    """``[remote]``: commands the backend sends over MQTT, and the unsent-age alarms."""

    enabled: bool = True
    allow: list[RemoteCommand] = Field(default_factory=lambda: list(_DEFAULT_ALLOW))
    #: Rows one ``resend`` may ask for; a larger range is refused (``bad_args``): split it.
    resend_max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: Commands accepted per second (token bucket of ``rate_burst``); the rest: ``rate_limited``.
    rate_per_s: Annotated[float, Field(gt=0, le=1000)] = 5.0
    rate_burst: Annotated[int, Field(ge=1, le=1000)] = 10
    #: Requests arriving faster than ``flood_per_s`` past a burst of ``flood_burst`` (a token
    #: bucket over arrivals) is a flood: the agent unsubscribes from its ``cmd/#`` for
    #: ``flood_pause_s`` (alarm ``command_flood``), so the broker stops sending. A flood that
    #: is still there when the pause ends doubles the next pause, up to ``flood_pause_max_s``.
    flood_per_s: Annotated[int, Field(ge=1, le=100_000)] = 50
    flood_burst: Annotated[int, Field(ge=1, le=100_000)] = 20
    flood_pause_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    flood_pause_max_s: Annotated[float, Field(ge=1, le=86400)] = 960.0
    #: Requests waiting for the command thread; more are dropped (counted, no response).
    inbox_max: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: Alarm ``oldest_unsent`` when the oldest unsent reading is older than this (s).
    alarm_oldest_unsent_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    #: The same for exception events (stricter: reported within minutes).
    alarm_oldest_exception_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 120.0
