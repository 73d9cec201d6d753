"""Bootstrap confidence intervals from resampled values: percentile, basic and BCa.

Given what :mod:`detrprune.evaluate.bootstrap` computes per resample (and, for BCa, per
left-out image), each method turns the samples into an interval: :func:`bootstrap_interval`
dispatches by name, :func:`accuracy_intervals` gives every accuracy metric its interval by the
method the study reports (INTERVAL_METHOD, chosen by measured coverage in
bench/interval_coverage.md), :func:`paired_delta` the interval of a variant's difference from
its control on shared resamples, and :func:`median_ci` that of a median latency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import special

from detrprune.evaluate.bootstrap import (
    DEFAULT_RESAMPLES,
    METRICS,
    BootstrapError,
    resample_indices,
)

# The interval methods :func:`bootstrap_interval` knows.
INTERVAL_METHODS: tuple[str, ...] = ("percentile", "basic", "bca")
# The methods the study reports, chosen by their measured coverage (bench/interval_coverage.md):
# single-model AP intervals, and paired differences of two models on the same resamples.
INTERVAL_METHOD = "bca"
DELTA_INTERVAL_METHOD = "percentile"
# Where the quantities lie: an AP in [0, 1], a difference of two in [-1, 1].
AP_BOUNDS: tuple[float, float] = (0.0, 1.0)
DELTA_BOUNDS: tuple[float, float] = (-1.0, 1.0)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise BootstrapError(f"level must lie in (0, 1), got {level!r}")


def _defined(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The values as a flat float array, NaN (undefined resamples) dropped."""
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[~np.isnan(values)]


