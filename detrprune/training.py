"""Baseline training through mmengine's Runner (no hand-written loop), resumable after a kill.

The Runner keeps periodic checkpoints (weights, optimizer, scheduler, iteration) in a work folder
that is not a workflow output, so Snakemake does not delete it when a job dies; a rerun resumes
from the latest one. Those files hold pickled mmengine objects, which ``torch.load`` refuses
since torch 2.6 (``weights_only=True``). They are loaded through one narrow, registered scheme
that accepts only the work folder's own checkpoints; everything the DAG passes between rules
stays weights-only (see :mod:`detrprune.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.checkpoint import save_detector
from detrprune.model import build_training_config, register_mmdet

log = logging.getLogger(__name__)

WORK_DIR_SCHEME = "detrprune-workdir://"
CONFIG_STAMP = "detrprune-config.sha256"


def _register_work_dir_loader() -> None:
    """Let the Runner resume from its own checkpoints (trusted: this workflow wrote them)."""
    from mmengine.runner import CheckpointLoader

    if WORK_DIR_SCHEME in CheckpointLoader._schemes:
        return

    @CheckpointLoader.register_scheme(prefixes=WORK_DIR_SCHEME)
    def load_own_checkpoint(filename: str, map_location=None):
        return torch.load(
            filename[len(WORK_DIR_SCHEME) :], map_location=map_location, weights_only=False
        )


def _prepare_work_dir(work_dir: Path, cfg_text: str) -> str | None:
    """The latest checkpoint to resume from, or None; a work dir of another config is wiped."""
    from mmengine.runner import find_latest_checkpoint

    stamp = hashlib.sha256(cfg_text.encode()).hexdigest()
    stamp_file = work_dir / CONFIG_STAMP
    if work_dir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        log.info("%s holds checkpoints of another configuration: starting afresh", work_dir)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    latest = find_latest_checkpoint(str(work_dir))
    if latest is not None and Path(latest).resolve().parent != work_dir.resolve():
        raise RuntimeError(f"{work_dir}: last_checkpoint points outside the work dir: {latest}")
    return latest


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
    work_dir = Path(work_dir)
    latest = _prepare_work_dir(work_dir, json.dumps(cfg.to_dict(), sort_keys=True, default=str))
    if latest is not None:
        _register_work_dir_loader()
        cfg.resume = True
        cfg.load_from = WORK_DIR_SCHEME + str(latest)
        log.info("resuming from %s", latest)
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
