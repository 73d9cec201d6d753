"""Shared fixtures: the micro study config and a tiny real mmdet Deformable DETR."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
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
        max_iters=4, batch_size=2, warmup_iters=1, checkpoint_interval=2, log_interval=1
    )
    config["pruning"]["filter"]["ratios"] = [20, 50]
    config["pruning"]["weight"]["ratios"] = [30, 70]
    config["evaluate"]["latency"].update(warmup=1, runs=20)
    config["evaluate"]["flops_images"] = 1
    return config


@pytest.fixture
def micro() -> dict:
    return copy.deepcopy(micro_config())


@pytest.fixture
def tiny_detector(micro):
    """A real, randomly initialised mmdet DeformableDETR at the micro size (eval mode)."""
    import torch

    from detrprune.model import build_detector, model_config

    torch.manual_seed(0)
    cfg = model_config(micro["model"])
    detector = build_detector(cfg)
    detector.init_weights()
    detector.eval()
    return detector, cfg
