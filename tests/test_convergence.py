"""The baseline's convergence verdict, from its training curve (detrprune.report.convergence)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from detrprune.report.convergence import MAX_GAIN, judge_convergence, read_validations
from detrprune.report.summary import ReportError


def curve(map50: list[float], every: int = 70) -> pd.DataFrame:
    iters = [every * i for i in range(len(map50))]
    return pd.DataFrame({"iter": iters, "mAP": [v / 2 for v in map50], "mAP50": map50})


def test_a_plateau_has_converged_and_a_rising_curve_has_not():
    plateau = judge_convergence(curve([0.0, 0.3, 0.5, 0.6, 0.64, 0.65]))
    assert plateau.converged is True
    assert (plateau.window_start, plateau.final_iter) == (280, 350)
    assert plateau.gain_map50 == pytest.approx(0.01)
    assert "converged: mAP gained +0.005 and mAP50 +0.010" in plateau.sentence()

    rising = judge_convergence(curve([0.0, 0.2, 0.3, 0.4, 0.5, 0.5 + MAX_GAIN]))
    assert rising.converged is False  # a gain of exactly the limit is still a gain
    assert rising.sentence().startswith("NOT converged")


def test_a_curve_whose_map50_is_flat_but_whose_map_still_rises_has_not_converged():
    # The demo's own baseline: boxes found (mAP50 +0.006 over the last fifth), still tightening
    # (mAP +0.023); 300 more iterations took its mAP from 0.445 to 0.537.
    table = pd.DataFrame(
        {
            "iter": [0, 90, 180, 270, 360, 450],
            "mAP": [0.0, 0.045, 0.242, 0.255, 0.422, 0.445],
            "mAP50": [0.0, 0.2, 0.585, 0.577, 0.677, 0.683],
        }
    )
    verdict = judge_convergence(table)
    assert verdict.gain_map50 == pytest.approx(0.006) and verdict.gain_map == pytest.approx(0.023)
    assert verdict.converged is False
    assert verdict.sentence().startswith("NOT converged: mAP gained +0.023 and mAP50 +0.006")


def test_the_window_starts_at_the_last_validation_before_the_last_fifth():
    # Validations every 100 of 350: the window's start (280) falls between 200 and 300.
    table = pd.DataFrame(
        {"iter": [0, 100, 200, 300, 350], "mAP": [0] * 5, "mAP50": [0.0, 0.3, 0.5, 0.55, 0.56]}
    )
    verdict = judge_convergence(table)
    assert verdict.window_start == 200
    assert verdict.gain_map50 == pytest.approx(0.06) and verdict.converged is False


def test_too_few_validations_cannot_be_judged():
    verdict = judge_convergence(curve([0.0, 0.65], every=350))
    assert verdict.converged is None
    assert math.isnan(verdict.gain_map50) and math.isnan(verdict.gain_map)
    assert "val_interval" in verdict.sentence()


def test_read_validations_sorts_and_names_the_file_on_bad_input(tmp_path):
    good = tmp_path / "validations.csv"
    good.write_text("iter,mAP,mAP50\n70,0.1,0.2\n0,0,0\n")
    assert read_validations(good)["iter"].tolist() == [0, 70]
    bad = tmp_path / "bad.csv"
    bad.write_text("iter,mAP\n0,0\n")
    with pytest.raises(ReportError, match=r"bad\.csv: missing column 'mAP50'"):
        read_validations(bad)
    with pytest.raises(ReportError, match=r"missing\.csv: cannot read"):
        read_validations(tmp_path / "missing.csv")


def test_the_runners_validations_round_trip_through_the_curve_file(tmp_path):
    from detrprune.train.hooks import write_validations

    records = [
        {"iter": 0, "coco/bbox_mAP": 0.0, "coco/bbox_mAP_50": 0.0, "coco/bbox_mAP_75": 0.0},
        {"iter": 70, "coco/bbox_mAP": 0.25, "coco/bbox_mAP_50": 0.5},
    ]
    path = tmp_path / "validations.csv"
    write_validations(records, path)
    assert path.read_text() == "iter,mAP,mAP50\n0,0,0\n70,0.25,0.5\n"
    assert read_validations(path)["mAP50"].tolist() == [0.0, 0.5]
