"""A variant against its control on the same resamples (detrprune.evaluate.paired)."""

from __future__ import annotations

import json

import pytest

from detrprune.evaluate.paired import compare_files, compare_with_control

from .test_bootstrap import pycoco_stats, random_case


def record(variant: str, gt, dets) -> dict:
    return {"variant": variant, "mAP": float(pycoco_stats(gt, dets)[0])}


def test_a_model_against_itself_differs_by_exactly_zero_and_is_not_significant():
    gt, dets = random_case(3, num_images=20)
    same = compare_with_control(
        gt, record("a", gt, dets), record("b", gt, dets), dets, dets, resamples=200, seed=0
    )
    assert (same["delta_mAP"], same["delta_mAP_ci95_low"], same["delta_mAP_ci95_high"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert same["significant"] is False
    assert (same["variant"], same["control"]) == ("a", "b")


def test_losing_most_detections_is_a_significant_drop(tmp_path):
    gt, dets = random_case(4, num_images=40)
    kept = dets[::4]  # three detections in four gone: far fewer true positives
    files = {
        "val_json": (gt, tmp_path / "val.json"),
        "metrics": (record("prune/x/r90", gt, kept), tmp_path / "m.json"),
        "detections": (kept, tmp_path / "d.json"),
        "control_metrics": (record("baseline", gt, dets), tmp_path / "cm.json"),
        "control_detections": (dets, tmp_path / "cd.json"),
    }
    for content, path in files.values():
        path.write_text(json.dumps(content))
    result = compare_files(**{key: path for key, (_, path) in files.items()}, resamples=300, seed=1)
    assert result["delta_mAP"] < 0
    assert result["delta_mAP_ci95_low"] <= result["delta_mAP"] <= result["delta_mAP_ci95_high"]
    assert result["delta_mAP_ci95_high"] < 0 and result["significant"] is True
    assert result["control"] == "baseline" and result["resamples"] == 300
    assert result == pytest.approx(
        compare_files(**{key: path for key, (_, path) in files.items()}, resamples=300, seed=1)
    )
