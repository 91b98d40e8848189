"""Small statistics shared by the batch summary and the cost planner."""

from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q ≤ 100) of ``values``; None when empty.

    Nearest rank: the smallest value with at least q % of the values at or below it, so the
    answer is always one of the values (p50 of 1, 2, 3, 4 is 2; p95 of 20 values is the 19th).
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]
