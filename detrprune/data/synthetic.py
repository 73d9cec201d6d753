"""Seeded synthetic scenes written as KITTI 2D object archives.

:func:`synthesize_kitti` writes ``data_object_image_2.zip`` and ``data_object_label_2.zip`` with
the internal layout of the real benchmark archives (``training/image_2/000000.png``,
``training/label_2/000000.txt``, ...), so that everything downstream of the archives runs one
code path for real and synthetic data.

The scenes are meant to be learnable by a tiny Deformable DETR at ~512x160 input within a few
hundred iterations: a sky gradient over a grey road, and objects drawn with a perspective feel
(lower in the frame means nearer and bigger), each class with its own silhouette:

- Car: wide (w/h 1.6-2.6), saturated body, dark window band in the cabin, two black wheels;
- Pedestrian: tall and thin (w/h 0.3-0.45), skin-tone head, shirt with arms, legs;
- Cyclist: w/h 0.6-1.0, two outlined wheels, frame and a rider above them.

Each scene has 1-6 labelled objects (Car 50 %, Pedestrian 30 %, Cyclist 20 %) and, in about
30 % of the scenes each, a Van (a boxier car, ignored for Car by the evaluation), a Truck or Misc
object, and a DontCare region (a small blurred patch near the horizon). Placements overlapping
an earlier one (IoU > 0.3, or more than half of the smaller box) are redrawn a bounded number of
times, then given up and counted. Boxes are the exact extent of the drawn pixels, clipped to the
image for objects placed across the left or right border (their ``truncated`` field says by how
much); ``occluded`` comes from the share of the object hidden by objects drawn after it.

The output depends only on ``(num_scenes, seed, width, height)`` (and the zlib build): fixed
zip timestamps and permissions, fixed entry order, fixed PNG compression level.
"""

from __future__ import annotations

import io
import logging
import math
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from detrprune.constants import CLASSES
from detrprune.data import sprites
from detrprune.data.kitti import KittiObject, format_label_line
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)

IMAGES_ZIP = "data_object_image_2.zip"
LABELS_ZIP = "data_object_label_2.zip"
IMAGE_DIR = "training/image_2"
LABEL_DIR = "training/label_2"

_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_PNG_COMPRESS_LEVEL = 6
_LABELS_COMPRESS_LEVEL = 6

# Geometry below is given for KITTI's 375-row frame and scaled with the requested height.
_REF_HEIGHT = 375
_FOCAL = 721.54  # KITTI's P2 focal length, used for plausible 3D locations
_CLASS_P = (0.5, 0.3, 0.2)  # of CLASSES, in order
_EXTRA_P = 0.3
_MAX_TRIES = 30
_MAX_IOU = 0.3
_MAX_OVERLAP_OF_SMALLER = 0.5
_TRUNCATE_P = 0.1


class SynthesisError(ValueError):
    """Invalid arguments for the synthetic scene generator."""


@dataclass(frozen=True)
class _ClassSpec:
    """How one object type is sized and drawn (heights in px of a 375-row frame)."""

    aspect: tuple[float, float]  # box width / height
    box_height: tuple[float, float]  # far .. near
    dimensions: tuple[float, float, float]  # KITTI h, w, l in metres
    draw: sprites.Sprite


_SPECS: dict[str, _ClassSpec] = {
    # Labelled classes stay >= ~25 px tall at the tiny model's 160-row input.
    "Car": _ClassSpec((1.6, 2.6), (55, 160), (1.52, 1.63, 3.88), sprites.draw_car),
    "Pedestrian": _ClassSpec((0.3, 0.45), (65, 200), (1.76, 0.66, 0.84), sprites.draw_pedestrian),
    "Cyclist": _ClassSpec((0.6, 1.0), (60, 180), (1.74, 0.60, 1.76), sprites.draw_cyclist),
    "Van": _ClassSpec((0.9, 1.25), (45, 170), (2.21, 1.90, 5.08), sprites.draw_van),
    "Truck": _ClassSpec((1.3, 1.8), (50, 190), (3.25, 2.59, 10.1), sprites.draw_truck),
    "Misc": _ClassSpec((0.5, 1.0), (30, 80), (1.9, 1.5, 3.6), sprites.draw_misc),
    "DontCare": _ClassSpec((1.2, 2.5), (12, 30), (-1.0, -1.0, -1.0), sprites.draw_dontcare),
}


@dataclass
class _Placement:
    type: str
    x0: int
    y0: int
    w: int
    h: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x0 + self.w, self.y0 + self.h)


