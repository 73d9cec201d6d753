"""The Pareto front of a trade-off: the models no other model beats on both axes.

A row is dominated when another row is at least as good on both columns and strictly better on
one. Rows tied on both columns dominate neither each other: all of them stay on the front. A row
with a missing value (NaN) on either column is left out; it neither is on the front nor removes
a row from it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(
    table: pd.DataFrame,
    x: str,
    y: str,
    *,
    maximize_x: bool = True,
    maximize_y: bool = True,
) -> pd.DataFrame:
    """The rows of ``table`` no other row dominates on columns ``x`` and ``y``.

    Args:
        table: one row per model.
        x, y: the two columns of the trade-off (e.g. ``speedup`` and ``mAP``).
        maximize_x, maximize_y: whether a larger value is better on that column (False for a
            latency, say).

    Returns:
        The non-dominated rows (their index and columns kept), ordered by ``x`` ascending, then
        by ``y`` ascending, then by their order in ``table``: the order to join them in.
    """
    values = table[[x, y]].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    # Flip the signs so that larger is better on both columns.
    better = values * np.array([1.0 if maximize_x else -1.0, 1.0 if maximize_y else -1.0])
    candidates = np.flatnonzero(finite)
    points = better[candidates]
    # j dominates i: j >= i on both and j > i on one.
    at_least = (points[:, None, :] >= points[None, :, :]).all(axis=2)
    strictly = (points[:, None, :] > points[None, :, :]).any(axis=2)
    dominated = (at_least & strictly).any(axis=0)
    front = table.iloc[candidates[~dominated]]
    order = np.lexsort(
        (np.arange(len(front)), front[y].to_numpy(dtype=float), front[x].to_numpy(dtype=float))
    )
    return front.iloc[order]
