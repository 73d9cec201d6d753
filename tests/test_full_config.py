"""The full study's config (configs/kitti.yaml): the real-size model and its DAG."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.config import validate_config
from detrprune.model import build_detector, inference_batch, model_config

from .conftest import REPO, default_config, planned_jobs, run_snakemake

SAMPLE_IMAGES = REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2"


def full_config() -> dict:
    """config.yaml overridden by configs/kitti.yaml, as `--configfile` does."""
    config = default_config()
    with open(REPO / "configs" / "kitti.yaml") as handle:
        _merge(config, yaml.safe_load(handle))
    return config


def _merge(base: dict, override: dict) -> None:
    """Snakemake's --configfile merge: nested mappings key by key, everything else replaced."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def test_full_config_is_valid():
    config = full_config()
    validate_config(config)
    assert config["dataset"]["source"] == "kitti" and config["kitti"]["split"] == "standard"


@pytest.mark.slow
def test_full_model_runs_on_a_real_kitti_frame():
    config = full_config()["model"]
    torch.manual_seed(0)
    detector = build_detector(model_config(config))
    detector.init_weights()
    detector.eval()
    params = sum(p.numel() for p in detector.parameters())
    assert 39e6 < params < 42e6  # ResNet-50 Deformable DETR, two-stage with box refinement
    batch = inference_batch([SAMPLE_IMAGES / "000001.png"], tuple(config["input_scale"]))
    assert tuple(batch["inputs"][0].shape) == (3, 375, 1242)
    with torch.no_grad():
        result = detector.test_step(batch)[0]
    assert result.ori_shape == (375, 1242)
    boxes = result.pred_instances.bboxes
    assert boxes.shape == (config["max_per_img"], 4) and torch.isfinite(boxes).all()


def _dry_run(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    # The target goes before --configfile/--config: both take several values.
    return run_snakemake(
        workdir,
        "results/report.pdf",
        "-n",
        "--configfile",
        str(REPO / "configs" / "kitti.yaml"),
        *extra,
        timeout=300,
    )


def test_full_study_dag_lists_every_job(tmp_path):
    run = _dry_run(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {
        "download_kitti": 2,
        "extract_kitti": 1,
        "kitti_to_coco": 1,
        "train_baseline": 1,
        # filter 5 + filter_ffn 5 + filter_all 2 + weight 9 + weight_global 1
        # + weight_backbone 1 ratios
        "prune": 23,
        "finetune": 23,
        "iterative": 1,
        "evaluate": 48,  # baseline + 23 zero-shot + 23 fine-tuned + iterative
        "export_onnx": 7,  # the final model of each of the 6 methods + iterative
        "aggregate": 1,
        "report": 1,
    }


def test_archives_dir_skips_the_download(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    for name in ("data_object_image_2.zip", "data_object_label_2.zip"):
        (archives / name).write_bytes(b"PK")
    run = _dry_run(tmp_path, "--config", f"kitti={{archives_dir: {archives}}}")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run)
    assert "download_kitti" not in jobs and jobs["extract_kitti"] == 1
    assert str(archives / "data_object_image_2.zip") in run.stdout


def test_rules_declare_memory_and_time_from_config(tmp_path):
    run = _dry_run(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = run.stdout.split("\nrule ")
    full = yaml.safe_load((REPO / "configs" / "kitti.yaml").read_text())["resources"]
    for rule in ("train_baseline", "prune", "finetune", "iterative", "evaluate", "export_onnx"):
        job = next(j for j in jobs if j.startswith(f"{rule}:"))
        resources = job.split("resources:", 1)[1].splitlines()[0]
        assert f"mem_mb={full[rule]['mem_mb']}" in resources, (rule, resources)
        assert f"runtime={full[rule]['runtime']}" in resources, (rule, resources)
