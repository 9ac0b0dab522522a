"""95% intervals for accuracies measured on a finite number of images.

An accuracy on n test images is a binomial proportion: on 360 images a true 87.7% reads anywhere from
about 84% to 91%. The interval is Wilson's score interval (Wilson 1927), not the normal (Wald) one
p +- z sqrt(p(1-p)/n): Wilson's stays inside [0, 1], is not zero-width at 0% or 100%, and keeps close
to its nominal coverage on the few hundred images a search tests on. It covers the sampling of the
images only, not the seed: repeats over seeds (results/repeats.py) and confirmation on fresh seeds
(results/confirmation.py) show that part.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping

NAN = float("nan")


def wilson(fraction: float, count: float, level: float = 0.95) -> tuple[float, float]:
    """(low, high): the Wilson score interval of an accuracy `fraction` (in [0, 1]) measured on `count`
    images, at confidence `level`. (NaN, NaN) when either is missing (NaN) or out of range."""
    if not (0 <= fraction <= 1 and count >= 1):  # NaN fails both comparisons
        return NAN, NAN
    z = NormalDist().inv_cdf(0.5 + level / 2)  # 1.96 at 95%
    spread = z * z / count
    centre = (fraction + spread / 2) / (1 + spread)
    half = z / (1 + spread) * math.sqrt(fraction * (1 - fraction) / count + spread / (4 * count))
    return max(0.0, centre - half), min(1.0, centre + half)


def examples_column(column: str) -> str:
    """The column holding the number of images a test-split accuracy column rests on:
    `[best_|reference_...]test_certified_acc` -> `..._test_certified_examples` (certify.examples, the first of
    the tested images), any other `...test_*_acc` -> `...test_examples`."""
    prefix = column[:column.index("test_")]
    return f"{prefix}test_certified_examples" if column.endswith("certified_acc") else f"{prefix}test_examples"


def interval_of(row: Mapping[str, Any], column: str) -> tuple[float, float, float]:
    """(low, high, images) of the test-split accuracy `column` of a trial row (trials.parquet, a summary)."""
    count = _number(row.get(examples_column(column)))
    return (*wilson(_number(row.get(column)), count), count)


def with_interval(fraction: float, count: float) -> str:
    """`87.7% [84.1, 90.6] (n=360)`: an accuracy, its 95% Wilson interval in %, and its image count
    (the accuracy alone when the count is unknown)."""
    low, high = wilson(fraction, count)
    if math.isnan(low):
        return f"{fraction:.1%}"
    return f"{fraction:.1%} [{100 * low:.1f}, {100 * high:.1f}] (n={count:.0f})"


def accuracy_text(row: Mapping[str, Any], column: str) -> str:
    """`with_interval` of the test-split accuracy `column` of a trial row."""
    return with_interval(_number(row.get(column)), _number(row.get(examples_column(column))))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN
