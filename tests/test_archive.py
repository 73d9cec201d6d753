"""Tests of the safe archive extraction (detrprune.data.archive)."""

from __future__ import annotations

import logging
import os
import re
import stat
import zipfile
from pathlib import Path

import pytest

from detrprune.data.archive import ArchiveError, extract_kitti, safe_extract_zip
from detrprune.data.synthetic import synthesize_kitti

NUM_SCENES = 4


@pytest.fixture(scope="module")
def kitti_zips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return synthesize_kitti(tmp_path_factory.mktemp("raw"), NUM_SCENES, seed=0)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_extract_kitti(kitti_zips, tmp_path: Path):
    out = tmp_path / "kitti"
    stats = extract_kitti(*kitti_zips, out)
    assert stats == {
        "images": NUM_SCENES,
        "labels": NUM_SCENES,
        "unlabelled_images": 0,
        "skipped_entries": 0,
    }
    ids = [f"{i:06d}" for i in range(NUM_SCENES)]
    assert sorted(p.name for p in (out / "training/image_2").iterdir()) == [f"{i}.png" for i in ids]
    assert sorted(p.name for p in (out / "training/label_2").iterdir()) == [f"{i}.txt" for i in ids]
    assert sorted(os.listdir(tmp_path)) == ["kitti"]


def test_extract_kitti_replaces_a_previous_extraction(kitti_zips, tmp_path: Path):
    out = tmp_path / "kitti"
    extract_kitti(*kitti_zips, out)
    stale = out / "training/label_2/999999.txt"
    stale.write_text("")
    extract_kitti(*kitti_zips, out)
    assert not stale.exists()
    assert len(list((out / "training/label_2").iterdir())) == NUM_SCENES
    assert sorted(os.listdir(tmp_path)) == ["kitti"]


def test_extract_kitti_keeps_training_only_and_counts(kitti_zips, tmp_path: Path, caplog):
    images_zip, labels_zip = kitti_zips
    mixed = tmp_path / "images.zip"
    with zipfile.ZipFile(images_zip) as src, zipfile.ZipFile(mixed, "w") as dst:
        dst.writestr(zipfile.ZipInfo("testing/"), b"")
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data)
            dst.writestr(name.replace("training/", "testing/"), data)
        dst.writestr("training/image_2/000100.png", data)
    with caplog.at_level(logging.INFO, logger="detrprune"):
        stats = extract_kitti(mixed, labels_zip, tmp_path / "kitti")
    assert stats == {
        "images": NUM_SCENES + 1,
        "labels": NUM_SCENES,
        "unlabelled_images": 1,
        "skipped_entries": NUM_SCENES,
    }
    assert not (tmp_path / "kitti" / "testing").exists()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 images have no label file" in warning and "000100" in warning


def test_label_without_image_raises(kitti_zips, tmp_path: Path):
    images_zip, labels_zip = kitti_zips
    labels = tmp_path / "labels.zip"
    with zipfile.ZipFile(labels_zip) as src, zipfile.ZipFile(labels, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("training/label_2/000777.txt", b"")
        dst.writestr("training/label_2/000778.txt", b"")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ArchiveError, match=r"2 label files have no image .*000777, 000778"):
        extract_kitti(images_zip, labels, tmp_path / "kitti")
    assert sorted(os.listdir(tmp_path)) == before


def test_no_labels_raises(kitti_zips, tmp_path: Path):
    empty = _zip(tmp_path / "labels.zip", {})
    with pytest.raises(ArchiveError, match="no label files"):
        extract_kitti(kitti_zips[0], empty, tmp_path / "kitti")
    assert not (tmp_path / "kitti").exists()


def test_safe_extract_zip(tmp_path: Path):
    archive = _zip(tmp_path / "ok.zip", {"a/": b"", "a/b.txt": b"hello", "c.txt": b"world"})
    dest = tmp_path / "out"
    files = safe_extract_zip(archive, dest)
    assert files == [dest / "a/b.txt", dest / "c.txt"]
    assert (dest / "a/b.txt").read_bytes() == b"hello"
    # A second extraction replaces the first, stale files included.
    (dest / "stale.txt").write_text("old")
    safe_extract_zip(archive, dest)
    assert _listing(dest) == ["a", "a/b.txt", "c.txt"]
    assert sorted(os.listdir(tmp_path)) == ["ok.zip", "out"]


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("../evil.txt", "contains '..'"),
        ("training/../../evil.txt", "contains '..'"),
        ("ABSOLUTE", "is an absolute path"),
        ("C:/evil.txt", "is an absolute path"),
    ],
)
def test_unsafe_entries_are_refused(tmp_path: Path, name: str, what: str):
    work = tmp_path / "work"
    work.mkdir()
    if name == "ABSOLUTE":
        name = str(tmp_path / "absolute_evil.txt")
    archive = _zip(work / "evil.zip", {"training/fine.txt": b"fine", name: b"evil"})
    with zipfile.ZipFile(archive) as zf:
        assert name in zf.namelist()
    with pytest.raises(ArchiveError) as info:
        safe_extract_zip(archive, work / "out")
    message = str(info.value)
    assert message.startswith(f"{archive}: entry {name!r}") and what in message
    assert sorted(os.listdir(work)) == ["evil.zip"]
    assert sorted(os.listdir(tmp_path)) == ["work"]


def test_symlink_entry_is_refused(tmp_path: Path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("training/link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="is a symbolic link"):
        safe_extract_zip(archive, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["link.zip"]


def test_truncated_zip_is_refused(kitti_zips, tmp_path: Path):
    images_zip, labels_zip = kitti_zips
    data = images_zip.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=rf"^{re.escape(str(truncated))}: not a readable zip"):
        safe_extract_zip(truncated, tmp_path / "out")
    with pytest.raises(ArchiveError):
        extract_kitti(truncated, labels_zip, tmp_path / "kitti")
    assert sorted(os.listdir(tmp_path)) == ["truncated.zip"]


def test_crc_error_is_refused(tmp_path: Path):
    payload = b"KITTI " * 100
    archive = _zip(tmp_path / "crc.zip", {"training/a.txt": b"fine", "training/b.txt": payload})
    data = bytearray(archive.read_bytes())
    offset = data.index(payload)
    data[offset + 10] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"entry 'training/b.txt' is corrupt .*CRC"):
        safe_extract_zip(archive, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["crc.zip"]


def test_failed_extraction_keeps_the_previous_one(kitti_zips, tmp_path: Path):
    out = tmp_path / "kitti"
    extract_kitti(*kitti_zips, out)
    before = _listing(out)
    bad = _zip(tmp_path / "bad.zip", {"../evil.txt": b"evil"})
    with pytest.raises(ArchiveError):
        extract_kitti(kitti_zips[0], bad, out)
    assert _listing(out) == before
    assert sorted(os.listdir(tmp_path)) == ["bad.zip", "kitti"]


def test_duplicate_entries_are_refused(tmp_path: Path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("a.txt", b"1")
        zf.writestr("a.txt", b"2")
    with pytest.raises(ArchiveError, match="appears twice"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
