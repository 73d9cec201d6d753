"""`dataset.source: kitti` end to end on real frames: HTTP download, extraction, COCO conversion.

The six real KITTI frames in tests/data are packed into archives with the official layout and
served from 127.0.0.1; the real Snakemake DAG downloads, verifies, extracts and converts them.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, micro_config, planned_jobs, run_snakemake
from .http_server import serve

SAMPLE = REPO / "tests" / "data" / "kitti_sample" / "training"

pytestmark = pytest.mark.slow


def kitti_archives() -> dict[str, bytes]:
    """The two official archives' layout, built from the real sample (plus a testing/ image)."""
    archives = {}
    for name, folder, suffix in (("image", "image_2", ".png"), ("label", "label_2", ".txt")):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for file in sorted((SAMPLE / folder).glob(f"*{suffix}")):
                archive.write(file, f"training/{folder}/{file.name}")
            if name == "image":  # the real image archive also holds the unlabelled test split
                archive.write(SAMPLE / folder / "000000.png", "testing/image_2/000000.png")
        archives[f"/data_object_{name}_2.zip"] = buffer.getvalue()
    return archives


def run_to_coco(workdir: Path, kitti: dict) -> subprocess.CompletedProcess:
    config = micro_config()
    config["dataset"]["source"] = "kitti"
    config["kitti"].update(kitti)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(workdir, "data/coco/train.json", "data/coco/val.json", "--cores", "2")


def test_download_extract_convert_real_frames(tmp_path):
    files = kitti_archives()
    with serve(files) as server:
        sha = {
            f"{k}s": hashlib.sha256(files[f"/data_object_{k}_2.zip"]).hexdigest()
            for k in ("image", "label")
        }
        run = run_to_coco(
            tmp_path,
            {
                "urls": {
                    "images": server.url("/data_object_image_2.zip"),
                    "labels": server.url("/data_object_label_2.zip"),
                },
                "sha256": sha,
            },
        )
    assert run.returncode == 0, run.stderr[-4000:]
    raw = tmp_path / "data" / "raw" / "kitti"
    assert (raw / "data_object_image_2.zip").read_bytes() == files["/data_object_image_2.zip"]
    train = json.loads((tmp_path / "data" / "coco" / "train.json").read_text())
    val = json.loads((tmp_path / "data" / "coco" / "val.json").read_text())
    # The standard split: 000000 and 000003 are train frames, the other four val frames.
    assert sorted(im["id"] for im in train["images"]) == [0, 3]
    assert sorted(im["id"] for im in val["images"]) == [1, 2, 4, 5]
    assert {im["id"]: (im["width"], im["height"]) for im in train["images"]}[0] == (1224, 370)
    extract_log = (tmp_path / "logs" / "extract_kitti.log").read_text()
    assert "skipped_entries" in extract_log or "skipped" in extract_log
    # How a download copes with the network is not what it gets: a change of kitti.retries
    # downloads nothing again (and so retrains nothing).
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["kitti"]["retries"] += 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(tmp_path, "data/coco/train.json", "data/coco/val.json", "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {}


def test_sha256_mismatch_fails_the_download_job(tmp_path):
    files = kitti_archives()
    with serve(files) as server:
        run = run_to_coco(
            tmp_path,
            {
                "urls": {
                    "images": server.url("/data_object_image_2.zip"),
                    "labels": server.url("/data_object_label_2.zip"),
                },
                "sha256": {"images": "0" * 64, "labels": None},
            },
        )
    assert run.returncode != 0
    log = (tmp_path / "logs" / "download_kitti" / "image.log").read_text()
    assert "sha256 mismatch" in log
    assert not (tmp_path / "data" / "raw" / "kitti" / "data_object_image_2.zip").exists()
