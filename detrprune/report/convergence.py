"""Has the baseline converged? Judged from the Runner's validations during its training.

A pruned-and-fine-tuned model that beats a baseline still improving shows the extra training,
not the pruning. The study compares with controls of equal training (:mod:`detrprune.variants`);
this module says whether the baseline itself had stopped improving: its validation mAP and
mAP50 each gain less than :data:`MAX_GAIN` over the last :data:`WINDOW` of the iterations. Both,
because a curve can find its boxes (mAP50 flat) while still tightening them (mAP rising): the
demo's baseline does, and the fine-tuned control then gains on mAP what the baseline had not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from detrprune.constants import VALIDATION_COLUMNS
from detrprune.report.summary import ReportError

WINDOW = 0.2  # the last fifth of training
MAX_GAIN = 0.02  # mAP or mAP50 gained over that window by a converged baseline
MIN_POINTS = 5  # validations needed to draw a curve worth judging


@dataclass(frozen=True)
class Convergence:
    """The verdict on one training curve; ``converged`` is None when it cannot be judged."""

    points: int
    window_start: int
    final_iter: int
    gain_map: float
    gain_map50: float
    converged: bool | None

    def sentence(self) -> str:
        """One line for the report."""
        if self.converged is None:
            return (
                f"not judged: {self.points} validation(s), and one at or before iteration "
                f"{self.window_start} and at least {MIN_POINTS} in all are needed "
                "(set train.val_interval to a fifth of train.max_iters)"
            )
        verdict = "converged" if self.converged else "NOT converged"
        return (
            f"{verdict}: mAP gained {self.gain_map:+.3f} and mAP50 {self.gain_map50:+.3f} from "
            f"iteration {self.window_start} to {self.final_iter}, the last {100 * WINDOW:.0f} % "
            f"of training (limit {MAX_GAIN} each)"
        )


def read_validations(path: Path) -> pd.DataFrame:
    """The baseline's ``validations.csv`` (``iter``, ``mAP``, ``mAP50``), sorted by iteration."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ReportError(f"{path}: cannot read the baseline's validations ({exc})") from exc
    for column in VALIDATION_COLUMNS:
        if column not in table.columns:
            raise ReportError(f"{path}: missing column '{column}'")
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise ReportError(f"{path}: column '{column}' must be numeric")
    return table.sort_values("iter", kind="stable").reset_index(drop=True)


def judge_convergence(validations: pd.DataFrame) -> Convergence:
    """Compare the last validation's mAP and mAP50 with the latest at or before the window start."""
    points = len(validations)
    final_iter = int(validations["iter"].max()) if points else 0
    window_start = math.floor(final_iter * (1 - WINDOW))
    before = validations[validations["iter"] <= window_start]
    if points < MIN_POINTS or before.empty:
        return Convergence(points, window_start, final_iter, math.nan, math.nan, None)
    start, last = before.iloc[-1], validations.iloc[-1]
    gain_map = float(last["mAP"] - start["mAP"])
    gain_map50 = float(last["mAP50"] - start["mAP50"])
    converged = gain_map < MAX_GAIN and gain_map50 < MAX_GAIN
    return Convergence(points, int(start["iter"]), final_iter, gain_map, gain_map50, converged)
