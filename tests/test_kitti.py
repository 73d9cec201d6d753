"""Tests of the strict KITTI label parser and writer (detrprune.data.kitti)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detrprune.data.kitti import (
    KITTI_TYPES,
    KittiLabelError,
    KittiObject,
    format_label_line,
    parse_label_file,
    parse_label_line,
)

SAMPLE = Path(__file__).parent / "data" / "kitti_sample"
LABELS = sorted((SAMPLE / "training" / "label_2").glob("*.txt"))
VALID = "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57"


def test_sample_is_there():
    assert [p.stem for p in LABELS] == [f"{i:06d}" for i in range(6)]


@pytest.mark.parametrize("path", LABELS, ids=lambda p: p.name)
def test_parse_every_sample_file(path: Path):
    objects = parse_label_file(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(objects) == len(lines) > 0
    for obj in objects:
        assert obj.type in KITTI_TYPES
        assert obj.score is None


def test_sample_types():
    types = {obj.type for path in LABELS for obj in parse_label_file(path)}
    assert types == {"Car", "Pedestrian", "Cyclist", "Truck", "Misc", "DontCare"}


def test_exact_values_of_one_line():
    (obj,) = parse_label_file(SAMPLE / "training" / "label_2" / "000000.txt")
    assert obj == KittiObject(
        type="Pedestrian",
        truncated=0.0,
        occluded=0,
        alpha=-0.20,
        bbox=(712.40, 143.00, 810.73, 307.92),
        dimensions=(1.89, 0.48, 1.20),
        location=(1.84, 1.47, 8.41),
        rotation_y=0.01,
    )
    assert obj.height == pytest.approx(307.92 - 143.00)


def test_dont_care_sentinels_and_occlusion_unknown():
    objects = parse_label_file(SAMPLE / "training" / "label_2" / "000001.txt")
    dont_care = [o for o in objects if o.type == "DontCare"]
    assert len(dont_care) == 4
    assert all(o.truncated == -1 and o.occluded == -1 and o.alpha == -10 for o in dont_care)
    cyclist = next(o for o in objects if o.type == "Cyclist")
    assert cyclist.occluded == 3


def test_score_field_accepted():
    obj = parse_label_line(VALID + " 0.875", "x.txt:1")
    assert obj.score == pytest.approx(0.875)
    assert parse_label_line(VALID, "x.txt:1").score is None


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (" ".join(VALID.split()[:14]), "expected 15 fields"),
        (VALID + " 0.5 0.5", "got 17"),
        (VALID.replace("1.85", "abc"), "'alpha' is not a number: 'abc'"),
        (VALID.replace("1.85", "nan"), "not finite"),
        (VALID.replace("Car", "Bus"), "unknown object type 'Bus'"),
        (VALID.replace("Car", "car"), "unknown object type 'car'"),
        (VALID.replace(" 0 1.85", " 5 1.85"), "occluded must be one of [0, 1, 2, 3]"),
        (VALID.replace(" 0 1.85", " 1.5 1.85"), "occluded must be an integer"),
        (VALID.replace(" 0 1.85", " -1 1.85"), "occluded must be one of"),
        (VALID.replace("0.00", "1.20"), "truncated must lie in [0, 1]"),
        (VALID.replace("0.00", "-1"), "truncated must lie in [0, 1]"),
        (VALID.replace("423.81", "300.00"), "x2 < x1"),
        (VALID.replace("203.12", "100.00"), "y2 < y1"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, what: str):
    path = tmp_path / "000042.txt"
    path.write_text(VALID + "\n\n" + line + "\n")
    with pytest.raises(KittiLabelError) as info:
        parse_label_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:")
    assert what in message
    assert "\n" not in message


def test_parse_label_line_uses_where():
    with pytest.raises(KittiLabelError, match=r"^somewhere\.txt:7: "):
        parse_label_line("Car 1 2", "somewhere.txt:7")


def test_empty_and_blank_files(tmp_path: Path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\t\n")
    assert parse_label_file(empty) == []
    assert parse_label_file(blank) == []


def test_not_utf8(tmp_path: Path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"Car \xff\xfe\n")
    with pytest.raises(KittiLabelError, match=rf"^{re.escape(str(path))}: not a UTF-8"):
        parse_label_file(path)


@pytest.mark.parametrize("path", LABELS, ids=lambda p: p.name)
def test_format_reproduces_the_benchmark_lines(path: Path):
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    objects = parse_label_file(path)
    assert [format_label_line(obj) for obj in objects] == lines


def test_format_parse_round_trip():
    obj = KittiObject(
        type="Cyclist",
        truncated=0.31,
        occluded=2,
        alpha=-3.14,
        bbox=(0.0, 10.5, 99.25, 200.0),
        dimensions=(1.7, 0.6, 1.8),
        location=(-4.2, 1.6, 12.34),
        rotation_y=3.1,
        score=0.98765,
    )
    back = parse_label_line(format_label_line(obj), "round-trip:1")
    assert back.type == obj.type and back.occluded == obj.occluded
    assert back.bbox == obj.bbox
    assert back.score == pytest.approx(0.9877)
    for name in ("truncated", "alpha", "rotation_y"):
        assert getattr(back, name) == pytest.approx(getattr(obj, name))
    assert back.location == pytest.approx(obj.location)
    assert parse_label_line(format_label_line(back), "again:1") == back
