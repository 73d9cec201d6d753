"""Tests of the seeded synthetic KITTI-format archives (detrprune.data.synthetic)."""

from __future__ import annotations

import copy
import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detrprune.data.kitti import parse_label_line
from detrprune.data.synthetic import (
    SynthesisError,
    render_background,
    render_scene,
    synthesize_kitti,
)

NUM_SCENES = 6


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """The same small dataset twice with seed 0, once with seed 1."""
    return {
        name: synthesize_kitti(tmp_path_factory.mktemp(name), NUM_SCENES, seed)
        for name, seed in (("a", 0), ("b", 0), ("other", 1))
    }


def _labels(labels_zip: Path) -> dict[str, list[str]]:
    with zipfile.ZipFile(labels_zip) as zf:
        return {name: zf.read(name).decode("ascii").splitlines() for name in zf.namelist()}


def test_same_seed_is_byte_identical(archives):
    for first, second in zip(archives["a"], archives["b"], strict=True):
        assert first.read_bytes() == second.read_bytes()


def test_other_seed_differs(archives):
    for first, other in zip(archives["a"], archives["other"], strict=True):
        assert first.read_bytes() != other.read_bytes()


def test_returns_the_two_archive_paths_and_nothing_else(archives):
    images_zip, labels_zip = archives["a"]
    assert images_zip.name == "data_object_image_2.zip"
    assert labels_zip.name == "data_object_label_2.zip"
    assert sorted(p.name for p in images_zip.parent.iterdir()) == sorted(
        [images_zip.name, labels_zip.name]
    )


def test_zip_layout(archives):
    images_zip, labels_zip = archives["a"]
    ids = [f"{i:06d}" for i in range(NUM_SCENES)]
    with zipfile.ZipFile(images_zip) as zf:
        assert zf.namelist() == [f"training/image_2/{i}.png" for i in ids]
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}
    with zipfile.ZipFile(labels_zip) as zf:
        assert zf.namelist() == [f"training/label_2/{i}.txt" for i in ids]
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert zf.testzip() is None


def test_images_are_kitti_sized_rgb_png(archives):
    with zipfile.ZipFile(archives["a"][0]) as zf:
        for name in zf.namelist():
            with Image.open(io.BytesIO(zf.read(name))) as image:
                assert image.format == "PNG"
                assert image.size == (1242, 375)
                assert image.mode == "RGB"


def test_every_label_line_parses_and_boxes_are_inside(archives):
    for name, lines in _labels(archives["a"][1]).items():
        assert lines, f"{name} has no objects"
        for lineno, line in enumerate(lines, start=1):
            obj = parse_label_line(line, f"{name}:{lineno}")
            x1, y1, x2, y2 = obj.bbox
            assert 0 <= x1 < x2 <= 1242 and 0 <= y1 < y2 <= 375, line
            if obj.type == "DontCare":
                assert line.split()[8:] == "-1 -1 -1 -1000 -1000 -1000 -10".split()
            else:
                assert obj.occluded in (0, 1, 2)
                assert 0 <= obj.truncated <= 0.5
                assert obj.location[2] > 0


def test_classes_sizes_and_order_over_twenty_scenes(tmp_path: Path):
    _, labels_zip = synthesize_kitti(tmp_path, 20, seed=7)
    counts: Counter[str] = Counter()
    for name, lines in _labels(labels_zip).items():
        objects = [parse_label_line(line, name) for line in lines]
        labelled = [o for o in objects if o.type in ("Car", "Pedestrian", "Cyclist")]
        assert 1 <= len(labelled) <= 6
        # Big enough to survive the 1242x375 -> 512x155 downscale of the tiny model.
        assert all(30 <= o.height <= 220 for o in labelled)
        types = [o.type for o in objects]
        assert "DontCare" not in types or types.index("DontCare") == len(types) - types.count(
            "DontCare"
        )
        counts.update(types)
    assert counts["Car"] > counts["Pedestrian"] > 0
    assert counts["Cyclist"] > 0


def test_aspect_ratios_are_class_distinct():
    rng = np.random.default_rng(3)
    aspects: dict[str, list[float]] = {"Car": [], "Pedestrian": [], "Cyclist": []}
    for _ in range(15):
        _, objects, _ = render_scene(rng)
        for obj in objects:
            x1, y1, x2, y2 = obj.bbox
            if obj.type in aspects and obj.truncated == 0:
                aspects[obj.type].append((x2 - x1) / (y2 - y1))
    assert all(aspects.values())
    assert max(aspects["Pedestrian"]) < min(aspects["Cyclist"])
    assert max(aspects["Cyclist"]) < min(aspects["Car"])


def _separate(box, others) -> bool:
    x1, y1, x2, y2 = box
    return all(
        ox2 < x1 - 1 or ox1 > x2 + 1 or oy2 < y1 - 1 or oy1 > y2 + 1
        for ox1, oy1, ox2, oy2 in others
    )


@pytest.mark.parametrize("seed", range(5))
def test_boxes_are_the_exact_drawn_extent(seed: int):
    """Against the scene's own background, an isolated object's pixels fill its box exactly."""
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(5):  # a few scenes, so that some objects stand alone
        replay = copy.deepcopy(rng)
        image, objects, _ = render_scene(rng)
        horizon = round(replay.uniform(150, 200))
        background = render_background(replay, 1242, 375, horizon)
        drawn = np.any(np.asarray(image) != np.asarray(background), axis=2)
        for index, obj in enumerate(objects):
            box = tuple(int(v) for v in obj.bbox)
            assert box == obj.bbox
            others = [o.bbox for i, o in enumerate(objects) if i != index]
            if not _separate(box, others):
                continue
            x1, y1, x2, y2 = box
            inside = drawn[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any(), obj
            assert inside[:, 0].any() and inside[:, -1].any(), obj
            top, left = max(y1 - 1, 0), max(x1 - 1, 0)
            ring = drawn[top : y2 + 1, left : x2 + 1].copy()
            ring[y1 - top : y2 - top, x1 - left : x2 - left] = False
            assert not ring.any(), obj
            checked += 1
    assert checked > 0


@pytest.mark.parametrize(("num_scenes", "width", "height"), [(0, 1242, 375), (3, 100, 375)])
def test_invalid_arguments(tmp_path: Path, num_scenes: int, width: int, height: int):
    with pytest.raises(SynthesisError):
        synthesize_kitti(tmp_path, num_scenes, 0, width=width, height=height)
    assert list(tmp_path.iterdir()) == []