def percentile_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval: the ``(1 -+ level) / 2`` quantiles (linear interpolation).

    Resamples where the metric is undefined (NaN) are dropped; if all are, the interval is
    ``(nan, nan)``.
    """
    _check_level(level)
    values = _defined(values)
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(low), float(high)


def basic_ci(
    samples: Sequence[float] | np.ndarray,
    point: float,
    level: float = 0.95,
    *,
    bounds: tuple[float, float] | None = AP_BOUNDS,
) -> tuple[float, float]:
    """Basic (reflected) bootstrap interval ``[2 point - q_hi, 2 point - q_lo]``, ``q`` the
    :func:`percentile_ci` quantiles: the resamples' spread around ``point`` mirrored, so a
    bootstrap that sits above the point estimate moves the interval down.

    The reflection can leave the range the quantity lies in (an AP near 0 gets a negative
    lower end); it is clipped to ``bounds`` (``None``: not clipped). Clipping changes no
    coverage, since the true value lies in ``bounds``. NaN samples are dropped; none left, or a
    NaN ``point``: ``(nan, nan)``.
    """
    q_low, q_high = percentile_ci(samples, level)
    if math.isnan(q_low) or math.isnan(point):
        return math.nan, math.nan
    low, high = 2.0 * point - q_high, 2.0 * point - q_low
    if bounds is not None:
        low, high = min(max(low, bounds[0]), bounds[1]), min(max(high, bounds[0]), bounds[1])
    return float(low), float(high)


def bca_acceleration(jackknife: Sequence[float] | np.ndarray) -> float:
    """BCa's acceleration ``a = sum d^3 / (6 (sum d^2)^1.5)``, ``d = mean - jackknife value``.

    NaN values (undefined leave-one-out sets) are dropped. Fewer than three left, or all equal
    (the statistic does not move when an image leaves): 0, the percentile method's value.
    """
    values = _defined(jackknife)
    if values.size < 3 or values.min() == values.max():
        return 0.0
    d = values.mean() - values
    return float(np.sum(d**3) / (6.0 * np.sum(d**2) ** 1.5))


def bca_ci(
    samples: Sequence[float] | np.ndarray,
    point: float,
    jackknife: Sequence[float] | np.ndarray,
    level: float = 0.95,
) -> tuple[float, float]:
    """Bias-corrected and accelerated (BCa, Efron 1987) bootstrap interval.

    The :func:`percentile_ci` quantiles taken at the adjusted levels
    ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1((1 -+ level) / 2)``, where the
    bias correction ``z0 = Phi^-1(share of samples below point)`` (a sample equal to the point
    counts half) and the acceleration ``a`` comes from the ``jackknife`` values
    (:func:`bca_acceleration`). A bootstrap that sits above the point estimate (the bias AP has
    on resampled images) gives ``z0 < 0`` and moves the interval down; the interval stays within
    the samples' range, so an AP interval stays in [0, 1]. ``z0 = a = 0``: the percentile
    interval.

    NaN samples are dropped; none left, or a NaN ``point``: ``(nan, nan)``. Degenerate cases
    fall back without warnings: all samples equal gives ``(value, value)`` as the percentile
    interval does; a point outside the samples' range counts as half a sample beyond the most
    extreme one (``z0`` finite); an acceleration so large that ``1 - a (z0 + z) <= 0`` is
    dropped (``a = 0``, the bias-corrected interval).
    """
    _check_level(level)
    values = _defined(samples)
    if values.size == 0 or math.isnan(point):
        return math.nan, math.nan
    if values.min() == values.max():
        return float(values[0]), float(values[0])
    below = np.count_nonzero(values < point) + 0.5 * np.count_nonzero(values == point)
    share = min(max(below / values.size, 0.5 / values.size), 1.0 - 0.5 / values.size)
    z0 = float(special.ndtri(share))
    z = special.ndtri(np.array([0.5 * (1.0 - level), 0.5 * (1.0 + level)]))
    a = bca_acceleration(jackknife)
    denominator = 1.0 - a * (z0 + z)
    if (denominator <= 0.0).any():
        denominator = np.ones_like(z)
    levels = special.ndtr(z0 + (z0 + z) / denominator)
    low, high = np.percentile(values, 100.0 * levels)
    return float(low), float(high)


def bootstrap_interval(
    method: str,
    samples: Sequence[float] | np.ndarray,
    point: float,
    jackknife: Sequence[float] | np.ndarray | None = None,
    level: float = 0.95,
    *,
    bounds: tuple[float, float] | None = AP_BOUNDS,
) -> tuple[float, float]:
    """The ``method`` interval (one of INTERVAL_METHODS): :func:`percentile_ci` (``point``
    unused), :func:`basic_ci` (clipped to ``bounds``) or :func:`bca_ci` (needs ``jackknife``)."""
    if method == "percentile":
        return percentile_ci(samples, level)
    if method == "basic":
        return basic_ci(samples, point, level, bounds=bounds)
    if method == "bca":
        if jackknife is None:
            raise BootstrapError("a BCa interval needs the jackknife values")
        return bca_ci(samples, point, jackknife, level)
    raise BootstrapError(f"unknown interval method {method!r}; known: {INTERVAL_METHODS}")


def accuracy_intervals(
    samples: Mapping[str, np.ndarray],
    points: Mapping[str, float],
    jackknife: Mapping[str, np.ndarray] | None = None,
    level: float = 0.95,
    *,
    method: str = INTERVAL_METHOD,
) -> dict[str, float]:
    """``{metric}_ci95_low`` / ``_high`` for each metric of
    :func:`~detrprune.evaluate.bootstrap.bootstrap_accuracy`, by ``method`` (default
    INTERVAL_METHOD) from the resamples, the full-set values ``points`` and, for BCa, the
    ``jackknife`` values (:func:`~detrprune.evaluate.bootstrap.resampled_accuracy` gives all
    three)."""
    out: dict[str, float] = {}
    for name in METRICS:
        low, high = bootstrap_interval(
            method,
            samples[name],
            float(points[name]),
            None if jackknife is None else jackknife[name],
            level,
        )
        out[f"{name}_ci{round(100 * level)}_low"] = low
        out[f"{name}_ci{round(100 * level)}_high"] = high
    return out


def paired_delta(
    samples_variant: Mapping[str, np.ndarray],
    samples_control: Mapping[str, np.ndarray],
    point_variant: float,
    point_control: float,
    *,
    metric: str = "mAP",
    level: float = 0.95,
    method: str = DELTA_INTERVAL_METHOD,
) -> dict[str, float]:
    """``delta_{metric}`` (variant - control, full-set point estimates) and its paired interval
    from the per-resample differences, by ``method`` (default DELTA_INTERVAL_METHOD; BCa, which
    would need both jackknifes, is not offered here).

    Both sample sets must come from the same resample indices (same images, resamples and
    seed); only their shapes can be checked here.
    """
    variant = np.asarray(samples_variant[metric], dtype=np.float64)
    control = np.asarray(samples_control[metric], dtype=np.float64)
    if variant.ndim != 1 or variant.shape != control.shape:
        raise BootstrapError(
            f"paired samples of {metric!r} must be 1-D arrays from the same resamples, "
            f"got shapes {variant.shape} and {control.shape}"
        )
    if method not in ("percentile", "basic"):
        raise BootstrapError(f"paired deltas take a percentile or basic interval, not {method!r}")
    delta = float(point_variant) - float(point_control)
    low, high = bootstrap_interval(
        method, variant - control, delta, level=level, bounds=DELTA_BOUNDS
    )
    name = f"delta_{metric}"
    return {
        name: delta,
        f"{name}_ci{round(100 * level)}_low": low,
        f"{name}_ci{round(100 * level)}_high": high,
    }


def median_ci(
    times_ms: Sequence[float] | np.ndarray,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of the timed runs (``latency_ms_ci95_*``)."""
    times = np.asarray(times_ms, dtype=np.float64).ravel()
    if times.size == 0 or not np.isfinite(times).all():
        raise BootstrapError("times_ms must be a non-empty list of finite times")
    draws = resample_indices(times.size, resamples, seed)
    return percentile_ci(np.median(times[draws], axis=1), level)
