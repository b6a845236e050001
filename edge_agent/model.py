"""Base pieces of every config model: frozen models that reject unknown keys, and ids.

Kept free of other edge_agent imports so that any config model (the daemon's, a driver's, a
station's) can use them without an import cycle.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

#: Ids that end up in MQTT topics and client ids: no wildcards, no '/', no '$', no spaces.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Ident = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: :data:`ID_PATTERN` in words, for error messages a technician reads.
ID_RULE = "may contain only letters, digits, '_' and '-' (1-64 characters)"


class StrictModel(BaseModel):
    """Frozen model that rejects unknown keys.

    ``missing_hints`` maps a required key to the sentence shown when it is missing (why there
    is no default), after "missing required key '<key>': ".
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    missing_hints: ClassVar[dict[str, str]] = {}


class DeviceConfig(StrictModel):
    """Settings every device has; each driver extends it with its own ``Config``.

    Here, not in :mod:`edge_agent.config`, so that drivers import no more than this module:
    the daemon's loader imports the driver registry, and the drivers never import the loader.
    """

    type: str
    enabled: bool = True


def bare_host_problem(host: str, port_key: str = "port") -> str | None:
    """Why ``host`` is not a bare host name or address (None: it is).

    Catches a scheme (``tcp://h``), a port (``h:1883``, ``[::1]:1883``) or a path (``h/x``)
    pasted into a host key, and says where the port goes. IPv6 literals (``::1``,
    ``fe80::1%eth0``) are bare addresses and pass.
    """
    if not any(c in host for c in ":/[]"):
        return None
    if host.count(":") > 1 and not any(c in host for c in "/[]"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"a bare host name or address ({host!r} is not an IPv6 address)"
        return None
    rest = host.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        after = rest.partition("]")[2]
        port = after[1:] if after.startswith(":") else ""
    else:
        port = rest.split(":")[1] if rest.count(":") == 1 else ""
    hint = (
        f"put the port in {port_key} = {port}" if port.isdigit() else f"a port goes in {port_key} ="
    )
    return f"a bare host name or address (no scheme, port, brackets or '/'); {hint}"