def _too_close(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return False
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iou = inter / (area_a + area_b - inter)
    # A small object behind a big one can have a low IoU and still be hidden entirely.
    return iou > _MAX_IOU or inter / min(area_a, area_b) > _MAX_OVERLAP_OF_SMALLER


def _propose(
    rng: np.random.Generator, obj_type: str, width: int, height: int, horizon: int
) -> _Placement:
    spec = _SPECS[obj_type]
    scale = height / _REF_HEIGHT
    if obj_type == "DontCare":
        t = rng.random()
        bottom = horizon + rng.uniform(5, 40) * scale
    else:
        t = rng.random()
        margin = 8 * scale
        bottom = horizon + margin + t * (height - horizon - margin)
    low, high = spec.box_height
    box_h = (low + (high - low) * t) * rng.uniform(0.9, 1.1) * scale
    box_h = min(box_h, bottom)
    h = max(4, round(box_h))
    w = max(4, min(width, round(h * rng.uniform(*spec.aspect))))
    y0 = min(height, round(bottom)) - h
    if obj_type != "DontCare" and rng.random() < _TRUNCATE_P:
        outside = round(rng.uniform(0.1, 0.4) * w)
        x0 = -outside if rng.random() < 0.5 else width - w + outside
    else:
        x0 = int(rng.integers(0, width - w + 1))
    return _Placement(obj_type, x0, y0, w, h)


def render_background(
    rng: np.random.Generator, width: int, height: int, horizon: int
) -> Image.Image:
    rows = np.arange(height, dtype=np.float32)[:, None]
    sky_top = np.array([70.0, 130.0, 205.0]) + rng.uniform(-20, 20, 3)
    sky_low = np.array([200.0, 220.0, 235.0]) + rng.uniform(-15, 15, 3)
    t = np.clip(rows / max(horizon - 1, 1), 0.0, 1.0)
    sky = sky_top * (1 - t) + sky_low * t
    grey = rng.uniform(85, 125)
    tint = rng.uniform(-6, 6, 3)
    depth = np.clip((rows - horizon) / max(height - horizon, 1), 0.0, 1.0)
    road = (grey * (0.85 + 0.2 * depth)) + tint
    base = np.where(rows < horizon, sky, road).astype(np.float32)
    arr = np.empty((height, width, 3), dtype=np.float32)
    arr[:] = base[:, None, :]
    # Coarse (4x4 block) noise keeps the road from being flat without bloating the PNGs.
    block = 4
    coarse = rng.normal(0.0, 4.0, (height // block + 1, width // block + 1)).astype(np.float32)
    noise = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
    arr[horizon:] += noise[horizon:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    vanish = width * rng.uniform(0.4, 0.6)
    lane = (225, 225, 215)
    for end in (-0.2, 0.5, 1.2):
        draw.line(
            [(vanish, horizon), (end * width, height - 1)], fill=lane, width=max(1, height // 120)
        )
    return img


def _occlusion_level(hidden: float) -> int:
    if hidden < 0.1:
        return 0
    if hidden < 0.5:
        return 1
    return 2


def _label(
    rng: np.random.Generator,
    p: _Placement,
    box: tuple[int, int, int, int],
    full: tuple[int, int, int, int],
    truncated: float,
    occluded: int,
    width: int,
    height: int,
) -> KittiObject:
    if p.type == "DontCare":
        return KittiObject(
            "DontCare",
            -1.0,
            -1,
            -10.0,
            tuple(map(float, box)),
            (-1.0, -1.0, -1.0),
            (-1000.0, -1000.0, -1000.0),
            -10.0,
        )
    dims = tuple(float(v) for v in np.asarray(_SPECS[p.type].dimensions) * rng.normal(1, 0.05, 3))
    z = _FOCAL * dims[0] / max(full[3] - full[1], 1)
    x = ((full[0] + full[2]) / 2 - width / 2) * z / _FOCAL
    y = (full[3] - 0.46 * height) * z / _FOCAL
    rotation_y = rng.uniform(-math.pi, math.pi)
    alpha = math.remainder(rotation_y - math.atan2(x, z), math.tau)
    return KittiObject(
        type=p.type,
        truncated=round(truncated, 2),
        occluded=occluded,
        alpha=alpha,
        bbox=tuple(float(v) for v in box),
        dimensions=dims,
        location=(x, y, z),
        rotation_y=rotation_y,
    )


def render_scene(
    rng: np.random.Generator, width: int = 1242, height: int = 375
) -> tuple[Image.Image, list[KittiObject], Counter[str]]:
    """Draw one synthetic scene.

    Args:
        rng: Source of randomness (the scene depends only on its state).
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(image, objects, given_up)``: the RGB image, its label objects (DontCare last, the
        others in drawing order, far to near) and per type the placements given up after
        ``_MAX_TRIES`` overlapping attempts.
    """
    scale = height / _REF_HEIGHT
    horizon = round(rng.uniform(150, 200) * scale)
    image = render_background(rng, width, height, horizon)
    wanted = [str(t) for t in rng.choice(CLASSES, size=int(rng.integers(1, 7)), p=_CLASS_P)]
    if rng.random() < _EXTRA_P:
        wanted.append("Van")
    if rng.random() < _EXTRA_P:
        wanted.append("Truck" if rng.random() < 0.5 else "Misc")
    if rng.random() < _EXTRA_P:
        wanted.append("DontCare")

    placed: list[_Placement] = []
    given_up: Counter[str] = Counter()
    for obj_type in wanted:
        for _ in range(_MAX_TRIES):
            cand = _propose(rng, obj_type, width, height, horizon)
            if not any(_too_close(cand.box, other.box) for other in placed):
                placed.append(cand)
                break
        else:
            given_up[obj_type] += 1

    # Far (higher bottom edge) first, so that nearer objects are drawn in front.
    order = sorted(placed, key=lambda p: p.y0 + p.h)
    owner = np.full((height, width), -1, dtype=np.int16)
    drawn = []
    for index, p in enumerate(order):
        sprite = _SPECS[p.type].draw(rng, p.w, p.h)
        mask = np.asarray(sprite.getchannel("A")) > 0
        ys, xs = np.nonzero(mask)
        full = (p.x0 + xs.min(), p.y0 + ys.min(), p.x0 + xs.max() + 1, p.y0 + ys.max() + 1)
        cx0, cy0 = max(p.x0, 0), max(p.y0, 0)
        cx1, cy1 = min(p.x0 + p.w, width), min(p.y0 + p.h, height)
        inside = mask[cy0 - p.y0 : cy1 - p.y0, cx0 - p.x0 : cx1 - p.x0]
        owner[cy0:cy1, cx0:cx1][inside] = index
        image.paste(sprite, (p.x0, p.y0), sprite)
        drawn.append((p, mask, full, (cx0, cy0, cx1, cy1), inside))

    objects: list[KittiObject] = []
    dont_care: list[KittiObject] = []
    for index, (p, mask, full, (cx0, cy0, cx1, cy1), inside) in enumerate(drawn):
        ys, xs = np.nonzero(inside)
        if len(ys) == 0:
            # Cannot happen with the truncation limits above; counted rather than crashing.
            given_up[p.type] += 1
            continue
        box = (cx0 + xs.min(), cy0 + ys.min(), cx0 + xs.max() + 1, cy0 + ys.max() + 1)
        in_image = int(inside.sum())
        visible = int(np.count_nonzero(owner[cy0:cy1, cx0:cx1] == index))
        truncated = 1.0 - in_image / int(mask.sum())
        occluded = _occlusion_level(1.0 - visible / in_image)
        obj = _label(rng, p, box, full, truncated, occluded, width, height)
        (dont_care if p.type == "DontCare" else objects).append(obj)
    return image, objects + dont_care, given_up


def _zip_info(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
    info.compress_type = compress_type
    info.create_system = 3  # unix, so that external_attr means the same on every platform
    info.external_attr = 0o100644 << 16
    return info


def synthesize_kitti(
    out_dir: Path, num_scenes: int, seed: int, width: int = 1242, height: int = 375
) -> tuple[Path, Path]:
    """Write a seeded synthetic dataset as the two KITTI 2D object archives.

    Args:
        out_dir: Folder receiving ``data_object_image_2.zip`` and ``data_object_label_2.zip``
            (created if missing; existing archives are replaced).
        num_scenes: Number of frames (``000000`` .. ``num_scenes - 1``).
        seed: Seed of the generator; the same arguments give byte-identical archives.
        width: Image width in pixels (KITTI: 1242).
        height: Image height in pixels (KITTI: 375).

    Returns:
        ``(images_zip, labels_zip)``.

    Raises:
        SynthesisError: For a non-positive scene count or an image too small to draw in.
    """
    if num_scenes < 1:
        raise SynthesisError(f"num_scenes must be >= 1, got {num_scenes}")
    if width < 320 or height < 100:
        raise SynthesisError(f"image size must be at least 320x100, got {width}x{height}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images_zip, labels_zip = out_dir / IMAGES_ZIP, out_dir / LABELS_ZIP
    rng = np.random.default_rng(seed)
    counts: Counter[str] = Counter()
    given_up: Counter[str] = Counter()
    start = time.perf_counter()

    with atomic_output(images_zip, labels_zip) as tmp_paths:
        with (
            zipfile.ZipFile(tmp_paths[0], "w") as zimg,
            zipfile.ZipFile(tmp_paths[1], "w") as zlab,
        ):
            for index in tqdm(range(num_scenes), desc="synthesize", unit="scene", disable=None):
                image, objects, failed = render_scene(rng, width, height)
                buf = io.BytesIO()
                image.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
                frame = f"{index:06d}"
                zimg.writestr(
                    _zip_info(f"{IMAGE_DIR}/{frame}.png", zipfile.ZIP_STORED), buf.getvalue()
                )
                text = "".join(format_label_line(obj) + "\n" for obj in objects)
                zlab.writestr(
                    _zip_info(f"{LABEL_DIR}/{frame}.txt", zipfile.ZIP_DEFLATED),
                    text.encode("ascii"),
                    compresslevel=_LABELS_COMPRESS_LEVEL,
                )
                counts.update(obj.type for obj in objects)
                given_up.update(failed)

    log.info(
        "synthesized %d scenes (seed %d, %dx%d) in %.1f s: objects %s; placements given up "
        "after %d overlapping tries: %s",
        num_scenes,
        seed,
        width,
        height,
        time.perf_counter() - start,
        dict(sorted(counts.items())),
        _MAX_TRIES,
        dict(sorted(given_up.items())) or "none",
    )
    return images_zip, labels_zip
