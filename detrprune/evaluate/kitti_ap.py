"""KITTI-style 2D detection AP (Car / Pedestrian / Cyclist; Easy / Moderate / Hard).

Reproduces the 2D ``bbox`` AP of the official KITTI object devkit (``cpp/evaluate_object.cpp``)
as ported to Python in second.pytorch / mmdet3d (``kitti_object_eval_python/eval.py``:
``clean_data``, ``image_box_overlap``, ``compute_statistics_jit``, ``get_thresholds``,
``eval_class``, ``get_mAP`` / ``get_mAP_R40``), read from COCO-format ground truth and
detections. Rules, per class and difficulty:

Difficulty: Easy / Moderate / Hard = minimum box height 40 / 25 / 25 px, maximum occlusion
0 / 1 / 2, maximum truncation 0.15 / 0.30 / 0.50. Overlap thresholds: Car 0.7, Pedestrian 0.5,
Cyclist 0.5.

Ground truth (``clean_data``): a box of the class is *valid* unless ``occluded > max``,
``truncated > max`` or ``height <= min height`` (note ``<=``: a 40 px Car is not Easy), in which
case it is *ignored*; the neighbouring class (Van for Car, Person_sitting for Pedestrian) is
always *ignored*; every other type is not considered. The height is the original label box
height (``kitti.height``); the box used for overlaps is the COCO ``bbox`` (clipped to the image,
which KITTI's labels already are). DontCare boxes (``iscrowd`` 1, ``kitti.type`` "DontCare";
written once per category, de-duplicated here per image) form the class-agnostic DontCare set.

Detections (``clean_data``): a detection with box height ``< min height`` (strict) is *ignored*
whatever its category, so it may still absorb a ground truth in matching (as in the port); one
of the class that is tall enough is *valid*; any other is not considered.

Overlap (``image_box_overlap``): area ``(x2 - x1) * (y2 - y1)`` on float pixel boxes (no +1);
ground-truth matching uses IoU, DontCare uses intersection / area of the *detection*. Both are
compared with a strict ``>`` against the class's threshold (0.7 for Car also on DontCare).

Matching, per image, ground truths in annotation order, detections in input order
(``compute_statistics_jit``), skipping detections already assigned:

1. Threshold pass (all scores ``>= 0``): each valid or ignored ground truth takes the
   highest-scoring detection with overlap above the threshold (first in input order on ties).
   Only a valid ground truth matched by a valid detection records its score as a TP score.
2. Score thresholds (``get_thresholds``): the TP scores of all images, sorted descending, are
   sampled at ~41 evenly spaced recall steps (0, 1/40, ..., 1) of the number of valid ground
   truths; always 41 samples, R11 included (the port reads every 4th of them).
3. Counting pass, for each sampled threshold ``t`` with detections of score ``>= t``: each valid
   or ignored ground truth takes the valid detection of largest overlap above the threshold
   (first on ties), failing that the first ignored detection above it. A valid ground truth
   matched by a valid detection is a TP; one left unmatched is an FN; any other match only
   retires the detection. A valid detection left unassigned is an FP, unless its overlap with
   some DontCare box is above the threshold.
4. ``precision[i] = TP / (TP + FP)`` at the i-th threshold (zero past the last one), made
   non-increasing by the running maximum from the right; R40 AP = ``sum(precision[1:41]) / 40``,
   R11 AP = ``sum(precision[0:41:4]) / 11``, returned in [0, 1] rather than percent.

As in the devkit, the i-th precision sample sits near recall i/40 only when there are many
ground truths: with fewer than 41 TP scores there are fewer thresholds than recall steps, so
perfect detection of a single object gives R40 0 and R11 1/11 (the well-known "AP 9.09").

Deliberate differences from the port: a class/difficulty without valid ground truth gives NaN
(the port reports 0); ``TP + FP == 0`` at a threshold counts as precision 0 (the port divides
by zero). Negative scores behave as in the port: never above a threshold, so never counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detrprune.constants import CLASSES

DIFFICULTIES: tuple[str, ...] = ("easy", "moderate", "hard")
MIN_HEIGHT: tuple[float, ...] = (40.0, 25.0, 25.0)
MAX_OCCLUSION: tuple[int, ...] = (0, 1, 2)
MAX_TRUNCATION: tuple[float, ...] = (0.15, 0.3, 0.5)
MIN_OVERLAP: dict[str, float] = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOUR: dict[str, str] = {"Car": "Van", "Pedestrian": "Person_sitting"}
DONT_CARE = "DontCare"
N_SAMPLE_PTS = 41
RECALL_POINTS: tuple[int, ...] = (40, 11)

_VALID, _IGNORED = 0, 1


class KittiAPError(ValueError):
    """Ground truth, detections or arguments that KITTI AP cannot be computed from."""


@dataclass
class KittiImage:
    """One image's ground truth and detections, with the overlaps every class needs.

    ``iou`` is detections x ground truths; ``dc_max`` each detection's largest DontCare
    overlap (intersection / detection area), 0 without DontCare.
    """

    gt_types: list[str]
    gt_truncated: np.ndarray
    gt_occluded: np.ndarray
    gt_height: np.ndarray
    dt_classes: np.ndarray
    dt_height: np.ndarray
    dt_scores: np.ndarray
    iou: np.ndarray
    dc_max: np.ndarray


@dataclass
class PreparedImage:
    """One image reduced, for one class and difficulty, to what can change with the threshold.

    Only the detections whose overlap with some considered ground truth is above the class
    threshold ("candidates", renumbered 0..n-1 in input order) are kept: the others can never
    be matched. ``gt_candidates[i]`` lists ``(candidate, overlap)`` above the threshold for the
    i-th considered ground truth; ``countable`` marks valid candidates off any DontCare region.
    """

    ign_gt: list[int]
    gt_candidates: list[list[tuple[int, float]]]
    scores: list[float]
    ign_det: list[int]
    countable: list[bool]
    ascending_scores: np.ndarray


def box_overlap(boxes: np.ndarray, query: np.ndarray, criterion: int = -1) -> np.ndarray:
    """The devkit's ``image_box_overlap``: ``(len(boxes), len(query))`` overlaps.

    ``criterion`` -1 divides the intersection by the union (IoU), 0 by the area of ``boxes``.
    Pairs whose intersection is not positive in both directions get 0.
    """
    if criterion not in (-1, 0):
        raise KittiAPError(f"criterion must be -1 or 0, got {criterion}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    query = np.asarray(query, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(boxes[:, None, 2], query[None, :, 2]) - np.maximum(
        boxes[:, None, 0], query[None, :, 0]
    )
    ih = np.minimum(boxes[:, None, 3], query[None, :, 3]) - np.maximum(
        boxes[:, None, 1], query[None, :, 1]
    )
    inter = iw * ih
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None]
    if criterion == -1:
        q_area = ((query[:, 2] - query[:, 0]) * (query[:, 3] - query[:, 1]))[None, :]
        denom = area + q_area - inter
    else:
        denom = np.broadcast_to(area, inter.shape)
    positive = (iw > 0) & (ih > 0)
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, denom, out=out, where=positive)
    return out


def get_thresholds(
    scores: Sequence[float], num_gt: int, num_sample_pts: int = N_SAMPLE_PTS
) -> list[float]:
    """The devkit's ``getThresholds``: TP scores sampled at evenly spaced recall steps.

    A score is kept when its recall ``(i + 1) / num_gt`` is at least as close to the next
    recall step as the following score's; the lowest score is always kept.
    """
    ordered = sorted((float(s) for s in scores), reverse=True)
    current_recall = 0.0
    thresholds: list[float] = []
    for i, score in enumerate(ordered):
        last = i == len(ordered) - 1
        l_recall = (i + 1) / num_gt
        r_recall = l_recall if last else (i + 2) / num_gt
        if (r_recall - current_recall) < (current_recall - l_recall) and not last:
            continue
        thresholds.append(score)
        current_recall += 1 / (num_sample_pts - 1.0)
    return thresholds


def kitti_ap(
    coco_gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], recall_points: int = 40
) -> dict[str, float]:
    """KITTI 2D AP of ``detections`` against the COCO ground truth the workflow writes.

    Args:
        coco_gt: COCO dict with ``images``, ``categories`` (names Car / Pedestrian / Cyclist)
            and ``annotations`` carrying a ``kitti`` record (type, truncated, occluded, height).
        detections: COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        recall_points: 40 for AP|R40, 11 for AP|R11.

    Returns:
        ``kitti_AP_{class}_{difficulty}`` in [0, 1] (NaN without valid ground truth) and
        ``kitti_mAP_moderate``, the mean of the classes' moderate AP that are not NaN.
    """
    if recall_points not in RECALL_POINTS:
        raise KittiAPError(f"recall_points must be 40 or 11, got {recall_points!r}")
    images = read_inputs(coco_gt, detections)
    result: dict[str, float] = {}
    for cls in CLASSES:
        for difficulty, name in enumerate(DIFFICULTIES):
            precision = _class_precision(images, cls, difficulty)
            if precision is None:
                ap = math.nan
            elif recall_points == 40:
                ap = float(np.sum(precision[1:]) / 40)
            else:
                ap = float(np.sum(precision[0::4]) / 11)
            result[f"kitti_AP_{cls}_{name}"] = ap
    moderate = [result[f"kitti_AP_{cls}_moderate"] for cls in CLASSES]
    finite = [ap for ap in moderate if not math.isnan(ap)]
    result["kitti_mAP_moderate"] = sum(finite) / len(finite) if finite else math.nan
    return result


def _class_precision(images: list[KittiImage], cls: str, difficulty: int) -> np.ndarray | None:
    """The 41 monotone precision samples of one class and difficulty (None: no valid GT)."""
    min_overlap = MIN_OVERLAP[cls]
    prepared: list[PreparedImage] = []
    free_fp_scores: list[np.ndarray] = [np.zeros(0)]
    num_valid = 0
    for image in images:
        item, free_scores, n_valid = prepare_image(image, cls, difficulty, min_overlap)
        num_valid += n_valid
        free_fp_scores.append(free_scores)
        if item is not None:
            prepared.append(item)
    if num_valid == 0:
        return None

    tp_scores: list[float] = []
    for item in prepared:
        tp_scores.extend(threshold_pass(item))
    thresholds = np.asarray(get_thresholds(tp_scores, num_valid)[:N_SAMPLE_PTS], dtype=np.float64)

    # Detections that can never be matched are FPs at every threshold they pass.
    free = np.sort(np.concatenate(free_fp_scores))
    fp = free.size - np.searchsorted(free, thresholds, side="left")
    tp = np.zeros(len(thresholds), dtype=np.int64)
    for item in prepared:
        # The outcome depends only on which candidates pass the threshold, i.e. on how many.
        passing = item.ascending_scores.size - np.searchsorted(
            item.ascending_scores, thresholds, side="left"
        )
        cache: dict[int, tuple[int, int]] = {}
        for t, key in enumerate(passing.tolist()):
            if key not in cache:
                cache[key] = counting_pass(item, float(thresholds[t]))
            tp[t] += cache[key][0]
            fp[t] += cache[key][1]

    precision = np.zeros(N_SAMPLE_PTS, dtype=np.float64)
    denom = tp + fp
    precision[: len(thresholds)] = np.divide(
        tp, denom, out=np.zeros(len(thresholds)), where=denom > 0
    )
    return np.maximum.accumulate(precision[::-1])[::-1]


def prepare_image(
    image: KittiImage, cls: str, difficulty: int, min_overlap: float
) -> tuple[PreparedImage | None, np.ndarray, int]:
    """``clean_data`` for one image: (matchable part or None, free FP scores, valid GT count)."""
    ign_gt: list[int] = []
    keep_gt: list[int] = []
    for i, gt_type in enumerate(image.gt_types):
        if gt_type == cls:
            hard_to_see = (
                image.gt_occluded[i] > MAX_OCCLUSION[difficulty]
                or image.gt_truncated[i] > MAX_TRUNCATION[difficulty]
                or image.gt_height[i] <= MIN_HEIGHT[difficulty]
            )
            ign_gt.append(_IGNORED if hard_to_see else _VALID)
        elif NEIGHBOUR.get(cls) == gt_type:
            ign_gt.append(_IGNORED)
        else:
            continue
        keep_gt.append(i)
    n_valid = ign_gt.count(_VALID)

    small = image.dt_height < MIN_HEIGHT[difficulty]
    considered = small | (image.dt_classes == cls)
    scores = image.dt_scores[considered]
    valid_det = ~small[considered]
    on_dc = image.dc_max[considered] > min_overlap
    above = image.iou[np.ix_(considered, keep_gt)] > min_overlap
    candidate = above.any(axis=1)

    free_scores = scores[~candidate & valid_det & ~on_dc]
    if not candidate.any():
        # Nothing can match: no TP at any threshold, and FNs never enter the precision.
        return None, free_scores, n_valid
    ov = image.iou[np.ix_(considered, keep_gt)][candidate]
    above = above[candidate]
    gt_candidates = [
        [(int(j), float(ov[j, i])) for j in np.flatnonzero(above[:, i])]
        for i in range(len(keep_gt))
    ]
    cand_scores = scores[candidate]
    item = PreparedImage(
        ign_gt=ign_gt,
        gt_candidates=gt_candidates,
        scores=cand_scores.tolist(),
        ign_det=np.where(valid_det[candidate], _VALID, _IGNORED).tolist(),
        countable=(valid_det & ~on_dc)[candidate].tolist(),
        ascending_scores=np.sort(cand_scores),
    )
    return item, free_scores, n_valid


def threshold_pass(item: PreparedImage) -> list[float]:
    """``compute_statistics_jit`` with ``compute_fp=False``: this image's TP scores."""
    assigned = [False] * len(item.scores)
    tp_scores: list[float] = []
    for ign, candidates in zip(item.ign_gt, item.gt_candidates, strict=True):
        best, best_score = -1, -math.inf
        for j, _ in candidates:
            score = item.scores[j]
            # Strict ">" keeps the first of equal scores, as the port does.
            if not assigned[j] and score >= 0.0 and score > best_score:
                best, best_score = j, score
        if best < 0:
            continue
        assigned[best] = True
        if ign == _VALID and item.ign_det[best] == _VALID:
            tp_scores.append(best_score)
    return tp_scores


