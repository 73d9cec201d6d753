"""KITTI-style 2D AP (detrprune.evaluate.kitti_ap) on hand-built scenes whose AP is derived here.

The devkit samples its precision at one score threshold per ~1/40 of recall, taken from the TP
scores (``get_thresholds``). With fewer than 41 TP scores there are fewer thresholds than recall
steps, so most hand-built cases use 41 objects per class: then every TP score is a threshold
and the i-th precision sample is the precision after the (i+1)-th TP.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from detrprune.evaluate.kitti_ap import (
    CLASSES,
    DIFFICULTIES,
    KittiAPError,
    get_thresholds,
    kitti_ap,
)

CATEGORIES = [
    {"id": 1, "name": "Car"},
    {"id": 2, "name": "Pedestrian"},
    {"id": 3, "name": "Cyclist"},
]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}
IGNORE_AS = {"Van": "Car", "Person_sitting": "Pedestrian"}
N = 41  # objects per class that make every TP score a threshold


class Scene:
    """Builds the COCO ground truth the workflow writes (detrprune.data.coco) plus COCO results."""

    def __init__(self, num_images: int = 1) -> None:
        self.images = [{"id": i, "width": 5000, "height": 1000} for i in range(num_images)]
        self.annotations: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []

    def gt(
        self,
        kitti_type: str,
        bbox: list[float],
        *,
        truncated: float = 0.0,
        occluded: int = 0,
        height: float | None = None,
        image_id: int = 0,
    ) -> None:
        """Add an object as the converter would (Van, Person_sitting, DontCare: iscrowd 1)."""
        if kitti_type == "DontCare":
            targets = [(c["id"], 1) for c in CATEGORIES]
            truncated, occluded = -1.0, -1
        elif kitti_type in IGNORE_AS:
            targets = [(CATEGORY_ID[IGNORE_AS[kitti_type]], 1)]
        else:
            targets = [(CATEGORY_ID[kitti_type], 0)]
        kitti = {
            "type": kitti_type,
            "truncated": truncated,
            "occluded": occluded,
            "height": bbox[3] if height is None else height,
        }
        for category_id, iscrowd in targets:
            self.annotations.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": list(bbox),
                    "area": bbox[2] * bbox[3],
                    "iscrowd": iscrowd,
                    "kitti": dict(kitti),
                }
            )

    def det(self, cls: str, bbox: list[float], score: float, image_id: int = 0) -> None:
        self.detections.append(
            {
                "image_id": image_id,
                "category_id": CATEGORY_ID[cls],
                "bbox": list(bbox),
                "score": score,
            }
        )

    def coco(self) -> dict[str, Any]:
        return {"images": self.images, "categories": CATEGORIES, "annotations": self.annotations}

    def ap(self, recall_points: int = 40) -> dict[str, float]:
        return kitti_ap(self.coco(), self.detections, recall_points=recall_points)


def grid(n: int, y: float = 0.0, w: float = 50.0, h: float = 50.0) -> list[list[float]]:
    """``n`` disjoint ``[x, y, w, h]`` boxes in a row."""
    return [[100.0 * k, y, w, h] for k in range(n)]


def perfect(scene: Scene, cls: str, n: int = N, y: float = 0.0, h: float = 50.0) -> None:
    """``n`` easy objects of ``cls``, each detected exactly, scores 0.9, 0.899, ..."""
    for k, box in enumerate(grid(n, y=y, h=h)):
        scene.gt(cls, box)
        scene.det(cls, box, 0.9 - 0.001 * k)


def key(cls: str, difficulty: str) -> str:
    return f"kitti_AP_{cls}_{difficulty}"


# 1. Perfect detections.


@pytest.mark.parametrize("recall_points", [40, 11])
def test_perfect_detections_give_one(recall_points):
    scene = Scene()
    for row, cls in enumerate(CLASSES):
        perfect(scene, cls, y=200.0 * row)
    result = scene.ap(recall_points)
    assert set(result) == {key(c, d) for c in CLASSES for d in DIFFICULTIES} | {
        "kitti_mAP_moderate"
    }
    assert all(value == pytest.approx(1.0) for value in result.values())


def test_few_objects_follow_the_devkit_sampling():
    """Fewer than 41 TP scores give fewer than 41 thresholds: the devkit's "AP 9.09" effect.

    One car detected perfectly: one threshold, precision samples [1, 0, ..., 0]; R40 skips
    sample 0 -> 0; R11 reads samples 0, 4, ..., 40 -> 1/11. Forty cars: 40 thresholds, sample
    40 is 0 -> R40 39/40, R11 10/11 (samples 0..36 are 1, sample 40 is 0).
    """
    one = Scene()
    perfect(one, "Car", n=1)
    assert one.ap(40)[key("Car", "moderate")] == 0.0
    assert one.ap(11)[key("Car", "moderate")] == pytest.approx(1 / 11)

    forty = Scene()
    perfect(forty, "Car", n=40)
    assert len(get_thresholds([0.9 - 0.001 * k for k in range(40)], 40)) == 40
    assert forty.ap(40)[key("Car", "moderate")] == pytest.approx(39 / 40)
    assert forty.ap(11)[key("Car", "moderate")] == pytest.approx(10 / 11)


# 2. All misses.


def test_no_detections_give_zero_and_classes_without_gt_nan():
    scene = Scene()
    for box in grid(N):
        scene.gt("Car", box)
    result = scene.ap()
    for difficulty in DIFFICULTIES:
        assert result[key("Car", difficulty)] == 0.0
        assert math.isnan(result[key("Pedestrian", difficulty)])
        assert math.isnan(result[key("Cyclist", difficulty)])
    # NaN classes are left out of the mean.
    assert result["kitti_mAP_moderate"] == 0.0


def test_no_ground_truth_at_all_gives_nan_everywhere():
    result = kitti_ap({"images": [{"id": 0}], "categories": CATEGORIES, "annotations": []}, [])
    assert all(math.isnan(value) for value in result.values())


# 3. DontCare.

DONT_CARE = [1000.0, 200.0, 200.0, 100.0]


def test_detection_on_dont_care_is_not_a_false_positive():
    """A Car detection inside a DontCare box, scored above every TP, changes nothing.

    Its overlap is intersection / detection area = 1 although its IoU is only 2500/20000.
    """
    scene = Scene()
    perfect(scene, "Car")
    scene.gt("DontCare", DONT_CARE)
    scene.det("Car", [1000.0, 200.0, 50.0, 50.0], 0.99)
    assert scene.ap()[key("Car", "moderate")] == pytest.approx(1.0)


def test_same_detection_off_dont_care_is_a_false_positive():
    """Without the DontCare box the top-scored detection is an FP at every threshold.

    Precision after the k-th TP (k = 1..41) is k / (k + 1), increasing, so the running max from
    the right is 41/42 at every sample: R40 = R11 = 41/42.
    """
    scene = Scene()
    perfect(scene, "Car")
    scene.det("Car", [1000.0, 200.0, 50.0, 50.0], 0.99)
    assert scene.ap(40)[key("Car", "moderate")] == pytest.approx(41 / 42)
    assert scene.ap(11)[key("Car", "moderate")] == pytest.approx(41 / 42)


@pytest.mark.parametrize("cls, expected", [("Car", 41 / 42), ("Pedestrian", 1.0)])
def test_dont_care_overlap_uses_the_class_threshold(cls, expected):
    """A detection with 60 % of its area on DontCare: above Pedestrian's 0.5, below Car's 0.7."""
    scene = Scene()
    perfect(scene, cls)
    scene.gt("DontCare", DONT_CARE)
    scene.det(cls, [1170.0, 200.0, 50.0, 50.0], 0.99)  # 30 of its 50 px width inside
    assert scene.ap()[key(cls, "moderate")] == pytest.approx(expected)


# 4. Neighbouring classes.


@pytest.mark.parametrize("neighbour, cls", [("Van", "Car"), ("Person_sitting", "Pedestrian")])
def test_detection_on_neighbour_class_is_neither_tp_nor_fp(neighbour, cls):
    scene = Scene()
    perfect(scene, cls)
    scene.gt(neighbour, [1000.0, 200.0, 60.0, 60.0])
    scene.det(cls, [1000.0, 200.0, 60.0, 60.0], 0.99)
    result = scene.ap()
    assert all(result[key(cls, d)] == pytest.approx(1.0) for d in DIFFICULTIES)


def test_van_does_not_shield_other_classes():
    """A Van is ignored for Car only: a Cyclist detection on it is a Cyclist FP (41/42)."""
    scene = Scene()
    perfect(scene, "Cyclist")
    scene.gt("Van", [1000.0, 200.0, 60.0, 60.0])
    scene.det("Cyclist", [1000.0, 200.0, 60.0, 60.0], 0.99)
    assert scene.ap()[key("Cyclist", "moderate")] == pytest.approx(41 / 42)


# 5. Overlap threshold (strict ">", IoU without +1: width w on a 100 px box -> IoU w / 100).


@pytest.mark.parametrize(
    "cls, width, expected",
    [
        ("Car", 69.0, 0.0),
        ("Car", 70.0, 0.0),
        ("Car", 71.0, 1.0),
        ("Pedestrian", 49.0, 0.0),
        ("Pedestrian", 50.0, 0.0),
        ("Pedestrian", 51.0, 1.0),
        ("Cyclist", 49.0, 0.0),
        ("Cyclist", 51.0, 1.0),
    ],
)
def test_iou_threshold(cls, width, expected):
    """Below (or at) the threshold each detection is an FP and each object an FN: no TP, AP 0."""
    scene = Scene()
    for k, box in enumerate(grid(N, w=100.0)):
        scene.gt(cls, box)
        scene.det(cls, [box[0], box[1], width, box[3]], 0.9 - 0.001 * k)
    result = scene.ap()
    assert all(result[key(cls, d)] == pytest.approx(expected) for d in DIFFICULTIES)


# 6. Difficulty filtering.


def test_moderate_only_objects():
    """41 cars 30 px tall: not Easy (no valid GT -> NaN), perfect in Moderate and Hard.

    A 20 px detection elsewhere is ignored in Moderate (height < 25); a 25 px one is not and is
    an FP scored above every TP: 41/42 (see the DontCare test).
    """
    scene = Scene()
    perfect(scene, "Car", h=30.0)
    scene.det("Car", [1000.0, 200.0, 50.0, 20.0], 0.99)
    result = scene.ap()
    assert math.isnan(result[key("Car", "easy")])
    assert result[key("Car", "moderate")] == pytest.approx(1.0)
    assert result[key("Car", "hard")] == pytest.approx(1.0)
    assert result["kitti_mAP_moderate"] == pytest.approx(1.0)

    scene.detections[-1]["bbox"] = [1000.0, 200.0, 50.0, 25.0]
    assert scene.ap()[key("Car", "moderate")] == pytest.approx(41 / 42)


@pytest.mark.parametrize(
    "height, occluded, truncated, valid_in",
    [
        (40.5, 0, 0.0, {"easy", "moderate", "hard"}),
        (40.0, 0, 0.0, {"moderate", "hard"}),  # the devkit drops height <= min height
        (26.0, 0, 0.0, {"moderate", "hard"}),
        (25.0, 0, 0.0, set()),
        (50.0, 1, 0.0, {"moderate", "hard"}),
        (50.0, 2, 0.0, {"hard"}),
        (50.0, 3, 0.0, set()),
        (50.0, 0, 0.15, {"easy", "moderate", "hard"}),
        (50.0, 0, 0.16, {"moderate", "hard"}),
        (50.0, 0, 0.30, {"moderate", "hard"}),
        (50.0, 0, 0.31, {"hard"}),
        (50.0, 0, 0.50, {"hard"}),
        (50.0, 0, 0.51, set()),
    ],
)
def test_difficulty_levels(height, occluded, truncated, valid_in):
    """A lone car is valid exactly where its AP is not NaN; its height is ``kitti.height``.

    The box is always 60 px tall, so only the label height decides (the converter clips boxes).
    """
    scene = Scene()
    box = [0.0, 0.0, 60.0, 60.0]
    scene.gt("Car", box, truncated=truncated, occluded=occluded, height=height)
    scene.det("Car", box, 0.9)
    result = scene.ap(11)
    for difficulty in DIFFICULTIES:
        value = result[key("Car", difficulty)]
        if difficulty in valid_in:
            assert value == pytest.approx(1 / 11)  # one object: see the few-objects test
        else:
            assert math.isnan(value)


# 7, 8. A partial answer, R40 and R11.


def half_found_scene() -> Scene:
    """82 valid cars: the first 41 found (scores 0.900 .. 0.860), 41 FPs (0.800 .. 0.760)."""
    scene = Scene()
    boxes = grid(2 * N)
    for box in boxes:
        scene.gt("Car", box)
    for k, box in enumerate(boxes[:N]):
        scene.det("Car", box, 0.9 - 0.001 * k)
    for k, box in enumerate(grid(N, y=200.0)):
        scene.det("Car", box, 0.8 - 0.001 * k)
    return scene


def test_partial_answer_r40():
    """41 TP scores over 82 objects are sampled at recall 1/82 and then every ~1/40 up to 41/82:
    21 thresholds, all above every FP score, so precision samples 0..20 are 1 and 21..40 are 0.
    R40 = (samples 1..20) / 40 = 20/40 = 0.5.
    """
    assert len(get_thresholds([0.9 - 0.001 * k for k in range(N)], 2 * N)) == 21
    assert half_found_scene().ap(40)[key("Car", "moderate")] == pytest.approx(20 / 40)


def test_partial_answer_r11():
    """Same samples; R11 reads 0, 4, ..., 40, of which 0, 4, 8, 12, 16, 20 are 1: 6/11."""
    assert half_found_scene().ap(11)[key("Car", "moderate")] == pytest.approx(6 / 11)


def test_two_object_example_as_the_devkit_computes_it():
    """2 cars, one TP (0.9), one FP (0.8): a single threshold (0.9) with precision 1.

    Samples [1, 0, ..., 0]: R40 = 0 (sample 0 is not read), R11 = 1/11. Interpolating at the
    true recall would give 0.5 and 6/11 instead, which is not what the devkit does.
    """
    scene = Scene()
    scene.gt("Car", [0.0, 0.0, 50.0, 50.0])
    scene.gt("Car", [100.0, 0.0, 50.0, 50.0])
    scene.det("Car", [0.0, 0.0, 50.0, 50.0], 0.9)
    scene.det("Car", [500.0, 0.0, 50.0, 50.0], 0.8)
    assert scene.ap(40)[key("Car", "moderate")] == 0.0
    assert scene.ap(11)[key("Car", "moderate")] == pytest.approx(1 / 11)


# 9. Monotone precision and the port's matching rules.


def test_precision_is_made_monotone_from_the_right():
    """An FP between the 21st and 22nd TP: precision 1 after TPs 1..21, then k / (k + 1) for
    k = 22..41, whose maximum to the right is 41/42.
    R40 = (20 * 1 + 20 * 41/42) / 40 = 83/84; R11 = (6 * 1 + 5 * 41/42) / 11.
    """
    scene = Scene()
    perfect(scene, "Car")
    scene.det("Car", [1000.0, 200.0, 50.0, 50.0], 0.9 - 0.001 * 20.5)
    assert scene.ap(40)[key("Car", "moderate")] == pytest.approx(83 / 84)
    assert scene.ap(11)[key("Car", "moderate")] == pytest.approx((6 + 5 * 41 / 42) / 11)


def test_valid_detection_preferred_over_ignored_one():
    """Moderate: each 30 px car has a valid detection (IoU 30/38) and a 24 px, hence ignored,
    one with larger IoU (24/30) scored just below it, so above the next car's threshold. The
    counting pass takes the valid one although the ignored one overlaps more: AP 1.
    """
    scene = Scene()
    for k, (x, y, w, _) in enumerate(grid(N, w=60.0)):
        scene.gt("Car", [x, y, w, 30.0])
        scene.det("Car", [x, y, w, 38.0], 0.9 - 0.01 * k)
        scene.det("Car", [x, y + 3.0, w, 24.0], 0.9 - 0.01 * k - 0.005)
    assert scene.ap()[key("Car", "moderate")] == pytest.approx(1.0)


def test_threshold_pass_takes_the_highest_score_even_if_ignored():
    """The port's first pass gives each object its highest-scoring detection, ignored or not:
    when the 24 px detection outscores the valid one, no TP score is recorded, there are no
    thresholds, and the AP is 0 although a valid detection hits every car.
    """
    scene = Scene()
    for k, (x, y, w, _) in enumerate(grid(N, w=60.0)):
        scene.gt("Car", [x, y, w, 30.0])
        scene.det("Car", [x, y, w, 30.0], 0.5 - 0.001 * k)
        scene.det("Car", [x, y + 3.0, w, 24.0], 0.9 - 0.001 * k)
    assert scene.ap()[key("Car", "moderate")] == 0.0


@pytest.mark.parametrize("valid_first, expected", [(True, 1.0), (False, 0.0)])
def test_threshold_pass_breaks_score_ties_by_input_order(valid_first, expected):
    """Equal scores: the first detection in input order wins the threshold pass (strict ">")."""
    scene = Scene()
    for k, (x, y, w, _) in enumerate(grid(N, w=60.0)):
        scene.gt("Car", [x, y, w, 30.0])
        valid = ("Car", [x, y, w, 30.0], 0.9 - 0.001 * k)
        small = ("Car", [x, y + 3.0, w, 24.0], 0.9 - 0.001 * k)
        for det in (valid, small) if valid_first else (small, valid):
            scene.det(*det)
    assert scene.ap()[key("Car", "moderate")] == pytest.approx(expected)


def test_dont_care_copies_per_category_count_once():
    """The converter writes each DontCare once per category; one copy or three, same AP."""
    scene = Scene()
    perfect(scene, "Car")
    scene.gt("DontCare", DONT_CARE)
    scene.det("Car", [1000.0, 200.0, 50.0, 50.0], 0.99)
    single = Scene()
    perfect(single, "Car")
    single.annotations.extend(
        [dict(a) for a in scene.annotations if a["kitti"]["type"] == "DontCare"][:1]
    )
    single.det("Car", [1000.0, 200.0, 50.0, 50.0], 0.99)
    assert scene.ap() == single.ap()


# Cross-check against a literal transcription of kitti_object_eval_python/eval.py.


def _port_overlap(boxes: np.ndarray, query: np.ndarray, criterion: int = -1) -> np.ndarray:
    out = np.zeros((boxes.shape[0], query.shape[0]))
    for k in range(query.shape[0]):
        q_area = (query[k, 2] - query[k, 0]) * (query[k, 3] - query[k, 1])
        for n in range(boxes.shape[0]):
            iw = min(boxes[n, 2], query[k, 2]) - max(boxes[n, 0], query[k, 0])
            if iw > 0:
                ih = min(boxes[n, 3], query[k, 3]) - max(boxes[n, 1], query[k, 1])
                if ih > 0:
                    if criterion == -1:
                        ua = (boxes[n, 2] - boxes[n, 0]) * (boxes[n, 3] - boxes[n, 1])
                        ua += q_area - iw * ih
                    else:
                        ua = (boxes[n, 2] - boxes[n, 0]) * (boxes[n, 3] - boxes[n, 1])
                    out[n, k] = iw * ih / ua
    return out


def _port_clean_data(gt: dict, dt: dict, cls: str, difficulty: int):
    min_height, max_occ, max_trunc = [40, 25, 25], [0, 1, 2], [0.15, 0.3, 0.5]
    ignored_gt, ignored_dt, dc_bboxes, num_valid = [], [], [], 0
    for i, name in enumerate(gt["name"]):
        height = gt["bbox"][i][3] - gt["bbox"][i][1]
        if name == cls:
            valid_class = 1
        elif (cls, name) in (("Pedestrian", "Person_sitting"), ("Car", "Van")):
            valid_class = 0
        else:
            valid_class = -1
        ignore = (
            gt["occluded"][i] > max_occ[difficulty]
            or gt["truncated"][i] > max_trunc[difficulty]
            or height <= min_height[difficulty]
        )
        if valid_class == 1 and not ignore:
            ignored_gt.append(0)
            num_valid += 1
        elif valid_class == 0 or (ignore and valid_class == 1):
            ignored_gt.append(1)
        else:
            ignored_gt.append(-1)
        if name == "DontCare":
            dc_bboxes.append(gt["bbox"][i])
    for i, name in enumerate(dt["name"]):
        height = abs(dt["bbox"][i][3] - dt["bbox"][i][1])
        if height < min_height[difficulty]:
            ignored_dt.append(1)
        elif name == cls:
            ignored_dt.append(0)
        else:
            ignored_dt.append(-1)
    return num_valid, ignored_gt, ignored_dt, np.asarray(dc_bboxes).reshape(-1, 4)


def _port_statistics(overlaps, scores, dt_boxes, ign_gt, ign_dt, dc, min_overlap, thresh, fp_mode):
    det_size = len(scores)
    assigned = [False] * det_size
    below = [fp_mode and scores[j] < thresh for j in range(det_size)]
    no_detection = -10000000
    tp = fp = 0
    thresholds = []
    for i in range(len(ign_gt)):
        if ign_gt[i] == -1:
            continue
        det_idx, valid_detection, max_overlap, assigned_ignored = -1, no_detection, 0, False
        for j in range(det_size):
            if ign_dt[j] == -1 or assigned[j] or below[j]:
                continue
            overlap = overlaps[j, i]
            if not fp_mode and overlap > min_overlap and scores[j] > valid_detection:
                det_idx, valid_detection = j, scores[j]
            elif (
                fp_mode
                and overlap > min_overlap
                and (overlap > max_overlap or assigned_ignored)
                and ign_dt[j] == 0
            ):
                max_overlap, det_idx, valid_detection, assigned_ignored = overlap, j, 1, False
            elif (
                fp_mode
                and overlap > min_overlap
                and valid_detection == no_detection
                and ign_dt[j] == 1
            ):
                det_idx, valid_detection, assigned_ignored = j, 1, True
        if valid_detection == no_detection:
            continue
        if ign_gt[i] == 1 or ign_dt[det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            thresholds.append(scores[det_idx])
            assigned[det_idx] = True
    if fp_mode:
        for j in range(det_size):
            if not (assigned[j] or ign_dt[j] in (-1, 1) or below[j]):
                fp += 1
        dc_overlaps = _port_overlap(dt_boxes, dc, 0)
        for i in range(dc.shape[0]):
            for j in range(det_size):
                if assigned[j] or ign_dt[j] in (-1, 1) or below[j]:
                    continue
                if dc_overlaps[j, i] > min_overlap:
                    assigned[j] = True
                    fp -= 1
    return tp, fp, thresholds


def _port_get_thresholds(scores, num_gt, num_sample_pts=41):
    scores = sorted(scores, reverse=True)
    current_recall, out = 0, []
    for i, score in enumerate(scores):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < len(scores) - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < len(scores) - 1:
            continue
        out.append(score)
        current_recall += 1 / (num_sample_pts - 1.0)
    return out


def _port_ap(gt_annos, dt_annos, cls, difficulty, min_overlap):
    cleaned = [
        _port_clean_data(g, d, cls, difficulty) for g, d in zip(gt_annos, dt_annos, strict=True)
    ]
    overlaps = [
        _port_overlap(d["bbox"], g["bbox"]) for g, d in zip(gt_annos, dt_annos, strict=True)
    ]
    num_valid = sum(c[0] for c in cleaned)
    tp_scores = []
    for (_, ign_gt, ign_dt, dc), ov, d in zip(cleaned, overlaps, dt_annos, strict=True):
        tp_scores += _port_statistics(
            ov, d["score"], d["bbox"], ign_gt, ign_dt, dc, min_overlap, 0.0, False
        )[2]
    thresholds = _port_get_thresholds(tp_scores, num_valid) if num_valid else []
    precision = np.zeros(41)
    for t, thresh in enumerate(thresholds):
        tp = fp = 0
        for (_, ign_gt, ign_dt, dc), ov, d in zip(cleaned, overlaps, dt_annos, strict=True):
            a, b, _ = _port_statistics(
                ov, d["score"], d["bbox"], ign_gt, ign_dt, dc, min_overlap, thresh, True
            )
            tp, fp = tp + a, fp + b
        precision[t] = tp / (tp + fp)
    for t in range(len(thresholds)):
        precision[t] = np.max(precision[t:])
    return num_valid, sum(precision[1:]) / 40, sum(precision[0::4]) / 11


NUM_IMAGES = 60


def _random_scene(seed: int) -> tuple[Scene, list[dict], list[dict]]:
    """Random frames with every GT type, small and mislabelled detections and tied scores."""
    rng = random.Random(seed)
    types = (
        ["Car"] * 5 + ["Pedestrian"] * 3 + ["Cyclist"] * 2 + ["Van", "Person_sitting", "DontCare"]
    )
    scene = Scene(num_images=NUM_IMAGES)
    gt_annos, dt_annos = [], []
    for image_id in range(NUM_IMAGES):
        gt = {"name": [], "bbox": [], "truncated": [], "occluded": []}
        dt = {"name": [], "bbox": [], "score": []}
        for _ in range(rng.randint(0, 9)):
            kitti_type = rng.choice(types)
            x, y = rng.uniform(0, 600), rng.uniform(0, 200)
            w, h = rng.uniform(15, 120), rng.uniform(15, 90)
            truncated = rng.choice([0.0, 0.0, 0.0, 0.1, 0.2, 0.4, 0.6])
            occluded = rng.choice([0, 0, 0, 1, 2, 3])
            scene.gt(
                kitti_type, [x, y, w, h], truncated=truncated, occluded=occluded, image_id=image_id
            )
            gt["name"].append(kitti_type)
            gt["bbox"].append([x, y, x + w, y + h])
            gt["truncated"].append(-1.0 if kitti_type == "DontCare" else truncated)
            gt["occluded"].append(-1 if kitti_type == "DontCare" else occluded)
            for _ in range(rng.randint(0, 3)):
                cls = (
                    rng.choice(CLASSES)
                    if kitti_type in ("DontCare", "Van")
                    else rng.choice([IGNORE_AS.get(kitti_type, kitti_type)] * 4 + list(CLASSES))
                )
                box = [
                    x + rng.gauss(0, 3),
                    y + rng.gauss(0, 3),
                    w * rng.uniform(0.85, 1.15),
                    h * rng.uniform(0.7, 1.2),
                ]
                score = round(rng.random(), 2)  # ties on purpose
                scene.det(cls, box, score, image_id=image_id)
                dt["name"].append(cls)
                dt["bbox"].append([box[0], box[1], box[0] + box[2], box[1] + box[3]])
                dt["score"].append(score)
        for _ in range(rng.randint(0, 3)):
            cls = rng.choice(CLASSES)
            box = [
                rng.uniform(0, 600),
                rng.uniform(0, 200),
                rng.uniform(10, 80),
                rng.uniform(10, 80),
            ]
            score = round(rng.random(), 2)
            scene.det(cls, box, score, image_id=image_id)
            dt["name"].append(cls)
            dt["bbox"].append([box[0], box[1], box[0] + box[2], box[1] + box[3]])
            dt["score"].append(score)
        gt_annos.append(
            {
                k: np.asarray(v, dtype=float).reshape(-1, 4) if k == "bbox" else v
                for k, v in gt.items()
            }
        )
        dt_annos.append(
            {
                k: np.asarray(v, dtype=float).reshape(-1, 4) if k == "bbox" else v
                for k, v in dt.items()
            }
        )
    return scene, gt_annos, dt_annos


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_literal_transcription_of_the_port(seed):
    scene, gt_annos, dt_annos = _random_scene(seed)
    r40, r11 = scene.ap(40), scene.ap(11)
    for cls, min_overlap in (("Car", 0.7), ("Pedestrian", 0.5), ("Cyclist", 0.5)):
        for difficulty, name in enumerate(DIFFICULTIES):
            num_valid, ap40, ap11 = _port_ap(gt_annos, dt_annos, cls, difficulty, min_overlap)
            if num_valid == 0:  # the port reports 0 here; kitti_ap reports NaN
                assert math.isnan(r40[key(cls, name)]) and math.isnan(r11[key(cls, name)])
            else:
                assert r40[key(cls, name)] == pytest.approx(ap40, abs=1e-12)
                assert r11[key(cls, name)] == pytest.approx(ap11, abs=1e-12)


# Errors.


def test_recall_points_must_be_40_or_11():
    with pytest.raises(KittiAPError, match="recall_points"):
        kitti_ap(Scene().coco(), [], recall_points=20)
    assert issubclass(KittiAPError, ValueError)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.detections.append(
                {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
            ),
            "unknown image_id",
        ),
        (
            lambda s: s.detections.append(
                {"image_id": 0, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}
            ),
            "unknown category_id",
        ),
        (
            lambda s: s.detections.append(
                {"image_id": 0, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}
            ),
            "bbox",
        ),
        (
            lambda s: s.detections.append(
                {"image_id": 0, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}
            ),
            "score",
        ),
        (lambda s: s.annotations[0].pop("kitti"), "kitti"),
        (lambda s: s.images.append({"id": 0}), "more than once"),
    ],
)
def test_invalid_inputs_raise(change, message):
    scene = Scene()
    scene.gt("Car", [0.0, 0.0, 50.0, 50.0])
    change(scene)
    with pytest.raises(KittiAPError, match=message):
        scene.ap()
