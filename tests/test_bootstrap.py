"""Bootstrap intervals over validation images (detrprune.evaluate.bootstrap).

The reference for a resample is the dataset it stands for: each drawn image copied as many
times as drawn, with new image and annotation ids, evaluated from scratch by pycocotools
(evaluate + accumulate + summarize) and by ``kitti_ap``.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any

import numpy as np
import pytest

from detrprune.evaluate.bootstrap import (
    BootstrapError,
    accuracy_intervals,
    bootstrap_accuracy,
    coco_evaluated,
    coco_resampled,
    kitti_resampled,
    median_ci,
    paired_delta,
    percentile_ci,
    resample_indices,
)
from detrprune.evaluate.kitti_ap import CLASSES, kitti_ap

from .test_kitti_ap import IGNORE_AS, Scene


def coco_of(scene: Scene) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scene's ground truth, with the annotation ids pycocotools needs, and detections."""
    gt = scene.coco()
    gt["annotations"] = [{**a, "id": n} for n, a in enumerate(gt["annotations"], start=1)]
    return gt, scene.detections


def random_case(
    seed: int, num_images: int = 30, ties: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random frames with every KITTI type, jittered and mislabelled detections and false
    positives; image ids are neither contiguous nor listed in order. ``ties`` rounds scores
    to one decimal, so that many tie, also within an image."""
    rng = np.random.default_rng(seed)
    scene = Scene()
    ids = (rng.permutation(num_images) * 3 + 7).tolist()
    scene.images = [{"id": i, "width": 1242, "height": 375} for i in ids]
    types = ["Car"] * 4 + ["Pedestrian"] * 3 + ["Cyclist"] * 2 + ["Van", "Person_sitting"]

    def detect(image_id: int, cls: str, bbox: list[float]) -> None:
        score = float(rng.random())
        scene.det(cls, bbox, round(score, 1) if ties else score, image_id=image_id)

    for image_id in ids:
        for _ in range(int(rng.integers(0, 8))):
            kitti_type = types[int(rng.integers(len(types)))] if rng.random() > 0.05 else "DontCare"
            x, y = float(rng.uniform(0, 1100)), float(rng.uniform(0, 300))
            w, h = float(rng.uniform(10, 140)), float(rng.uniform(15, 90))
            scene.gt(
                kitti_type,
                [x, y, w, h],
                truncated=float(rng.choice([0.0, 0.0, 0.1, 0.2, 0.4, 0.6])),
                occluded=int(rng.choice([0, 0, 0, 1, 2, 3])),
                image_id=image_id,
            )
            for _ in range(int(rng.integers(0, 3))):
                same = rng.random() < 0.8 and kitti_type != "DontCare"
                cls = IGNORE_AS.get(kitti_type, kitti_type) if same else CLASSES[rng.integers(3)]
                box = [x + rng.normal(0, 3), y + rng.normal(0, 3), w * rng.uniform(0.8, 1.2), h]
                detect(image_id, cls, [float(v) for v in box])
        for _ in range(int(rng.integers(0, 5))):
            box = rng.uniform([0, 0, 8, 8], [1100, 300, 120, 90]).tolist()
            detect(image_id, CLASSES[rng.integers(3)], box)
    return coco_of(scene)


def expanded(
    gt: dict[str, Any], dets: list[dict[str, Any]], row: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dataset a resample stands for: the drawn images in sorted order, each copy with a
    new image id (so copies follow each other) and its annotations with new ids."""
    ids = sorted(image["id"] for image in gt["images"])
    images = {image["id"]: image for image in gt["images"]}
    out = {"images": [], "annotations": [], "categories": gt["categories"]}
    out_dets = []
    for new_id, position in enumerate(sorted(row.tolist()), start=1):
        old_id = ids[position]
        out["images"].append({**images[old_id], "id": new_id})
        for ann in gt["annotations"]:
            if ann["image_id"] == old_id:
                out["annotations"].append(
                    {**ann, "id": len(out["annotations"]) + 1, "image_id": new_id}
                )
        out_dets.extend({**d, "image_id": new_id} for d in dets if d["image_id"] == old_id)
    return out, out_dets


def pycoco_stats(gt: dict[str, Any], dets: list[dict[str, Any]]) -> np.ndarray:
    evaluator = coco_evaluated(gt, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def assert_matches_reference(gt, dets, indices: np.ndarray) -> None:
    coco = coco_resampled(gt, dets, indices)
    kitti = kitti_resampled(gt, dets, indices)
    for r, row in enumerate(indices):
        ref_gt, ref_dets = expanded(gt, dets, row)
        stats = pycoco_stats(ref_gt, ref_dets)
        assert coco["mAP"][r] == stats[0]
        assert coco["mAP50"][r] == stats[1]
        assert kitti[r] == kitti_ap(ref_gt, ref_dets)["kitti_mAP_moderate"]


def test_resample_indices_are_seeded():
    a = resample_indices(50, 200, seed=3)
    assert a.shape == (200, 50) and a.min() >= 0 and a.max() < 50
    np.testing.assert_array_equal(a, resample_indices(50, 200, seed=3))
    assert not np.array_equal(a, resample_indices(50, 200, seed=4))


@pytest.mark.parametrize("resamples", [0, -5])
def test_fewer_than_one_resample_is_rejected(resamples):
    gt, dets = random_case(0, num_images=4)
    with pytest.raises(BootstrapError, match="resamples"):
        resample_indices(4, resamples, seed=0)
    with pytest.raises(BootstrapError, match="resamples"):
        bootstrap_accuracy(gt, dets, resamples=resamples, seed=0)
    with pytest.raises(BootstrapError, match="resamples"):
        median_ci([1.0, 2.0], resamples=resamples)


def test_perfect_detector_gives_one():
    """Five easy objects per class in each of ten images: every resample holds 50 per class,
    enough for KITTI's 41 recall samples, and each is detected exactly."""
    scene = Scene(num_images=10)
    for image_id in range(10):
        for row, cls in enumerate(CLASSES):
            for k in range(5):
                box = [100.0 * k, 100.0 * row, 60.0, 50.0]
                scene.gt(cls, box, image_id=image_id)
                scene.det(cls, box, 0.95 - 0.01 * (5 * image_id + k), image_id=image_id)
    gt, dets = coco_of(scene)
    samples = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        assert samples[name].shape == (200,)
        assert (samples[name] == 1.0).all()
    intervals = accuracy_intervals(samples)
    assert intervals == {
        f"{name}_ci95_{side}": 1.0
        for name in ("mAP", "mAP50", "kitti_mAP_moderate")
        for side in ("low", "high")
    }


@pytest.mark.parametrize("ties", [False, True])
def test_full_set_equals_pycocotools_and_kitti_ap(ties):
    gt, dets = random_case(1, ties=ties)
    identity = np.arange(len(gt["images"]))[None, :]
    coco = coco_resampled(gt, dets, identity)
    stats = pycoco_stats(gt, dets)
    assert 0.0 < stats[0] < stats[1] < 1.0
    assert coco["mAP"][0] == stats[0]
    assert coco["mAP50"][0] == stats[1]
    assert kitti_resampled(gt, dets, identity)[0] == kitti_ap(gt, dets)["kitti_mAP_moderate"]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("repeated", [0, 5, 17])
def test_one_image_repeated_equals_dataset_with_it_duplicated(ties, repeated):
    gt, dets = random_case(2, ties=ties)
    row = np.append(np.arange(len(gt["images"])), repeated)
    assert_matches_reference(gt, dets, row[None, :])


@pytest.mark.parametrize("ties", [False, True])
def test_random_resamples_equal_their_datasets(ties):
    gt, dets = random_case(3, num_images=20, ties=ties)
    assert_matches_reference(gt, dets, resample_indices(20, 4, seed=11))


def test_resample_without_ground_truth_is_nan():
    scene = Scene(num_images=2)
    scene.gt("Car", [0.0, 0.0, 50.0, 50.0], image_id=1)
    scene.det("Car", [0.0, 0.0, 9.0, 9.0], 0.5, image_id=0)
    gt, dets = coco_of(scene)
    indices = np.array([[0, 0], [0, 1]])
    coco = coco_resampled(gt, dets, indices)
    kitti = kitti_resampled(gt, dets, indices)
    assert math.isnan(coco["mAP"][0]) and math.isnan(coco["mAP50"][0]) and math.isnan(kitti[0])
    assert coco["mAP"][1] == pycoco_stats(gt, dets)[0]
    assert kitti[1] == kitti_ap(gt, dets)["kitti_mAP_moderate"]


def test_no_detections_give_zero():
    gt, _ = random_case(4, num_images=6)
    samples = bootstrap_accuracy(gt, [], resamples=5, seed=0)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        assert (samples[name] == 0.0).all()


def test_inputs_are_not_modified():
    gt, dets = random_case(5, num_images=8)
    before = (repr(gt), repr(dets))
    bootstrap_accuracy(gt, dets, resamples=3, seed=0)
    assert (repr(gt), repr(dets)) == before


def test_same_seed_same_samples_other_seed_other_samples():
    gt, dets = random_case(6, num_images=15)
    a = bootstrap_accuracy(gt, dets, resamples=20, seed=1)
    b = bootstrap_accuracy(gt, dets, resamples=20, seed=1)
    c = bootstrap_accuracy(gt, dets, resamples=20, seed=2)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
    assert accuracy_intervals(a) == accuracy_intervals(b) != accuracy_intervals(c)


def test_paired_interval_of_a_model_against_itself_is_zero():
    gt, dets = random_case(7, num_images=15)
    samples = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    point = float(pycoco_stats(gt, dets)[0])
    assert paired_delta(samples, samples, point, point) == {
        "delta_mAP": 0.0,
        "delta_mAP_ci95_low": 0.0,
        "delta_mAP_ci95_high": 0.0,
    }


def test_paired_interval_of_a_worse_model_is_below_zero():
    gt, dets = random_case(8, num_images=30)
    worse = [{**d, "score": d["score"] * 0.5} if i % 3 else d for i, d in enumerate(dets)]
    variant = bootstrap_accuracy(gt, worse, resamples=200, seed=0)
    control = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    delta = paired_delta(variant, control, 0.2, 0.3)
    assert delta["delta_mAP"] == pytest.approx(-0.1)
    assert delta["delta_mAP_ci95_low"] <= delta["delta_mAP_ci95_high"]
    low, high = percentile_ci(variant["mAP"] - control["mAP"])
    assert (delta["delta_mAP_ci95_low"], delta["delta_mAP_ci95_high"]) == (low, high)


def test_paired_samples_of_different_shapes_are_rejected():
    a = {"mAP": np.zeros(200)}
    with pytest.raises(BootstrapError, match="same resamples"):
        paired_delta(a, {"mAP": np.zeros(100)}, 0.0, 0.0)
    with pytest.raises(BootstrapError, match="same resamples"):
        paired_delta(a, {"mAP": np.zeros((200, 1))}, 0.0, 0.0)


def test_percentile_interval_drops_undefined_resamples():
    values = np.array([np.nan, *np.linspace(0.0, 1.0, 101), np.nan])
    assert percentile_ci(values) == pytest.approx((0.025, 0.975))
    assert percentile_ci(values, level=0.5) == pytest.approx((0.25, 0.75))
    low, high = percentile_ci([np.nan, np.nan])
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(BootstrapError, match="level"):
        percentile_ci(values, level=1.0)


def test_median_interval_of_latencies():
    assert median_ci([4.0] * 7) == (4.0, 4.0)
    times = np.random.default_rng(0).normal(10.0, 1.0, size=50)
    low, high = median_ci(times, resamples=500, seed=3)
    assert low < np.median(times) < high
    assert median_ci(times, resamples=500, seed=3) == (low, high)
    with pytest.raises(BootstrapError, match="times_ms"):
        median_ci([])
    with pytest.raises(BootstrapError, match="times_ms"):
        median_ci([1.0, math.nan])


def test_indices_out_of_range_are_rejected():
    gt, dets = random_case(9, num_images=3)
    with pytest.raises(BootstrapError, match="indices"):
        coco_resampled(gt, dets, np.array([[0, 3, 1]]))
    with pytest.raises(BootstrapError, match="indices"):
        kitti_resampled(gt, dets, np.array([0, 1, 2]))
