"""Shared fixtures: the micro study config and a tiny real mmdet Deformable DETR."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """This workflow's Snakemake command line on ``workdir``; ``args`` keep their order.

    Put targets before ``--configfile``/``--config``: both take several values.
    """
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        *args,
    ]


def run_snakemake(
    workdir: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` to completion, output captured."""
    return subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
    )


def checkpoint_resumable(pointer: Path) -> bool:
    """Whether the checkpoint a Runner's ``last_checkpoint`` names has its digest recorded
    (:mod:`detrprune.train.resume`), i.e. a rerun would resume from it."""
    try:
        target = pointer.read_text().strip()
    except FileNotFoundError:
        return False
    return bool(target) and Path(target + ".sha256").exists()


def kill_at_first_checkpoint(command: list[str], marker: Path, timeout: float = 600) -> None:
    """Start ``command`` in a session of its own and SIGKILL the whole session (as when a node
    dies) once the checkpoint ``marker`` (a Runner's ``last_checkpoint``) names is resumable."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while (
        not checkpoint_resumable(marker) and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert checkpoint_resumable(marker), f"{marker} never named a resumable checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def planned_jobs(run: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} ({} when nothing is to be done)."""
    text = run.stdout + run.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


# Every pruning kind and scope, plus a weight-pruning module choice: what reload tests sweep.
PRUNING_SPECS = [
    {"kind": "filter", "scope": "backbone"},
    {"kind": "filter", "scope": "backbone+ffn"},
    {"kind": "filter", "scope": "backbone+residual+ffn"},
    {"kind": "filter", "scope": "backbone+residual+ffn+attention"},
    {"kind": "filter", "scope": "backbone+points"},
    {
        "kind": "filter",
        "scope": "backbone+attention+points",
        "part_ratios": {"attention": 25, "points": 50},
    },
    {"kind": "weight", "scope": "layerwise"},
    {"kind": "weight", "scope": "global"},
    {"kind": "weight", "scope": "global", "modules": ["backbone", "encoder", "decoder"]},
]


def spec_id(spec: dict) -> str:
    return "-".join([spec["kind"], spec["scope"], *spec.get("modules", [])])


def default_config() -> dict:
    with open(REPO / "config.yaml") as handle:
        return yaml.safe_load(handle)


def micro_config() -> dict:
    """The default study shrunk to seconds: a dozen scenes, a few iterations, two ratios each."""
    config = default_config()
    config["dataset"]["synthetic"]["num_scenes"] = 12
    config["dataset"]["val_fraction"] = 0.25
    config["model"].update(
        embed_dims=32,
        num_heads=4,
        ffn_dims=64,
        num_queries=10,
        max_per_img=10,
        neck_gn_groups=8,
        encoder_layers=1,
        decoder_layers=1,
        input_scale=[256, 96],
    )
    config["train"].update(
        max_iters=4,
        batch_size=2,
        warmup_iters=1,
        checkpoint_interval=2,
        log_interval=1,
        val_interval=1,
    )
    config["pruning"]["methods"] = {
        "filter": {"kind": "filter", "scope": "backbone", "ratios": [20, 50]},
        "filter_ffn": {"kind": "filter", "scope": "backbone+ffn", "ratios": [50]},
        "weight": {"kind": "weight", "scope": "layerwise", "ratios": [30, 70]},
        "weight_global": {"kind": "weight", "scope": "global", "ratios": [50]},
    }
    config["pruning"]["finetune"].update(iters=2, warmup_iters=1)
    config["pruning"]["iterative"].update(
        method="filter_ffn", target_ratio=50, steps=2, finetune_iters=2, max_map_drop=1.0
    )
    config["evaluate"]["latency"].update(warmup=1, runs=10, rounds=5, images=2)
    config["evaluate"]["flops_images"] = 1
    return config


@pytest.fixture
def micro() -> dict:
    return copy.deepcopy(micro_config())


@pytest.fixture
def tiny_detector(micro):
    """A real, randomly initialised mmdet DeformableDETR at the micro size (eval mode)."""
    import torch

    from detrprune.train.model import build_detector, model_config

    torch.manual_seed(0)
    cfg = model_config(micro["model"])
    detector = build_detector(cfg)
    detector.init_weights()
    detector.eval()
    return detector, cfg


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory) -> dict:
    """A real KITTI-format dataset at the micro size, as the DAG's data rules make it."""
    from detrprune.data.archive import extract_kitti
    from detrprune.data.coco import kitti_to_coco
    from detrprune.data.synthetic import synthesize_kitti

    config = micro_config()
    folder = tmp_path_factory.mktemp("micro_data")
    synthetic = config["dataset"]["synthetic"]
    images, labels = synthesize_kitti(
        folder / "raw",
        num_scenes=synthetic["num_scenes"],
        seed=config["seed"],
        width=synthetic["width"],
        height=synthetic["height"],
    )
    root = folder / "kitti"
    extract_kitti(images, labels, root)
    train_json, val_json = folder / "coco" / "train.json", folder / "coco" / "val.json"
    kitti_to_coco(
        root,
        train_json,
        val_json,
        val_fraction=config["dataset"]["val_fraction"],
        seed=config["seed"],
        split="random",
    )
    return {"train_json": train_json, "val_json": val_json, "data_root": root}
