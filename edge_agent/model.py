"""Base pieces of every config model: frozen models that reject unknown keys, and ids.

Kept free of other edge_agent imports so that any config model (the daemon's, a driver's, a
station's) can use them without an import cycle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

#: Ids that end up in MQTT topics and client ids: no wildcards, no '/', no '$', no spaces.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Ident = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class StrictModel(BaseModel):
    """Frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
