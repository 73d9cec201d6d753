"""Object sprites of the synthetic KITTI scenes: one drawing function per KITTI type.

Each function draws one object on a transparent ``w`` x ``h`` RGBA canvas from a seeded
generator; :mod:`detrprune.data.synthetic` sizes, places and labels them.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Sprite = Callable[[np.random.Generator, int, int], Image.Image]
RGBA = tuple[int, int, int, int]


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


def draw_car(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_van(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_truck(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_misc(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_pedestrian(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_cyclist(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def draw_dontcare(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.uniform(60, 190, 3)
    noise = base + rng.normal(0.0, 35.0, (h, w, 3))
    patch = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB")
    patch = patch.filter(ImageFilter.GaussianBlur(1.5)).convert("RGBA")
    return patch