def counting_pass(item: PreparedImage, thresh: float) -> tuple[int, int]:
    """``compute_statistics_jit`` with ``compute_fp=True`` at ``thresh``: the candidates' (TP, FP).

    FNs are not needed: recall never enters the AP.
    """
    scores, ign_det = item.scores, item.ign_det
    assigned = [False] * len(scores)
    tp = 0
    for ign, candidates in zip(item.ign_gt, item.gt_candidates, strict=True):
        best, best_overlap, first_ignored = -1, -math.inf, -1
        for j, overlap in candidates:
            if assigned[j] or scores[j] < thresh:
                continue
            if ign_det[j] == _VALID:
                if overlap > best_overlap:
                    best, best_overlap = j, overlap
            elif first_ignored < 0:
                first_ignored = j
        # A valid detection, when there is one, wins over an ignored one.
        pick = best if best >= 0 else first_ignored
        if pick < 0:
            continue
        assigned[pick] = True
        if ign == _VALID and ign_det[pick] == _VALID:
            tp += 1
    fp = sum(
        1
        for j, score in enumerate(scores)
        if item.countable[j] and not assigned[j] and score >= thresh
    )
    return tp, fp


def _xyxy(bbox: Any, where: str) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` as ``(x1, y1, x2, y2)`` floats."""
    try:
        x, y, w, h = map(float, bbox)
    except (TypeError, ValueError):
        raise KittiAPError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
    # A sum is finite only when every term is (inf - inf is nan).
    if not math.isfinite(x + y + w + h):
        raise KittiAPError(f"{where}: bbox must be finite, got {bbox!r}")
    return x, y, x + w, y + h


def read_inputs(
    coco_gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]
) -> list[KittiImage]:
    """Per-image ground truth and detections, in input order, validated."""
    for key in ("images", "categories", "annotations"):
        if key not in coco_gt:
            raise KittiAPError(f"ground truth has no {key!r} list")
    category_names = {int(c["id"]): str(c["name"]) for c in coco_gt["categories"]}
    image_ids = [int(image["id"]) for image in coco_gt["images"]]
    if len(set(image_ids)) != len(image_ids):
        raise KittiAPError("ground truth lists an image id more than once")
    gt: dict[int, list[tuple[tuple[float, ...], str, float, float, float]]] = {
        i: [] for i in image_ids
    }
    dont_care: dict[int, dict[tuple[float, ...], None]] = {i: {} for i in image_ids}
    for n, ann in enumerate(coco_gt["annotations"]):
        where = f"annotation {n}"
        image_id = int(ann["image_id"])
        if image_id not in gt:
            raise KittiAPError(f"{where}: unknown image_id {image_id}")
        kitti = ann.get("kitti")
        if not isinstance(kitti, Mapping) or "type" not in kitti:
            raise KittiAPError(f"{where}: no 'kitti' record with the KITTI type")
        box = _xyxy(ann["bbox"], where)
        if kitti["type"] == DONT_CARE:
            # The workflow writes each DontCare once per category; an ordered set keeps one.
            dont_care[image_id][box] = None
            continue
        try:
            record = (float(kitti["truncated"]), float(kitti["occluded"]), float(kitti["height"]))
        except (KeyError, TypeError, ValueError):
            raise KittiAPError(
                f"{where}: kitti record needs numeric truncated, occluded and height"
            ) from None
        gt[image_id].append((box, str(kitti["type"]), *record))

    dets: dict[int, list[tuple[tuple[float, ...], str, float]]] = {i: [] for i in image_ids}
    for n, det in enumerate(detections):
        where = f"detection {n}"
        try:
            image_id, category_id = int(det["image_id"]), int(det["category_id"])
            score = float(det["score"])
        except (KeyError, TypeError, ValueError):
            raise KittiAPError(
                f"{where}: needs integer image_id and category_id and a score"
            ) from None
        if image_id not in dets:
            raise KittiAPError(f"{where}: unknown image_id {image_id}")
        if category_id not in category_names:
            raise KittiAPError(f"{where}: unknown category_id {category_id}")
        if not math.isfinite(score):
            raise KittiAPError(f"{where}: score must be finite, got {score!r}")
        dets[image_id].append((_xyxy(det["bbox"], where), category_names[category_id], score))

    images = []
    for i in image_ids:
        gt_boxes = np.asarray([row[0] for row in gt[i]], dtype=np.float64).reshape(-1, 4)
        dt_boxes = np.asarray([row[0] for row in dets[i]], dtype=np.float64).reshape(-1, 4)
        dc_boxes = np.asarray(list(dont_care[i]), dtype=np.float64).reshape(-1, 4)
        dc_overlap = box_overlap(dt_boxes, dc_boxes, criterion=0)
        images.append(
            KittiImage(
                gt_types=[row[1] for row in gt[i]],
                gt_truncated=np.asarray([row[2] for row in gt[i]], dtype=np.float64),
                gt_occluded=np.asarray([row[3] for row in gt[i]], dtype=np.float64),
                gt_height=np.asarray([row[4] for row in gt[i]], dtype=np.float64),
                dt_classes=np.asarray([row[1] for row in dets[i]], dtype=object),
                dt_height=np.abs(dt_boxes[:, 3] - dt_boxes[:, 1]),
                dt_scores=np.asarray([row[2] for row in dets[i]], dtype=np.float64),
                iou=box_overlap(dt_boxes, gt_boxes),
                dc_max=dc_overlap.max(axis=1) if dc_boxes.size else np.zeros(len(dt_boxes)),
            )
        )
    return images
