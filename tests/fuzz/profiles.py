"""Hypothesis sizes for the fuzz and model tests, chosen by ``HYPOTHESIS_PROFILE``.

``ci`` (the default) fits the suite's time budget; ``nightly`` is the docs/reliability.md size
and more (10,000 examples per parser, D16; 1,000 examples x 50 steps for the outbox model,
where T15 asks 200 x 50)::

    HYPOTHESIS_PROFILE=nightly .venv/bin/pytest -m faults tests/faults/test_fuzz.py \
        tests/faults/test_outbox_model.py

The profiles are registered (never loaded) here, so other tests keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per fuzz target, per profile.
FUZZ_EXAMPLES = {"ci": 200, "nightly": 10_000}
#: Outbox model: (examples, steps per example), per profile.
MODEL_RUNS = {"ci": (80, 50), "nightly": (1000, 50)}

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in FUZZ_EXAMPLES:
    PROFILE = "ci"  # another suite's profile name: keep ours at the CI size

for _name, _count in FUZZ_EXAMPLES.items():
    settings.register_profile(
        f"edge-fuzz-{_name}",
        max_examples=_count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def fuzz_settings(scale: float = 1.0) -> settings:
    """Settings for one fuzz target: the profile's example count times ``scale``."""
    base = settings.get_profile(f"edge-fuzz-{PROFILE}")
    return settings(base, max_examples=max(1, int(FUZZ_EXAMPLES[PROFILE] * scale)))


def model_settings() -> settings:
    """Settings for the outbox state machine (examples and steps per example)."""
    examples, steps = MODEL_RUNS[PROFILE]
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
