"""A synthetic population of KITTI-style frames and detectors whose metrics are known exactly.

Frames of fixed ground truth, written as the KITTI converter writes them, and the fixed
detections of detectors of fixed behaviour (:class:`DetectorModel`) plus a degraded copy of one
of them (:class:`Degradation`, as a pruned model's detections might be), all from seeded
streams: the same arguments give the same population. :func:`exact_accuracy` computes a
dataset's mAP, mAP50 and KITTI moderate mAP from scratch (pycocotools,
:func:`~detrprune.evaluate.kitti_ap.kitti_ap`), which on all images is the population value the
coverage simulation of :mod:`detrprune.evaluate.coverage` checks its intervals against.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detrprune.constants import CLASSES
from detrprune.evaluate.bootstrap import coco_evaluated
from detrprune.evaluate.kitti_ap import (
    DIFFICULTIES,
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    kitti_ap,
)

CATEGORIES: list[dict[str, Any]] = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
CATEGORY_ID: dict[str, int] = {c["name"]: c["id"] for c in CATEGORIES}
# KITTI types that count as ignored ground truth of a class (the converter writes iscrowd 1).
IGNORE_AS: dict[str, str] = {"Van": "Car", "Person_sitting": "Pedestrian"}
# How often each type occurs among the objects of a frame (DontCare aside).
OBJECT_TYPES: tuple[str, ...] = (
    ("Car",) * 4
    + ("Pedestrian",) * 3
    + ("Cyclist",) * 2
    + (
        "Van",
        "Person_sitting",
    )
)
IMAGE_WIDTH, IMAGE_HEIGHT = 1242, 375
# Objects per frame are drawn from 0..MAX_OBJECTS (tests/test_bootstrap.py's random_case).
MAX_OBJECTS = 7
DETECTOR_NAMES: tuple[str, ...] = ("weak", "better")


@dataclass(frozen=True)
class DetectorModel:
    """A detector's fixed behaviour on the synthetic frames.

    Each object (not DontCare) is found with probability ``recall`` (less when occluded), with
    its box moved and rescaled by Gaussian noise of ``jitter`` times its size; the detection
    takes a random class with probability ``mislabel``, and a second, looser box (a duplicate)
    with probability ``duplicates``. ``false_positives`` background boxes per image (Poisson
    mean) come on top. Scores are Beta-distributed: ``score_found`` for found objects,
    ``score_false`` for duplicates and background boxes.
    """

    recall: float
    jitter: float
    mislabel: float
    duplicates: float
    false_positives: float
    score_found: tuple[float, float]
    score_false: tuple[float, float]


@dataclass(frozen=True)
class Degradation:
    """A copy of a detector's detections made worse: each dropped with probability ``drop``,
    its score multiplied by a uniform factor in ``score_factor``, its box moved by Gaussian
    noise of ``jitter`` times its size."""

    drop: float
    score_factor: tuple[float, float]
    jitter: float


DETECTORS: dict[str, DetectorModel] = {
    "weak": DetectorModel(
        recall=0.6,
        jitter=0.08,
        mislabel=0.15,
        duplicates=0.2,
        false_positives=2.5,
        score_found=(2.0, 2.0),
        score_false=(1.5, 2.5),
    ),
    "better": DetectorModel(
        recall=0.8,
        jitter=0.06,
        mislabel=0.05,
        duplicates=0.15,
        false_positives=1.5,
        score_found=(4.0, 1.5),
        score_false=(1.5, 3.0),
    ),
}
DEGRADATION = Degradation(drop=0.08, score_factor=(0.7, 1.0), jitter=0.02)


@dataclass
class Population:
    """Synthetic frames, sorted by image id, with their ground truth and each detector's
    detections, per image (``annotations[i]``, ``detections[name][i]`` belong to
    ``images[i]``)."""

    images: list[dict[str, Any]]
    annotations: list[list[dict[str, Any]]]
    detections: dict[str, list[list[dict[str, Any]]]]

    def valid_moderate(self) -> np.ndarray:
        """``(images, CLASSES)`` count of each class's valid ground truths at KITTI's moderate
        difficulty (kitti_ap's ``clean_data``)."""
        k = DIFFICULTIES.index("moderate")
        counts = np.zeros((len(self.images), len(CLASSES)), dtype=np.int64)
        for i, objects in enumerate(self.annotations):
            for ann in objects:
                kitti = ann["kitti"]
                if (
                    kitti["type"] in CLASSES
                    and kitti["occluded"] <= MAX_OCCLUSION[k]
                    and kitti["truncated"] <= MAX_TRUNCATION[k]
                    and kitti["height"] > MIN_HEIGHT[k]
                ):
                    counts[i, CLASSES.index(kitti["type"])] += 1
        return counts

    def dataset(
        self, detector: str, positions: Sequence[int] | np.ndarray | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The COCO ground truth and ``detector``'s detections of the images at ``positions``
        (all images when None), as the evaluate rule reads them."""
        chosen = range(len(self.images)) if positions is None else sorted(int(p) for p in positions)
        gt = {
            "images": [self.images[i] for i in chosen],
            "annotations": [a for i in chosen for a in self.annotations[i]],
            "categories": CATEGORIES,
        }
        return gt, [d for i in chosen for d in self.detections[detector][i]]


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    """The Generator of one independent stream of ``seed``."""
    return np.random.default_rng([seed, *stream])


def ground_truth(
    num_images: int, rng: np.random.Generator, max_objects: int = MAX_OBJECTS
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """``num_images`` frames (ids 1..n) with 0..``max_objects`` objects each, KITTI fields
    included, written as the converter writes them: Van and Person_sitting as ``iscrowd`` 1 of
    their class, DontCare once per category with ``iscrowd`` 1."""
    images = [
        {"id": i + 1, "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT} for i in range(num_images)
    ]
    annotations: list[list[dict[str, Any]]] = []
    next_id = 1
    for image in images:
        objects: list[dict[str, Any]] = []
        for _ in range(int(rng.integers(0, max_objects + 1))):
            dont_care = rng.random() < 0.05
            kitti_type = "DontCare" if dont_care else OBJECT_TYPES[rng.integers(len(OBJECT_TYPES))]
            w, h = float(rng.uniform(10, 140)), float(rng.uniform(15, 90))
            x, y = float(rng.uniform(0, 1100)), float(rng.uniform(0, IMAGE_HEIGHT - h))
            truncated = float(rng.choice([0.0, 0.0, 0.1, 0.2, 0.4, 0.6]))
            occluded = int(rng.choice([0, 0, 0, 1, 2, 3]))
            if dont_care:
                targets = [(c["id"], 1) for c in CATEGORIES]
                truncated, occluded = -1.0, -1
            elif kitti_type in IGNORE_AS:
                targets = [(CATEGORY_ID[IGNORE_AS[kitti_type]], 1)]
            else:
                targets = [(CATEGORY_ID[kitti_type], 0)]
            kitti = {"type": kitti_type, "truncated": truncated, "occluded": occluded, "height": h}
            for category_id, iscrowd in targets:
                objects.append(
                    {
                        "id": next_id,
                        "image_id": image["id"],
                        "category_id": category_id,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": iscrowd,
                        "kitti": dict(kitti),
                    }
                )
                next_id += 1
        annotations.append(objects)
    return images, annotations


def _detection(image_id: int, cls: str, bbox: Sequence[float], score: float) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "category_id": CATEGORY_ID[cls],
        "bbox": [float(v) for v in bbox],
        "score": float(score),
    }


def _moved(bbox: Sequence[float], jitter: float, rng: np.random.Generator) -> list[float]:
    x, y, w, h = bbox
    dx, dy, dw, dh = rng.normal(0.0, jitter, size=4)
    return [x + dx * w, y + dy * h, w * math.exp(dw), h * math.exp(dh)]


def detect(
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Sequence[Mapping[str, Any]]],
    model: DetectorModel,
    rng: np.random.Generator,
) -> list[list[dict[str, Any]]]:
    """The detections of a detector behaving as ``model``, per image (see DetectorModel)."""
    out = []
    for image, objects in zip(images, annotations, strict=True):
        found: list[dict[str, Any]] = []
        seen: set[tuple[float, ...]] = set()
        for ann in objects:
            kitti_type = ann["kitti"]["type"]
            box = tuple(ann["bbox"])
            if kitti_type == "DontCare" or box in seen:
                continue
            seen.add(box)
            occluded = max(0, min(int(ann["kitti"]["occluded"]), 2))
            if rng.random() >= model.recall * (1.0 - 0.15 * occluded):
                continue
            cls = IGNORE_AS.get(kitti_type, kitti_type)
            if rng.random() < model.mislabel:
                cls = CLASSES[int(rng.integers(len(CLASSES)))]
            score = rng.beta(*model.score_found)
            found.append(_detection(image["id"], cls, _moved(box, model.jitter, rng), score))
            if rng.random() < model.duplicates:
                score = rng.beta(*model.score_false)
                loose = _moved(box, 3.0 * model.jitter, rng)
                found.append(_detection(image["id"], cls, loose, score))
        for _ in range(int(rng.poisson(model.false_positives))):
            w, h = float(rng.uniform(10, 130)), float(rng.uniform(12, 90))
            box = (float(rng.uniform(0, 1100)), float(rng.uniform(0, IMAGE_HEIGHT - h)), w, h)
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            found.append(_detection(image["id"], cls, box, rng.beta(*model.score_false)))
        out.append(found)
    return out


def degrade(
    detections: Sequence[Sequence[Mapping[str, Any]]],
    degradation: Degradation,
    rng: np.random.Generator,
) -> list[list[dict[str, Any]]]:
    """A worse copy of per-image ``detections`` (see Degradation)."""
    out = []
    for image_detections in detections:
        kept = []
        for det in image_detections:
            if rng.random() < degradation.drop:
                continue
            factor = rng.uniform(*degradation.score_factor)
            box = _moved(det["bbox"], degradation.jitter, rng)
            kept.append({**det, "bbox": box, "score": float(det["score"] * factor)})
        out.append(kept)
    return out


def make_population(num_images: int, seed: int, max_objects: int = MAX_OBJECTS) -> Population:
    """``num_images`` frames of 0..``max_objects`` objects with the detections of every
    DETECTORS model and the DEGRADATION of the better one (``"degraded"``), each from its own
    stream of ``seed``."""
    if num_images < 1 or max_objects < 0:
        raise ValueError(f"need >= 1 image and >= 0 objects, got {num_images}, {max_objects}")
    images, annotations = ground_truth(num_images, stream_rng(seed, 0), max_objects)
    detections = {
        name: detect(images, annotations, DETECTORS[name], stream_rng(seed, 1, k))
        for k, name in enumerate(DETECTOR_NAMES)
    }
    detections["degraded"] = degrade(detections["better"], DEGRADATION, stream_rng(seed, 2))
    return Population(images, annotations, detections)


def exact_accuracy(
    coco_gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """mAP and mAP50 (pycocotools evaluate + accumulate + summarize) and kitti_mAP_moderate
    (:func:`~detrprune.evaluate.kitti_ap.kitti_ap`) computed from scratch."""
    evaluator = coco_evaluated(coco_gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
        evaluator.summarize()
    return {
        "mAP": float(evaluator.stats[0]),
        "mAP50": float(evaluator.stats[1]),
        "kitti_mAP_moderate": float(kitti_ap(coco_gt, detections)["kitti_mAP_moderate"]),
    }
