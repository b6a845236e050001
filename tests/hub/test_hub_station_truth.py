"""Station truth at the backend (issue 15): two simulated lines at 6,000 parcels/h through the
real device simulators (SICK tunnel heads on a pty and TCP with gate numbers, a Toledo
indicator on a pty) -> 2 agents -> Mosquitto -> 2 hubs -> PostgreSQL, with a hub kill -9 and
a broker restart in the middle. Every parcel and exception row must match the injected truth
(0 misattributed, 0 missing, 0 extra), every reading the devices wrote must be in PostgreSQL
once, the hub's KPIs must equal the injected rates, and no gap may be left open.

The fault shares are raised above the issue's (1 % no-read, 2 % multi-read, ...) so that each
kind occurs several times in 150 parcels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.fleet_lines import parser, run
from simulators.postgres import bindir

FAULTS = {"noread": 0.05, "multiread": 0.05, "invalid": 0.05, "overweight": 0.05,
          "duplicate": 0.05, "late": 0.05}  # fmt: skip


def test_two_lines_parcels_and_exceptions_in_postgres_match_the_injected_truth(
    tmp_path: Path,
) -> None:
    if bindir() is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    args = parser().parse_args(
        ["--agents", "2", "--seconds", "40", "--faults", json.dumps(FAULTS), "--settle-s", "30"]
    )
    report = run(args, tmp_path)
    slips = report["sim_slip_ms_max_by_line"]  # a loaded machine can drive the wire late
    assert report["problems"] == {}, json.dumps([report["problems"], slips], indent=1)
    assert report["open_gaps"] == 0
    assert report["readings_written"] == report["readings_in_db"] > 350
    assert report["agents_not_reconnected"] == 0
    assert report["parcels"] == 2 * round(6000 * 40 / 3600)
    assert all(report["injected"][f] >= 4 for f in FAULTS), report["injected"]
    assert report["ok"]
