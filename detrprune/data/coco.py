"""KITTI 2D labels to COCO detection JSON, with a seeded train/val split.

Reads ``training/label_2/*.txt`` (strictly, with :mod:`detrprune.data.kitti`) and decodes the
matching ``training/image_2/*.png`` in full (a truncated or corrupt image is an error here, not
in training), and writes one COCO file per split. Images without a label file and other files
in those folders are left out, counted and warned about. Every object of the
label files ends up in exactly one of these buckets, all counted in the returned stats:

- an annotation (``iscrowd: 0``) when its type is one of ``classes``;
- an ignore region (``iscrowd: 1``), following the KITTI devkit, which neither rewards nor
  penalises detections there:

  ============== ==========================================================
  KITTI type     COCO ignore annotation(s)
  ============== ==========================================================
  Van            one in Car (a car detector may fire on vans)
  Person_sitting one in Pedestrian
  DontCare       one in EACH category (DontCare regions are class-agnostic,
                 while COCO's crowd regions only apply to their category)
  ============== ==========================================================

  (Van and Person_sitting only when their target class is among ``classes``);
- unused: any other type (Truck, Tram, Misc, ...), counted per type;
- degenerate: a box narrower or lower than 1 px once clipped to the image, counted.

Boxes are clipped to the image and written as COCO ``[x, y, w, h]`` floats. Each annotation also
carries a ``"kitti"`` record with the original ``type``, ``truncated``, ``occluded`` and box
``height`` (before clipping, as the devkit computes it), which KITTI-style AP needs for its
difficulty levels.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detrprune.constants import CLASSES
from detrprune.data.kitti import KITTI_TYPES, KittiObject, parse_label_file
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)

IMAGE_DIR = Path("training/image_2")
LABEL_DIR = Path("training/label_2")
DONT_CARE = "DontCare"
IGNORE_AS: dict[str, str] = {"Van": "Car", "Person_sitting": "Pedestrian"}
SPLITS = ("train", "val")
_SHOWN = 5  # ids or names a log line or an error message lists
_DECIMALS = 6  # removes float noise from x2 - x1 without touching any real precision


class ConversionError(ValueError):
    """KITTI data that cannot be converted, or invalid conversion arguments."""


def split_ids(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split frame ids into train and val with a seeded random permutation.

    The ids are sorted first, so the split does not depend on their input order. ``round(n *
    val_fraction)`` ids (Python's rounding) go to val, but at least 1 and at most ``n - 1`` when
    ``n >= 2``, so that neither split is empty; the rest go to train.

    Returns:
        ``(train_ids, val_ids)``, each sorted.

    Raises:
        ConversionError: When ``val_fraction`` is not in (0, 1) or an id is repeated.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConversionError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    ordered = sorted(ids)
    repeated = sorted(i for i, count in Counter(ordered).items() if count > 1)
    if repeated:
        raise ConversionError(f"frame ids appear more than once: {', '.join(repeated[:5])}")
    n = len(ordered)
    n_val = round(n * val_fraction)
    if n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    permutation = np.random.default_rng(seed).permutation(n)
    val_index = {int(i) for i in permutation[:n_val]}
    train = [fid for i, fid in enumerate(ordered) if i not in val_index]
    val = [fid for i, fid in enumerate(ordered) if i in val_index]
    return train, val


STANDARD_SPLIT_LISTS = (
    Path(__file__).resolve().parent / "splits" / "kitti_train.txt",
    Path(__file__).resolve().parent / "splits" / "kitti_val.txt",
)
SPLIT_METHODS = ("random", "standard")


def read_split_list(path: Path) -> list[str]:
    """Frame ids of a split list file: one six-digit id per line (blank lines skipped)."""
    ids = []
    with open(path) as handle:
        for lineno, line in enumerate(handle, 1):
            fid = line.strip()
            if not fid:
                continue
            if not (fid.isdigit() and len(fid) == 6):
                raise ConversionError(f"{path}:{lineno}: {fid!r} is not a six-digit frame id")
            ids.append(fid)
    return ids


def standard_split(
    ids: Sequence[str], lists: tuple[Path, Path] = STANDARD_SPLIT_LISTS
) -> tuple[list[str], list[str], dict[str, int]]:
    """Split frame ids by fixed train/val id lists (by default the standard 3712/3769 split).

    A listed id without a frame is an error when ``ids`` is the full dataset (at least as many
    frames as the lists name) and tolerated, counted and logged, for a subset. Frames named by
    neither list are counted and logged, and left out of both splits.

    Returns:
        ``(train_ids, val_ids, stats)`` with stats ``missing_ids`` and ``unlisted_frames``.
    """
    train_list, val_list = (read_split_list(path) for path in lists)
    both = sorted(set(train_list) & set(val_list))
    if both:
        raise ConversionError(f"{lists[1]}: ids also in {lists[0]}: {', '.join(both[:5])}")
    present = set(ids)
    listed = set(train_list) | set(val_list)
    missing = sorted(listed - present)
    unlisted = sorted(present - listed)
    if missing and len(present) >= len(listed):
        raise ConversionError(
            f"{lists[0]}, {lists[1]}: {len(missing)} split ids have no frame although the "
            f"dataset is complete ({len(present)} frames), first: {', '.join(missing[:5])}"
        )
    if missing:
        log.info(
            "subset of KITTI: %d of %d split ids have no frame here (tolerated)",
            len(missing),
            len(listed),
        )
    if unlisted:
        log.warning(
            "%d frames are in neither split list and are left out: %s",
            len(unlisted),
            ", ".join(unlisted[:10]),
        )
    train = sorted(fid for fid in train_list if fid in present)
    val = sorted(fid for fid in val_list if fid in present)
    return train, val, {"missing_ids": len(missing), "unlisted_frames": len(unlisted)}


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes:
        raise ConversionError("classes is empty")
    if len(set(classes)) != len(classes):
        raise ConversionError(f"classes has duplicates: {classes}")
    for name in classes:
        if name not in KITTI_TYPES or name == DONT_CARE:
            raise ConversionError(f"class {name!r} is not a KITTI object type")
    return classes


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def _inventory(label_dir: Path, image_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """The frame ids (label files), the ids of images without a label file, and the other
    entries of both folders (neither ``*.txt`` labels nor ``*.png`` images), as paths."""
    if not label_dir.is_dir():
        raise ConversionError(f"{label_dir}: no such folder")
    ids, other = [], []
    for path in sorted(label_dir.iterdir()):
        if path.suffix == ".txt":
            ids.append(path.stem)
        else:
            other.append(str(path))
    if not ids:
        raise ConversionError(f"{label_dir}: no label files")
    images = []
    if image_dir.is_dir():
        for path in sorted(image_dir.iterdir()):
            if path.suffix == ".png":
                images.append(path.stem)
            else:
                other.append(str(path))
    unlabelled = sorted(set(images) - set(ids))
    if unlabelled:
        log.warning(
            "%d images in %s have no label file and are left out (first ids: %s)",
            len(unlabelled),
            image_dir,
            _shown(unlabelled),
        )
    if other:
        log.warning(
            "%d files are neither .txt labels nor .png images and are ignored: %s",
            len(other),
            _shown(sorted(other)),
        )
    return _checked_ids(label_dir, ids), unlabelled, other


def _checked_ids(label_dir: Path, ids: list[str]) -> list[str]:
    numbers: dict[int, str] = {}
    for fid in ids:
        if not fid.isdigit():
            raise ConversionError(f"{label_dir / (fid + '.txt')}: frame id {fid!r} is not a number")
        if int(fid) in numbers:
            raise ConversionError(
                f"{label_dir / (fid + '.txt')}: frame id {fid!r} has the same number as "
                f"{numbers[int(fid)]!r}"
            )
        numbers[int(fid)] = fid
    return ids


def _decode_image(image_path: Path, label_path: Path) -> tuple[int, int] | str:
    """The size of the image once fully decoded, or why it cannot be decoded (one line).

    The header alone would pass a truncated or corrupt file, which would then fail training or
    evaluation. The image is decoded once, by OpenCV, the decoder mmcv's loading pipeline uses:
    it refuses a file cut anywhere, even after the last pixel data (which Pillow accepts).
    """
    if not image_path.is_file():
        raise ConversionError(f"{label_path}: no image {image_path}")
    pixels = cv2.imdecode(np.fromfile(image_path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        return "OpenCV could not decode it: truncated or corrupt"
    height, width = pixels.shape[:2]
    return width, height


def _round(value: float) -> float:
    return round(float(value), _DECIMALS)


class _Converter:
    """Turns the objects of one frame into COCO annotation dicts, counting every outcome."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.category_ids = {name: index + 1 for index, name in enumerate(classes)}
        self.ignore_regions: Counter[str] = Counter(
            {t: 0 for t, target in IGNORE_AS.items() if target in self.category_ids}
        )
        self.ignore_regions[DONT_CARE] = 0
        self.unused: Counter[str] = Counter()
        self.degenerate = 0
        self.clipped = 0
        self.objects = 0

    def targets(self, obj_type: str) -> list[tuple[int, int]]:
        """``(category_id, iscrowd)`` pairs an object of this type becomes (empty: unused)."""
        if obj_type in self.category_ids:
            return [(self.category_ids[obj_type], 0)]
        if obj_type == DONT_CARE:
            return [(cid, 1) for cid in self.category_ids.values()]
        target = IGNORE_AS.get(obj_type)
        if target in self.category_ids:
            return [(self.category_ids[target], 1)]
        return []

    def convert(self, obj: KittiObject, width: int, height: int) -> list[dict[str, Any]]:
        self.objects += 1
        targets = self.targets(obj.type)
        if not targets:
            self.unused[obj.type] += 1
            return []
        x1, y1, x2, y2 = obj.bbox
        cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        w, h = _round(cx2 - cx1), _round(cy2 - cy1)
        if w < 1 or h < 1:
            self.degenerate += 1
            return []
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.clipped += 1
        if targets[0][1]:
            self.ignore_regions[obj.type] += 1
        kitti = {
            "type": obj.type,
            "truncated": obj.truncated,
            "occluded": obj.occluded,
            "height": _round(obj.height),
        }
        return [
            {
                "category_id": category_id,
                "bbox": [_round(cx1), _round(cy1), w, h],
                "area": _round(w * h),
                "iscrowd": iscrowd,
                "kitti": kitti,
            }
            for category_id, iscrowd in targets
        ]


