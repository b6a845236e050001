"""Line simulator: a whole sorting station (tunnel heads + scale) with injected, recorded truth.

Parcels arrive at ``rate_per_h`` (period ± 10 % jitter). For each parcel, relative to the
master head's result telegram ``tm`` (arrival + 40..60 ms)::

    tunnel_1 (master)   tm                 its codes, or NoRead        (gate index in gate mode)
    tunnel_k (k > 1)    tm + 5..200 ms     its codes, or NoRead        (same gate index)
    scale_1             tm + 20..250 ms    optional motion value, then the stable weight (grams)

Injected faults, each an exact share of the parcels (``round(share * parcels)``), chosen by a
seeded RNG: ``noread`` (every head NoRead), ``multiread`` (two labels of different carriers),
``invalid`` (a label with a wrong check digit, truncated or lower-case), ``overweight`` /
``underweight`` / ``unstable`` (only motion values) / ``no_weight``, ``duplicate`` (the master
fires twice: its telegram again, after the window in window mode, with a new gate inside the
window in gate mode) and ``late`` (a slave head's telegram after the window: after the window
in window mode, up to 500 ms later, into the next parcel's window, in gate mode).

The core is pure: :meth:`LineSim.readings` yields reading.v1 dicts in ``mono_ns`` order and
fills :attr:`LineSim.truth` (one :class:`ParcelTruth` per parcel) and :attr:`LineSim.expected`
(the exception events a correct station must emit for the injected faults). A few minutes of
line run through a :class:`~edge_agent.station.Station` in well under a second
(:func:`run_station`, :func:`check`).

Driving real device simulators (the hook): :func:`drive` paces the same readings in real time
and hands each one to a per-device :data:`Sink`, e.g. a function that writes the code through
a ``ScannerSim`` pty (``port.write(sim.frame(aim + code))``) or sets a scale simulator's load.
Ids, ``seq`` and ``mono_ns`` are then assigned by the agent, so compare with the truth by code,
weight and order.

Run by hand::

    python -m simulators.line --rate 6000 --duration 240 --mode gate --check
    python -m simulators.line --duration 60 --readings r.jsonl --truth t.jsonl
"""

from simulators.line.codes import waybill
from simulators.line.model import (
    CODE_FAULTS,
    TRIGGER_FAULTS,
    WEIGHT_FAULTS,
    ExpectedException,
    LineConfig,
    ParcelTruth,
)
from simulators.line.run import Sink, check, drive, run_station, write_truth
from simulators.line.sim import LineSim

__all__ = [
    "CODE_FAULTS",
    "TRIGGER_FAULTS",
    "WEIGHT_FAULTS",
    "ExpectedException",
    "LineConfig",
    "LineSim",
    "ParcelTruth",
    "Sink",
    "check",
    "drive",
    "run_station",
    "waybill",
    "write_truth",
]
