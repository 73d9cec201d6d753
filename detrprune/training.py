"""Baseline training through mmengine's Runner (no hand-written loop)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.checkpoint import save_detector
from detrprune.model import build_training_config, register_mmdet

log = logging.getLogger(__name__)


def train_baseline(
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    *,
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    out_model: Path,
    out_config: Path,
    seed: int,
) -> None:
    """Train the baseline detector and write its checkpoint and resolved mmdet config.

    The Runner's own checkpoints stay in ``work_dir`` (not a workflow output); what the DAG
    passes on is ``out_model``, a weights-only checkpoint (see :mod:`detrprune.checkpoint`).
    """
    from mmengine.runner import Runner

    register_mmdet()
    torch.set_num_threads(int(train["threads"]))
    cfg = build_training_config(
        model,
        train,
        train_json=train_json,
        val_json=val_json,
        data_root=data_root,
        work_dir=work_dir,
        seed=seed,
    )
    runner = Runner.from_cfg(cfg)
    runner.train()
    detector = runner.model.module if hasattr(runner.model, "module") else runner.model
    save_detector(
        detector,
        out_model,
        cfg.model.to_dict(),
        meta={
            "variant": "baseline",
            "method": "baseline",
            "ratio": 0,
            "seed": seed,
            "iterations": int(train["max_iters"]),
        },
    )
    Path(out_config).parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out_config))
    log.info("baseline written to %s (config %s)", out_model, out_config)