def _write_json_files(documents: dict[Path, dict[str, Any]]) -> None:
    """Write every document to a temporary file first, then move them all into place."""
    with atomic_output(*documents) as temporaries:
        for tmp, document in zip(temporaries, documents.values(), strict=True):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=None)
                f.write("\n")


def kitti_to_coco(
    kitti_root: Path,
    train_json: Path,
    val_json: Path,
    val_fraction: float,
    seed: int,
    classes: Sequence[str] = CLASSES,
    split: str = "random",
    split_lists: tuple[Path, Path] = STANDARD_SPLIT_LISTS,
) -> dict[str, Any]:
    """Convert the KITTI training frames to COCO JSON, split into train and val.

    Args:
        kitti_root: Folder holding ``training/image_2`` and ``training/label_2``.
        train_json: Output COCO file of the train split.
        val_json: Output COCO file of the val split.
        val_fraction: Share of frames going to val with ``split="random"`` (see
            :func:`split_ids`).
        seed: Seed of the random split.
        classes: Category names, given ids 1.. in this order.
        split: ``random`` (seeded fraction) or ``standard`` (fixed id lists, see
            :func:`standard_split`).
        split_lists: The (train, val) id lists of the standard split.

    Returns:
        Stats, also logged: ``images`` {split: n}; ``annotations`` and ``ignore_annotations``
        {split: {class: n}} (``iscrowd`` 0 and 1); ``ignore_regions`` {source type: n} (label
        objects, a DontCare counting once although it gives one annotation per category);
        ``unused_types`` {type: n}; ``degenerate_boxes``; ``clipped_boxes``; ``objects`` (all
        label objects: annotated + ignore regions + unused + degenerate); ``split`` {method,
        missing_ids, unlisted_frames}; ``unlabelled_images`` (left out, warned) and
        ``other_files`` (neither ``.txt`` labels nor ``.png`` images, ignored, warned).

    Raises:
        ConversionError: Missing folders, labels or images, non-numeric or clashing frame ids,
            images that do not decode (naming the first, counting the others), invalid
            arguments. Nothing is written then.
        KittiLabelError: A malformed label line (naming ``path:lineno``).
    """
    classes = _check_classes(classes)
    if Path(train_json).resolve() == Path(val_json).resolve():
        raise ConversionError(f"{train_json}: train and val outputs are the same file")
    kitti_root = Path(kitti_root)
    label_dir, image_dir = kitti_root / LABEL_DIR, kitti_root / IMAGE_DIR
    ids, unlabelled, other_files = _inventory(label_dir, image_dir)
    if split == "random":
        split_stats = {"missing_ids": 0, "unlisted_frames": 0}
        chosen = split_ids(ids, val_fraction, seed)
    elif split == "standard":
        *chosen, split_stats = standard_split(ids, split_lists)
    else:
        raise ConversionError(f"kitti.split: unknown split {split!r}, expected {SPLIT_METHODS}")
    split_method = split
    split = dict(zip(SPLITS, chosen, strict=True))
    # Frames in neither standard list are neither converted nor silently lost: counted above.
    ids = sorted(split["train"] + split["val"])
    converter = _Converter(classes)
    categories = [{"id": cid, "name": name} for name, cid in converter.category_ids.items()]

    frames: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    undecodable: list[tuple[Path, str]] = []
    for fid in ids:
        label_path = label_dir / f"{fid}.txt"
        image_path = image_dir / f"{fid}.png"
        size = _decode_image(image_path, label_path)
        if isinstance(size, str):
            undecodable.append((image_path, size))
            continue
        width, height = size
        image = {"id": int(fid), "file_name": f"{fid}.png", "width": width, "height": height}
        annotations = []
        for obj in parse_label_file(label_path):
            annotations.extend(converter.convert(obj, width, height))
        frames[fid] = (image, annotations)
    if undecodable:
        (first, reason), *others = undecodable
        more = f"; {len(others)} more: {_shown([p.name for p, _ in others])}" if others else ""
        raise ConversionError(f"{first}: cannot decode the image ({reason}){more}")

    stats: dict[str, Any] = {
        "images": {},
        "annotations": {},
        "ignore_annotations": {},
    }
    documents: dict[Path, dict[str, Any]] = {}
    for name, path in zip(SPLITS, (Path(train_json), Path(val_json)), strict=True):
        images, annotations = [], []
        for fid in split[name]:
            image, frame_annotations = frames[fid]
            images.append(image)
            for ann in frame_annotations:
                annotations.append({"id": len(annotations) + 1, "image_id": image["id"], **ann})
        per_class = {c: 0 for c in classes}
        ignored = {c: 0 for c in classes}
        for ann in annotations:
            counter = ignored if ann["iscrowd"] else per_class
            counter[classes[ann["category_id"] - 1]] += 1
        stats["images"][name] = len(images)
        stats["annotations"][name] = per_class
        stats["ignore_annotations"][name] = ignored
        documents[path] = {
            "info": {
                "description": f"KITTI 2D object training frames, {name} split",
                "split": name,
                "split_method": split_method,
                "val_fraction": val_fraction if split_method == "random" else None,
                "seed": seed if split_method == "random" else None,
            },
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
    stats["ignore_regions"] = dict(sorted(converter.ignore_regions.items()))
    stats["unused_types"] = dict(sorted(converter.unused.items()))
    stats["degenerate_boxes"] = converter.degenerate
    stats["clipped_boxes"] = converter.clipped
    stats["objects"] = converter.objects
    stats["split"] = {"method": split_method, **split_stats}
    stats["unlabelled_images"] = len(unlabelled)
    stats["other_files"] = len(other_files)
    _write_json_files(documents)

    log.info(
        "converted %d KITTI frames (%d objects) from %s: images %s, annotations %s, "
        "ignore annotations %s, ignore regions by source type %s, unused types %s, "
        "%d degenerate boxes skipped, %d boxes clipped to the image, split %s, "
        "%d images without a label and %d other files left out",
        len(ids),
        converter.objects,
        kitti_root,
        stats["images"],
        stats["annotations"],
        stats["ignore_annotations"],
        stats["ignore_regions"],
        stats["unused_types"] or "none",
        converter.degenerate,
        converter.clipped,
        stats["split"],
        len(unlabelled),
        len(other_files),
    )
    return stats
