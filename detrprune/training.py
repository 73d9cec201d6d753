"""Training and fine-tuning by mmengine's Runner (no hand-written loop), resumable after a kill.

The Runner keeps periodic checkpoints (weights, optimizer, scheduler, iteration) in a work folder
that is not a workflow output, so Snakemake does not delete it when a job dies; a rerun resumes
from the latest one. Those files hold pickled mmengine objects, which ``torch.load`` refuses
since torch 2.6 (``weights_only=True``). They are loaded through one narrow, registered scheme
that accepts only the work folder's own checkpoints; everything the DAG passes between rules
stays weights-only (see :mod:`detrprune.checkpoint`).

Fine-tuning hands the Runner a pruned model through a registered builder
(:data:`PRUNED_MODEL_TYPE`) rather than a config it would initialise: ``Runner.train()`` calls
``init_weights()``, and mmdet's ``DeformableDETR.init_weights`` re-initialises the transformer
unconditionally, which would silently discard the weights being fine-tuned. For weight-pruned
models the gradients of the zeroed weights are masked, so those weights stay exactly zero.
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


PRUNED_MODEL_TYPE = "DetrpruneCheckpointModel"


def _keep_loaded_weights() -> None:
    """Stands in for ``init_weights`` of a model whose weights come from a checkpoint."""


def _register_checkpoint_model() -> None:
    """Register the builder of a model loaded from one of our checkpoints (for fine-tuning)."""
    from mmdet.registry import MODELS

    if PRUNED_MODEL_TYPE in MODELS.module_dict:
        return

    def build_from_checkpoint(checkpoint: str, keep_zeros: bool) -> torch.nn.Module:
        from detrprune.checkpoint import load_detector

        detector, _, _ = load_detector(Path(checkpoint))
        detector.train()
        if keep_zeros:
            attach_zero_masks(detector)
        # The instance attribute shadows DeformableDETR.init_weights for this object only.
        detector.init_weights = _keep_loaded_weights
        return detector

    MODELS.register_module(name=PRUNED_MODEL_TYPE, module=build_from_checkpoint)


ZERO_MASKS_ATTRIBUTE = "_detrprune_zero_masks"


def attach_zero_masks(detector: torch.nn.Module) -> int:
    """Keep every pruned (zero) weight at zero while training; returns how many are held.

    Their gradients are masked to zero. From a zero gradient at the first step on, AdamW (like
    SGD and Adam) leaves an exactly-zero weight exactly zero: its moments stay zero and weight
    decay scales zero. ``torch.nn.utils.prune``'s reparametrisation would not do:
    ``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, so that
    mask would never be re-applied. :func:`check_zeros_kept` verifies the result.
    """
    from detrprune.pruning import prunable_weights

    masks: dict[str, torch.Tensor] = {}
    for name, module, param in prunable_weights(detector):
        weight = getattr(module, param)
        mask = weight != 0
        if not bool(mask.all()):
            weight.register_hook(lambda grad, mask=mask: grad * mask)
            masks[name] = mask
    setattr(detector, ZERO_MASKS_ATTRIBUTE, masks)
    held = sum(int((~m).sum()) for m in masks.values())
    log.info("fine-tuning keeps %d pruned weights at zero", held)
    return held


def check_zeros_kept(detector: torch.nn.Module) -> None:
    """Raise if a weight held by :func:`attach_zero_masks` is no longer exactly +0.0."""
    from detrprune.pruning import prunable_weights

    masks = getattr(detector, ZERO_MASKS_ATTRIBUTE, {})
    for name, module, param in prunable_weights(detector):
        if name in masks:
            pruned = getattr(module, param).detach()[~masks[name]]
            if bool((pruned != 0).any()) or bool(torch.signbit(pruned).any()):
                raise RuntimeError(f"fine-tuning moved pruned weights of {name} away from zero")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    detector, _ = _run(cfg, Path(work_dir))
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


class _RngStateKeeper:
    """Hook: save torch's RNG state with each checkpoint and restore it when training resumes.

    mmengine's resume re-seeds every generator and replays the data loader up to the resumed
    iteration, which brings numpy's and Python's generators (used by the data pipeline) back to
    where they were. Torch's generator is also drawn by the model's forward (dropout), which the
    replay does not run; it is restored just before the first resumed iteration so that a
    resumed run computes exactly what an uninterrupted one does.
    """

    priority = "VERY_LOW"
    KEY = "detrprune_torch_rng_state"

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = torch.get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            torch.set_rng_state(self._pending)
            self._pending = None


def _register_hook(name: str, behaviour: type) -> str:
    """Register ``behaviour`` (a plain class) as an mmengine Hook named ``name``, once."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    if name not in HOOKS.module_dict:
        HOOKS.register_module(name=name, module=type(name, (behaviour, Hook), {}))
    return name


