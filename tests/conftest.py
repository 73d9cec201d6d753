"""Shared fixtures: the micro study config and a tiny real mmdet Deformable DETR."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


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
