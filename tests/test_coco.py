"""Tests of the KITTI -> COCO conversion and the seeded split (detrprune.data.coco)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from detrprune.data.coco import (
    STANDARD_SPLIT_LISTS,
    ConversionError,
    kitti_to_coco,
    read_split_list,
    split_ids,
    standard_split,
)
from detrprune.data.kitti import KittiLabelError, parse_label_file

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "kitti_sample"
LABEL_DIR = SAMPLE / "training" / "label_2"
CLASSES = ("Car", "Pedestrian", "Cyclist")


@pytest.fixture
def converted(tmp_path: Path) -> tuple[dict, dict, dict]:
    """(stats, train document, val document) of the real sample."""
    train, val = tmp_path / "coco" / "train.json", tmp_path / "coco" / "val.json"
    stats = kitti_to_coco(SAMPLE, train, val, val_fraction=0.5, seed=0)
    return stats, json.loads(train.read_text()), json.loads(val.read_text())


def _merged(train: dict, val: dict) -> tuple[list[dict], list[dict]]:
    return train["images"] + val["images"], train["annotations"] + val["annotations"]


def test_categories(converted):
    _, train, val = converted
    expected = [
        {"id": 1, "name": "Car"},
        {"id": 2, "name": "Pedestrian"},
        {"id": 3, "name": "Cyclist"},
    ]
    assert train["categories"] == val["categories"] == expected


def test_images_and_sizes(converted):
    stats, train, val = converted
    images, _ = _merged(train, val)
    by_id = {image["id"]: image for image in images}
    assert sorted(by_id) == list(range(6))
    assert by_id[0] == {"id": 0, "file_name": "000000.png", "width": 1224, "height": 370}
    for frame in range(1, 6):
        assert (by_id[frame]["width"], by_id[frame]["height"]) == (1242, 375)
        assert by_id[frame]["file_name"] == f"{frame:06d}.png"
    assert stats["images"] == {"train": 3, "val": 3}
    assert len(train["images"]) == len(val["images"]) == 3


def test_exact_box_of_one_object(converted):
    _, train, val = converted
    _, annotations = _merged(train, val)
    # 000001.txt: "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 ..."
    (car,) = [
        a for a in annotations if a["image_id"] == 1 and a["category_id"] == 1 and not a["iscrowd"]
    ]
    assert car["bbox"] == pytest.approx([387.63, 181.54, 423.81 - 387.63, 203.12 - 181.54])
    assert car["area"] == pytest.approx((423.81 - 387.63) * (203.12 - 181.54))
    assert car["kitti"] == {"type": "Car", "truncated": 0.0, "occluded": 0, "height": 21.58}
    (cyclist,) = [
        a for a in annotations if a["image_id"] == 1 and a["category_id"] == 3 and not a["iscrowd"]
    ]
    assert cyclist["kitti"]["occluded"] == 3


def test_counts_match_the_label_files(converted):
    stats, train, val = converted
    objects = [obj for path in sorted(LABEL_DIR.glob("*.txt")) for obj in parse_label_file(path)]
    types = Counter(obj.type for obj in objects)
    _, annotations = _merged(train, val)
    annotated = Counter(CLASSES[a["category_id"] - 1] for a in annotations if not a["iscrowd"])
    assert annotated == {name: types[name] for name in CLASSES}
    assert annotated == {"Car": 5, "Pedestrian": 2, "Cyclist": 1}
    for name in CLASSES:
        assert (
            stats["annotations"]["train"][name] + stats["annotations"]["val"][name] == types[name]
        )
    assert stats["unused_types"] == {"Misc": 1, "Truck": 1}
    assert stats["ignore_regions"] == {"DontCare": types["DontCare"], "Person_sitting": 0, "Van": 0}
    assert stats["degenerate_boxes"] == 0 and stats["clipped_boxes"] == 0
    assert stats["objects"] == len(objects)


def test_dont_care_is_ignored_in_every_category(converted):
    stats, train, val = converted
    images, annotations = _merged(train, val)
    crowd = [a for a in annotations if a["iscrowd"]]
    assert all(a["kitti"]["type"] == "DontCare" for a in crowd)
    dont_care_004 = [o for o in parse_label_file(LABEL_DIR / "000004.txt") if o.type == "DontCare"]
    for category_id in (1, 2, 3):
        in_category = [a for a in crowd if a["category_id"] == category_id]
        assert len(in_category) == stats["ignore_regions"]["DontCare"] == 15
        boxes_004 = [a["bbox"] for a in in_category if a["image_id"] == 4]
        expected = [
            [o.bbox[0], o.bbox[1], o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1]]
            for o in dont_care_004
        ]
        assert len(boxes_004) == len(expected) == 5
        for box, want in zip(boxes_004, expected, strict=True):
            assert box == pytest.approx(want)
    for split in ("train", "val"):
        assert len(set(stats["ignore_annotations"][split].values())) == 1


def test_annotation_ids_are_consecutive(converted):
    _, train, val = converted
    for document in (train, val):
        assert [a["id"] for a in document["annotations"]] == list(
            range(1, len(document["annotations"]) + 1)
        )
        image_ids = {image["id"] for image in document["images"]}
        assert {a["image_id"] for a in document["annotations"]} <= image_ids


def test_loads_with_pycocotools(converted, tmp_path: Path):
    from pycocotools.coco import COCO

    _, train, _ = converted
    coco = COCO(str(tmp_path / "coco" / "train.json"))
    assert coco.getCatIds() == [1, 2, 3]
    assert sorted(coco.getImgIds()) == sorted(image["id"] for image in train["images"])
    assert len(coco.getAnnIds(iscrowd=None)) == len(train["annotations"])
    assert len(coco.getAnnIds(iscrowd=False)) == sum(not a["iscrowd"] for a in train["annotations"])


def test_output_is_deterministic(tmp_path: Path):
    outputs = []
    for run in ("a", "b"):
        train, val = tmp_path / run / "train.json", tmp_path / run / "val.json"
        kitti_to_coco(SAMPLE, train, val, val_fraction=0.34, seed=3)
        outputs.append((train.read_bytes(), val.read_bytes()))
    assert outputs[0] == outputs[1]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["train.json", "val.json"]


def test_split_ids_is_seeded():
    ids = [f"{i:06d}" for i in range(100)]
    train, val = split_ids(ids, 0.2, seed=1)
    assert (train, val) == split_ids(list(reversed(ids)), 0.2, seed=1)
    assert len(val) == round(100 * 0.2) and len(train) == 80
    assert sorted(train + val) == ids and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert split_ids(ids, 0.2, seed=2) != (train, val)


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"), [(6, 0.5, 3), (7, 0.3, 2), (2, 0.1, 1), (3, 0.9, 2), (1, 0.2, 0)]
)
def test_split_sizes(n: int, fraction: float, n_val: int):
    train, val = split_ids([str(i) for i in range(n)], fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction: float):
    with pytest.raises(ConversionError, match="val_fraction"):
        split_ids(["1", "2"], fraction, seed=0)


def _kitti_root(tmp_path: Path, labels: dict[str, str]) -> Path:
    root = tmp_path / "kitti"
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "training" / "label_2").mkdir(parents=True)
    for frame, text in labels.items():
        shutil.copy(
            SAMPLE / "training" / "image_2" / "000001.png",
            root / "training" / "image_2" / f"{frame}.png",
        )
        (root / "training" / "label_2" / f"{frame}.txt").write_text(text)
    return root


TAIL = "1.50 1.60 3.90 1.00 1.50 20.00 0.10"


def test_clipping_degenerate_and_ignore_mapping(tmp_path: Path):
    root = _kitti_root(
        tmp_path,
        {
            "000010": "\n".join(
                [
                    f"Car 0.40 1 0.00 -5.00 100.00 50.00 380.00 {TAIL}",  # clipped left and bottom
                    f"Car 0.00 0 0.00 1241.50 10.00 1250.00 20.00 {TAIL}",  # 0.5 px wide, clipped
                    f"Van 0.00 0 0.00 10.00 10.00 110.00 90.00 {TAIL}",
                    f"Person_sitting 0.00 2 0.00 200.00 150.00 230.00 200.00 {TAIL}",
                    f"Tram 0.00 0 0.00 300.00 100.00 600.00 250.00 {TAIL}",
                    f"Cyclist 0.10 0 0.00 700.00 150.00 760.00 230.00 {TAIL}",
                ]
            )
            + "\n",
            "000011": "",
        },
    )
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    stats = kitti_to_coco(root, train, val, val_fraction=0.5, seed=0)
    images, annotations = _merged(json.loads(train.read_text()), json.loads(val.read_text()))
    assert sorted(image["id"] for image in images) == [10, 11]
    by_type = {a["kitti"]["type"]: a for a in annotations}
    assert by_type["Car"]["bbox"] == pytest.approx([0.0, 100.0, 50.0, 275.0])
    assert by_type["Car"]["kitti"] == {
        "type": "Car",
        "truncated": 0.4,
        "occluded": 1,
        "height": 280.0,
    }
    assert (by_type["Van"]["category_id"], by_type["Van"]["iscrowd"]) == (1, 1)
    assert (by_type["Person_sitting"]["category_id"], by_type["Person_sitting"]["iscrowd"]) == (
        2,
        1,
    )
    assert (by_type["Cyclist"]["category_id"], by_type["Cyclist"]["iscrowd"]) == (3, 0)
    assert "Tram" not in by_type and len(annotations) == 4
    assert stats["clipped_boxes"] == 1
    assert stats["degenerate_boxes"] == 1
    assert stats["unused_types"] == {"Tram": 1}
    assert stats["ignore_regions"] == {"DontCare": 0, "Person_sitting": 1, "Van": 1}
    assert stats["objects"] == 6


def test_custom_classes(tmp_path: Path):
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    stats = kitti_to_coco(
        SAMPLE, train, val, val_fraction=0.5, seed=0, classes=("Cyclist", "Pedestrian")
    )
    document = json.loads(train.read_text())
    assert document["categories"] == [{"id": 1, "name": "Cyclist"}, {"id": 2, "name": "Pedestrian"}]
    assert stats["unused_types"] == {"Car": 5, "Misc": 1, "Truck": 1}
    assert stats["ignore_regions"] == {"DontCare": 15, "Person_sitting": 0}


@pytest.mark.parametrize("classes", [(), ("Car", "Car"), ("Bus",), ("DontCare",)])
def test_bad_classes(tmp_path: Path, classes: tuple[str, ...]):
    with pytest.raises(ConversionError):
        kitti_to_coco(SAMPLE, tmp_path / "t.json", tmp_path / "v.json", 0.5, 0, classes=classes)
    assert list(tmp_path.iterdir()) == []


def test_missing_image_and_bad_label(tmp_path: Path):
    root = _kitti_root(tmp_path, {"000001": f"Car 0.00 0 0.00 1 2 3 4 {TAIL}\n"})
    (root / "training" / "label_2" / "000002.txt").write_text("")
    with pytest.raises(ConversionError, match=r"000002\.txt: no image .*000002\.png"):
        kitti_to_coco(root, tmp_path / "t.json", tmp_path / "v.json", 0.5, 0)
    (root / "training" / "label_2" / "000002.txt").unlink()
    (root / "training" / "label_2" / "000001.txt").write_text("Car 0.00 0\n")
    with pytest.raises(KittiLabelError, match=r"000001\.txt:1: expected 15 fields"):
        kitti_to_coco(root, tmp_path / "t.json", tmp_path / "v.json", 0.5, 0)
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "v.json").exists()


def test_non_numeric_frame_id(tmp_path: Path):
    root = _kitti_root(tmp_path, {"frame_a": ""})
    with pytest.raises(ConversionError, match="is not a number"):
        kitti_to_coco(root, tmp_path / "t.json", tmp_path / "v.json", 0.5, 0)


def test_shipped_standard_split_partitions_the_7481_frames():
    train, val = (read_split_list(path) for path in STANDARD_SPLIT_LISTS)
    assert (len(train), len(val)) == (3712, 3769)
    assert not set(train) & set(val)
    assert set(train) | set(val) == {f"{i:06d}" for i in range(7481)}


def test_standard_split_on_the_real_sample(tmp_path: Path):
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    stats = kitti_to_coco(SAMPLE, train, val, val_fraction=0.5, seed=0, split="standard")
    # The sample is a subset: the other 7475 listed ids have no frame, which is tolerated.
    assert stats["split"] == {"method": "standard", "missing_ids": 7475, "unlisted_frames": 0}
    assert [im["file_name"] for im in json.loads(train.read_text())["images"]] == [
        "000000.png",
        "000003.png",
    ]
    assert [im["id"] for im in json.loads(val.read_text())["images"]] == [1, 2, 4, 5]


def _lists(tmp_path: Path, train: list[str], val: list[str]) -> tuple[Path, Path]:
    paths = tmp_path / "train.txt", tmp_path / "val.txt"
    for path, ids in zip(paths, (train, val), strict=True):
        path.write_text("\n".join(ids) + "\n")
    return paths


def test_standard_split_missing_id_is_an_error_for_a_full_dataset(tmp_path: Path):
    lists = _lists(tmp_path, ["000000", "000001"], ["000002", "000009"])
    ids = ["000000", "000001", "000002", "000003"]  # as many frames as listed ids: full
    with pytest.raises(ConversionError, match=r"1 split ids have no frame .* first: 000009"):
        standard_split(ids, lists)
    train, val, stats = standard_split(ids[:3], lists)  # a subset: tolerated
    assert (train, val) == (["000000", "000001"], ["000002"])
    assert stats == {"missing_ids": 1, "unlisted_frames": 0}


def test_standard_split_counts_unlisted_frames_and_rejects_bad_lists(tmp_path: Path):
    lists = _lists(tmp_path, ["000000"], ["000001"])
    train, val, stats = standard_split(["000000", "000001", "000007"], lists)
    assert (train, val, stats["unlisted_frames"]) == (["000000"], ["000001"], 1)
    lists = _lists(tmp_path, ["000000", "12x"], ["000001"])
    with pytest.raises(ConversionError, match=r"train.txt:2: '12x' is not a six-digit frame id"):
        standard_split(["000000"], lists)
    lists = _lists(tmp_path, ["000000"], ["000000"])
    with pytest.raises(ConversionError, match="ids also in"):
        standard_split(["000000"], lists)


def test_unknown_split_method(tmp_path: Path):
    with pytest.raises(ConversionError, match="kitti.split: unknown split 'halves'"):
        kitti_to_coco(SAMPLE, tmp_path / "t.json", tmp_path / "v.json", 0.5, 0, split="halves")


def _flip_a_bit(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="cut-in-half"),
        # All pixel data is there, the end is not: decoding alone passes it, OpenCV does not.
        pytest.param(lambda data: data[:-20], id="tail-cut"),
        pytest.param(_flip_a_bit, id="bit-flip"),
    ],
)
def test_damaged_image_is_a_one_line_error_naming_it(tmp_path: Path, damage):
    root = _kitti_root(tmp_path, {"000001": "", "000002": "", "000003": ""})
    images = root / "training" / "image_2"
    for frame in ("000002", "000003"):
        image = images / f"{frame}.png"
        image.write_bytes(damage(image.read_bytes()))  # the header is intact
    train, val = tmp_path / "coco" / "train.json", tmp_path / "coco" / "val.json"
    with pytest.raises(ConversionError) as error:
        kitti_to_coco(root, train, val, val_fraction=0.5, seed=0)
    message = str(error.value)
    assert message.startswith(f"{images / '000002.png'}: cannot decode the image (")
    assert message.endswith("; 1 more: 000003.png") and "\n" not in message
    assert not (tmp_path / "coco").exists() or list((tmp_path / "coco").iterdir()) == []


def test_dropped_frames_and_other_files_are_counted_and_warned(tmp_path: Path, caplog):
    root = _kitti_root(tmp_path, {f"{i:06d}": "" for i in range(3)})
    images = root / "training" / "image_2"
    for i in range(10, 17):  # seven images without a label file
        shutil.copy(images / "000000.png", images / f"{i:06d}.png")
    (images / "notes.txt").write_text("")
    (root / "training" / "label_2" / "000003.TXT").write_text("")
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    with caplog.at_level(logging.INFO, logger="detrprune"):
        stats = kitti_to_coco(root, train, val, val_fraction=0.5, seed=0)
    assert stats["unlabelled_images"] == 7
    assert stats["other_files"] == 2
    assert sum(stats["images"].values()) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (dropped,) = [w for w in warnings if "no label" in w]
    assert "7 images" in dropped and "000010, 000011, 000012, 000013, 000014, ..." in dropped
    assert "000015" not in dropped
    (other,) = [w for w in warnings if "notes.txt" in w]
    assert "2 " in other and "000003.TXT" in other


def test_sample_has_nothing_dropped(converted):
    stats, _, _ = converted
    assert (stats["unlabelled_images"], stats["other_files"]) == (0, 0)


def test_the_rule_script_fails_in_one_line_and_writes_nothing(tmp_path: Path):
    """Bad input through the rule's script: non-zero exit, the error as the log's last line."""
    root = _kitti_root(tmp_path, {"000001": "", "000002": ""})
    image = root / "training" / "image_2" / "000002.png"
    image.write_bytes(image.read_bytes()[:-20])
    log, coco = tmp_path / "convert.log", tmp_path / "coco"
    code = f"""
import runpy, types
params = types.SimpleNamespace(root={str(root)!r}, val_fraction=0.5, seed=0, split="random")
output = types.SimpleNamespace(train={str(coco / "train.json")!r}, val={str(coco / "val.json")!r})
snakemake = types.SimpleNamespace(log=[{str(log)!r}], params=params, output=output)
script = {str(REPO / "scripts" / "kitti_to_coco.py")!r}
runpy.run_path(script, init_globals={{"snakemake": snakemake}})
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"detrprune.data.coco.ConversionError: {image}: cannot decode the image")
    assert not coco.exists()