def _run(cfg, work_dir: Path, stamp_extra: str = "") -> tuple[torch.nn.Module, list[dict]]:
    """Train with the Runner, resuming from ``work_dir``; returns the model and val results."""
    from mmengine.runner import Runner

    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []),
        dict(type=_register_hook("DetrpruneRngStateKeeper", _RngStateKeeper)),
    ]
    cfg_text = json.dumps(cfg.to_dict(), sort_keys=True, default=str) + stamp_extra
    latest = _prepare_work_dir(work_dir, cfg_text)
    if latest is not None:
        _register_work_dir_loader()
        cfg.resume = True
        cfg.load_from = WORK_DIR_SCHEME + str(latest)
        log.info("resuming from %s", latest)
    runner = Runner.from_cfg(cfg)
    runner.train()
    detector = runner.model.module if hasattr(runner.model, "module") else runner.model
    recorder = next((h for h in runner.hooks if isinstance(h, _ValRecorder)), None)
    return detector, (recorder.records if recorder else [])


class _ValRecorder:
    """Hook: validate once before the first iteration, and keep every validation's metrics.

    mmengine's loop validates only after iterations; the "before" number shows what the Runner
    starts from, so a model reset by the Runner (see the module docstring) shows up at once.
    """

    priority = "LOW"

    def __init__(self) -> None:
        self.records: list[dict] = []

    def before_train(self, runner) -> None:
        if runner.iter == 0:
            runner.val_loop.run()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.records.append({"iter": int(runner.iter), **dict(metrics or {})})


def finetune_checkpoint(
    pruned: Path,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    finetune: Mapping[str, Any],
    *,
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    out_model: Path,
    seed: int,
    validate: bool = False,
    variant: str | None = None,
) -> dict[str, Any]:
    """Fine-tune a pruned checkpoint for ``finetune["iters"]`` iterations and save the result.

    Weight-pruned models (meta kind "weight") keep their zeros. With ``validate`` the Runner
    evaluates COCO AP before the first iteration and after the last; their metrics are returned
    under ``"validations"`` (empty otherwise: the evaluate rule measures the saved model).
    """
    from detrprune.checkpoint import read_checkpoint

    register_mmdet()
    torch.set_num_threads(int(train["threads"]))
    _, pruned_model_cfg, meta = read_checkpoint(Path(pruned))
    settings = {
        **train,
        "max_iters": int(finetune["iters"]),
        "lr": float(finetune["lr"]),
        "warmup_iters": int(finetune["warmup_iters"]),
        "checkpoint_interval": min(int(train["checkpoint_interval"]), int(finetune["iters"])),
        "val_interval": 0,
    }
    cfg = build_training_config(
        model,
        settings,
        train_json=train_json,
        val_json=val_json,
        data_root=data_root,
        work_dir=work_dir,
        seed=seed,
    )
    cfg.model = dict(
        type=PRUNED_MODEL_TYPE,
        checkpoint=str(pruned),
        keep_zeros=meta.get("kind") == "weight",
    )
    _register_checkpoint_model()
    if validate:
        cfg.custom_hooks = [dict(type=_register_hook("DetrpruneValRecorder", _ValRecorder))]
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    # The input checkpoint's content is part of the stamp: a re-pruned input restarts.
    detector, validations = _run(cfg, Path(work_dir), stamp_extra=_sha256(Path(pruned)))
    check_zeros_kept(detector)
    detector.eval()
    meta = {
        **meta,
        "variant": variant or str(meta.get("variant", "")).replace("prune/", "finetune/", 1),
        "finetuned": True,
        "finetune": {key: finetune[key] for key in ("iters", "lr", "warmup_iters")},
    }
    save_detector(detector, out_model, pruned_model_cfg, meta)
    log.info("fine-tuned model written to %s", out_model)
    return {"meta": meta, "validations": validations}
