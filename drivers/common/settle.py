"""Publish a scale's weight once per settle: the filter every scale driver applies.

A stable weight is published once. Motion (unstable frames) and stable weights below the
empty-platform threshold are not weights, and re-arm the scale so the next parcel of the same
weight is published again; a repeat of the last published weight is counted, not published.
"""

from __future__ import annotations

from edge_agent.reading import Decoded


class Settling:
    """Mixin for scale drivers: ``motion``, ``below_min``, ``repeats`` counters and the filter.

    The driver sets the counters to 0 and ``_last`` to None in its constructor.
    """

    motion: int
    below_min: int
    repeats: int
    _last: float | None

    def _settled(self, d: Decoded, min_weight_g: float) -> bool:
        """True when ``d`` is a new settled weight to publish; counts the others."""
        grams = d.value if isinstance(d.value, float) else 0.0
        if not d.stable:
            self.motion += 1
            self._last = None
        elif grams < min_weight_g:
            self.below_min += 1
            self._last = None
        elif grams == self._last:
            self.repeats += 1
        else:
            self._last = grams
            return True
        return False
