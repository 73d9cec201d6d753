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

import colorsys
import io
import logging
import math
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

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
_LABELLED = ("Car", "Pedestrian", "Cyclist")
_LABELLED_P = (0.5, 0.3, 0.2)
_EXTRA_P = 0.3
_MAX_TRIES = 30
_MAX_IOU = 0.3
_MAX_OVERLAP_OF_SMALLER = 0.5
_TRUNCATE_P = 0.1

Sprite = Callable[[np.random.Generator, int, int], Image.Image]
RGBA = tuple[int, int, int, int]


class SynthesisError(ValueError):
    """Invalid arguments for the synthetic scene generator."""


def _rgba(rgb: tuple[float, float, float]) -> RGBA:
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]), 255)


def _saturated(rng: np.random.Generator, value: tuple[float, float] = (0.55, 0.95)) -> RGBA:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(*value))
    return _rgba((r * 255, g * 255, b * 255))


def _grey(rng: np.random.Generator, low: int, high: int) -> RGBA:
    v = int(rng.integers(low, high + 1))
    return (v, v, v, 255)


def _canvas(w: int, h: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    return img, ImageDraw.Draw(img)


def _maybe_flip(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    if rng.random() < 0.5:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _wheel(draw: ImageDraw.ImageDraw, cx: float, bottom: int, r: int, hub: RGBA) -> None:
    draw.ellipse([cx - r, bottom - 2 * r, cx + r, bottom], fill=(18, 18, 18, 255))
    hr = max(1, r // 2)
    draw.ellipse([cx - hr, bottom - r - hr, cx + hr, bottom - r + hr], fill=hub)


def _draw_car(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    body = _saturated(rng)
    glass = _rgba(rng.uniform(25, 60, 3))
    r = max(2, round(0.17 * h))
    body_top = round(0.42 * h)
    d.rounded_rectangle([0, body_top, w - 1, h - 1 - r], radius=max(1, round(0.1 * h)), fill=body)
    d.polygon([(0.27 * w, 0), (0.70 * w, 0), (0.86 * w, body_top), (0.12 * w, body_top)], fill=body)
    win_top = round(0.09 * h)
    d.polygon(
        [
            (0.30 * w, win_top),
            (0.67 * w, win_top),
            (0.80 * w, body_top - 1),
            (0.18 * w, body_top - 1),
        ],
        fill=glass,
    )
    d.line([(0.49 * w, win_top), (0.49 * w, body_top)], fill=body, width=max(1, w // 40))
    light = round(0.05 * w)
    d.rectangle(
        [w - 1 - light, body_top + 0.1 * h, w - 1, body_top + 0.2 * h], fill=(250, 230, 120, 255)
    )
    d.rectangle([0, body_top + 0.1 * h, light, body_top + 0.2 * h], fill=(200, 30, 30, 255))
    hub = _grey(rng, 140, 200)
    _wheel(d, 0.2 * w, h - 1, r, hub)
    _wheel(d, 0.8 * w, h - 1, r, hub)
    return _maybe_flip(rng, img)


def _draw_van(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    body = _grey(rng, 170, 245) if rng.random() < 0.6 else _saturated(rng)
    glass = _rgba(rng.uniform(25, 60, 3))
    r = max(2, round(0.13 * h))
    d.rounded_rectangle([0, 0, w - 1, h - 1 - r], radius=max(1, round(0.08 * h)), fill=body)
    d.rectangle([0.06 * w, 0.10 * h, 0.94 * w, 0.38 * h], fill=glass)
    for x in (0.35 * w, 0.65 * w):
        d.line([(x, 0.10 * h), (x, 0.38 * h)], fill=body, width=max(1, w // 40))
    d.line([(0, 0.62 * h), (w - 1, 0.62 * h)], fill=_grey(rng, 60, 100), width=max(1, h // 40))
    hub = _grey(rng, 140, 200)
    _wheel(d, 0.2 * w, h - 1, r, hub)
    _wheel(d, 0.8 * w, h - 1, r, hub)
    return _maybe_flip(rng, img)


def _draw_truck(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    box = _grey(rng, 200, 250)
    cab = _saturated(rng)
    r = max(2, round(0.12 * h))
    chassis_top = round(0.80 * h)
    d.rectangle([0.30 * w, 0, w - 1, chassis_top], fill=box)
    for y in np.linspace(0.15 * h, 0.65 * h, 4):
        d.line([(0.30 * w, y), (w - 1, y)], fill=_grey(rng, 150, 185), width=max(1, h // 60))
    d.rectangle([0, 0.30 * h, 0.29 * w, chassis_top], fill=cab)
    d.rectangle([0.03 * w, 0.36 * h, 0.22 * w, 0.55 * h], fill=_rgba(rng.uniform(25, 60, 3)))
    d.rectangle([0, chassis_top, w - 1, h - 1 - r], fill=(45, 45, 45, 255))
    hub = _grey(rng, 140, 200)
    for x in (0.12 * w, 0.62 * w, 0.84 * w):
        _wheel(d, x, h - 1, r, hub)
    return _maybe_flip(rng, img)


def _draw_misc(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    if rng.random() < 0.5:
        # traffic cone
        d.polygon([(w / 2, 0), (w - 1, h - 1), (0, h - 1)], fill=(240, 110, 20, 255))
        d.rectangle([0.3 * w, 0.45 * h, 0.7 * w, 0.6 * h], fill=(245, 245, 245, 255))
    else:
        # wooden crate
        wood = _rgba((rng.uniform(120, 170), rng.uniform(80, 110), rng.uniform(40, 60)))
        d.rectangle([0, 0, w - 1, h - 1], fill=wood, outline=(70, 45, 20, 255), width=2)
        d.line([(0, 0), (w - 1, h - 1)], fill=(70, 45, 20, 255), width=2)
        d.line([(0, h - 1), (w - 1, 0)], fill=(70, 45, 20, 255), width=2)
    return img


def _draw_pedestrian(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    skins = ((255, 205, 170), (225, 170, 130), (180, 125, 90), (120, 80, 55))
    skin = _rgba(skins[int(rng.integers(len(skins)))])
    shirt = _saturated(rng)
    pants = _saturated(rng, value=(0.15, 0.45))
    head = max(3, round(min(0.8 * w, 0.17 * h)))
    cx = (w - 1) / 2
    d.ellipse([cx - head / 2, 0, cx + head / 2, head], fill=skin)
    hip = round(0.55 * h)
    arm = max(1, round(0.16 * w))
    d.rectangle([arm, head, w - 1 - arm, hip], fill=shirt)
    d.rectangle([0, head + 1, arm, 0.5 * h], fill=shirt)
    d.rectangle([w - 1 - arm, head + 1, w - 1, 0.5 * h], fill=shirt)
    leg = 0.3 * w
    left = rng.uniform(0.0, 0.2) * w
    right = w - 1 - rng.uniform(0.0, 0.2) * w
    d.polygon([(0.2 * w, hip), (0.5 * w, hip), (left + leg, h - 1), (left, h - 1)], fill=pants)
    d.polygon([(0.5 * w, hip), (0.8 * w, hip), (right, h - 1), (right - leg, h - 1)], fill=pants)
    return _maybe_flip(rng, img)


def _draw_cyclist(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img, d = _canvas(w, h)
    tyre = (25, 25, 25, 255)
    frame = _saturated(rng)
    clothes = _saturated(rng)
    pants = _saturated(rng, value=(0.15, 0.45))
    wheel = max(6, round(min(0.46 * w, 0.45 * h)))
    line_w = max(2, round(wheel / 8))
    bottom = h - 1
    d.ellipse([0, bottom - wheel, wheel, bottom], outline=tyre, width=line_w)
    d.ellipse([w - 1 - wheel, bottom - wheel, w - 1, bottom], outline=tyre, width=line_w)
    axle_y = bottom - wheel / 2
    rear = (wheel / 2, axle_y)
    front = (w - 1 - wheel / 2, axle_y)
    crank = ((rear[0] + front[0]) / 2, axle_y)
    seat = (0.38 * w, bottom - wheel - 0.04 * h)
    bar = (0.78 * w, bottom - wheel - 0.10 * h)
    for a, b in ((rear, crank), (crank, seat), (seat, rear), (seat, bar), (bar, front)):
        d.line([a, b], fill=frame, width=line_w)
    head = max(3, round(0.17 * h))
    hx = 0.62 * w
    d.ellipse([hx - head / 2, 0, hx + head / 2, head], fill=(225, 170, 130, 255))
    shoulder = (0.58 * w, head + 0.04 * h)
    d.line([shoulder, seat], fill=clothes, width=max(3, round(0.14 * w)))
    d.line([shoulder, bar], fill=clothes, width=max(2, round(0.05 * w)))
    d.line([seat, crank], fill=pants, width=max(2, round(0.08 * w)))
    return _maybe_flip(rng, img)


def _draw_dontcare(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.uniform(60, 190, 3)
    noise = base + rng.normal(0.0, 35.0, (h, w, 3))
    patch = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    patch = patch.filter(ImageFilter.GaussianBlur(1.5)).convert("RGBA")
    return patch


@dataclass(frozen=True)
class _ClassSpec:
    """How one object type is sized and drawn (heights in px of a 375-row frame)."""

    aspect: tuple[float, float]  # box width / height
    box_height: tuple[float, float]  # far .. near
    dimensions: tuple[float, float, float]  # KITTI h, w, l in metres
    draw: Sprite


_SPECS: dict[str, _ClassSpec] = {
    # Labelled classes stay >= ~25 px tall at the tiny model's 160-row input.
    "Car": _ClassSpec((1.6, 2.6), (55, 160), (1.52, 1.63, 3.88), _draw_car),
    "Pedestrian": _ClassSpec((0.3, 0.45), (65, 200), (1.76, 0.66, 0.84), _draw_pedestrian),
    "Cyclist": _ClassSpec((0.6, 1.0), (60, 180), (1.74, 0.60, 1.76), _draw_cyclist),
    "Van": _ClassSpec((0.9, 1.25), (45, 170), (2.21, 1.90, 5.08), _draw_van),
    "Truck": _ClassSpec((1.3, 1.8), (50, 190), (3.25, 2.59, 10.1), _draw_truck),
    "Misc": _ClassSpec((0.5, 1.0), (30, 80), (1.9, 1.5, 3.6), _draw_misc),
    "DontCare": _ClassSpec((1.2, 2.5), (12, 30), (-1.0, -1.0, -1.0), _draw_dontcare),
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


def _background(rng: np.random.Generator, width: int, height: int, horizon: int) -> Image.Image:
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
    image = _background(rng, width, height, horizon)
    wanted = [str(t) for t in rng.choice(_LABELLED, size=int(rng.integers(1, 7)), p=_LABELLED_P)]
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
