"""Training and fine-tuning by mmengine's Runner (no hand-written loop), resumable after a kill.

The Runner keeps periodic checkpoints in a work folder that is not a workflow output, so a
rerun resumes a killed job; :mod:`detrprune.train.resume` decides which checkpoint (only one
whose sha256 was recorded at its save is unpickled). Everything the DAG passes between rules
stays weights-only (see :mod:`detrprune.train.checkpoint`).

Fine-tuning hands the Runner a pruned model through a registered builder
(:data:`PRUNED_MODEL_TYPE`) rather than a config it would initialise: ``Runner.train()`` calls
``init_weights()``, and mmdet's ``DeformableDETR.init_weights`` re-initialises the transformer
unconditionally, which would silently discard the weights being fine-tuned. For weight-pruned
models the gradients of the zeroed weights are masked, so those weights stay exactly zero.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.train.checkpoint import save_detector
from detrprune.train.distributed import configure_runner, in_worker, is_main_process, launch
from detrprune.train.hooks import RngStateKeeper, ValRecorder, register_hook, write_validations
from detrprune.train.model import build_training_config, register_mmdet
from detrprune.train.pretrained import PretrainedStart
from detrprune.train.pretrained_files import init_files
from detrprune.train.resume import (
    WORK_DIR_SCHEME,
    CheckpointDigests,
    keep_final_checkpoint,
    prepare_work_dir,
    register_work_dir_loader,
    resumable_checkpoint,
    training_stamp,
)

log = logging.getLogger(__name__)

PRUNED_MODEL_TYPE = "DetrpruneCheckpointModel"


def _keep_loaded_weights() -> None:
    """Stands in for ``init_weights`` of a model whose weights come from a checkpoint."""


def _register_checkpoint_model() -> None:
    """Register the builder of a model loaded from one of our checkpoints (for fine-tuning)."""
    from mmdet.registry import MODELS

    if PRUNED_MODEL_TYPE in MODELS.module_dict:
        return

    def build_from_checkpoint(checkpoint: str, keep_zeros: bool) -> torch.nn.Module:
        from detrprune.train.checkpoint import load_detector

        detector, _, _ = load_detector(Path(checkpoint))
        detector.train()
        if keep_zeros:
            attach_zero_masks(detector)
        # The instance attribute shadows DeformableDETR.init_weights for this object only.
        detector.init_weights = _keep_loaded_weights
        return detector

    MODELS.register_module(name=PRUNED_MODEL_TYPE, module=build_from_checkpoint)


ZERO_MASK_SUFFIX = "_detrprune_keep"


def _masked_gradient(module: torch.nn.Module, buffer: str, grad: torch.Tensor) -> torch.Tensor:
    # The mask is read from the module when the gradient arrives, so it is on the device the
    # Runner moved the model to (a mask captured at attach time stays on the CPU).
    return grad * getattr(module, buffer)


def attach_zero_masks(detector: torch.nn.Module) -> int:
    """Keep every pruned (zero) weight at zero while training; returns how many are held.

    Each pruned weight's keep-mask is a non-persistent buffer of its module (it moves with the
    model, and stays out of the state dict), and the gradients of trainable pruned weights are
    multiplied by it. From a zero gradient at the first step on, AdamW (like SGD and Adam)
    leaves an exactly-zero weight exactly zero: its moments stay zero and weight decay scales
    zero. Frozen weights (``frozen_stages``) get no gradient, hence no hook; they are checked
    like the others. ``torch.nn.utils.prune``'s reparametrisation would not do:
    ``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, so that
    mask would never be re-applied. :func:`check_zeros_kept` verifies the result.
    """
    from detrprune.prune.weights import prunable_weights

    held = frozen = 0
    for _, module, param in prunable_weights(detector):
        weight = getattr(module, param)
        keep = weight.detach() != 0
        if bool(keep.all()):
            continue
        buffer = param + ZERO_MASK_SUFFIX
        module.register_buffer(buffer, keep, persistent=False)
        if weight.requires_grad:
            weight.register_hook(functools.partial(_masked_gradient, module, buffer))
        else:
            frozen += int((~keep).sum())
        held += int((~keep).sum())
    log.info("fine-tuning keeps %d pruned weights at zero (%d of them frozen)", held, frozen)
    return held


def check_zeros_kept(detector: torch.nn.Module) -> None:
    """Raise if a weight held by :func:`attach_zero_masks` is no longer exactly +0.0."""
    from detrprune.prune.weights import prunable_weights

    for name, module, param in prunable_weights(detector):
        keep = getattr(module, param + ZERO_MASK_SUFFIX, None)
        if keep is not None:
            pruned = getattr(module, param).detach()[~keep]
            if bool((pruned != 0).any()) or bool(torch.signbit(pruned).any()):
                raise RuntimeError(f"fine-tuning moved pruned weights of {name} away from zero")


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
    out_validations: Path | None = None,
) -> None:
    """Train the baseline detector and write its checkpoint and resolved mmdet config.

    The Runner's own checkpoints stay in ``work_dir`` (not a workflow output; once the run has
    finished, only its final one, :func:`keep_final_checkpoint`); what the DAG
    passes on is ``out_model``, a weights-only checkpoint (see :mod:`detrprune.train.checkpoint`).
    The Runner validates before the first iteration, every ``train.val_interval`` iterations
    and after the last; ``out_validations`` gets those results (:func:`write_validations`), the
    training curve the report judges convergence from.
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
    if init_files(model.get("init")):
        hook = register_hook("DetrprunePretrainedStart", PretrainedStart)
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type=hook, **model["init"])]
    if out_validations is not None:
        recorder = register_hook("DetrpruneValRecorder", ValRecorder)
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type=recorder)]
    processes = int(train.get("gpus", 1))
    if processes > 1 and not in_worker():
        prepare_work_dir(Path(work_dir), training_stamp(cfg, processes))
        launch("detrprune.train.runner:train_baseline", processes, _call_arguments(locals()))
        return
    detector, validations = _run(cfg, Path(work_dir), processes)
    if not is_main_process():
        return
    if out_validations is not None:
        write_validations(validations, Path(out_validations))
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
            "train_device": _device_of(detector),
        },
    )
    Path(out_config).parent.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(out_config))
    log.info("baseline written to %s (config %s)", out_model, out_config)
    keep_final_checkpoint(Path(work_dir))


def _device_of(detector: torch.nn.Module) -> str:
    """Where the Runner trained ``detector`` (e.g. ``cuda:0``): recorded in the checkpoint."""
    return str(next(detector.parameters()).device)


def _call_arguments(frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a public training function was called with, for its data-parallel
    workers (the function's own locals, taken at its start)."""
    names = (
        "pruned model train finetune train_json val_json data_root work_dir out_model "
        "out_config seed validate variant out_validations iterations"
    ).split()
    return {name: frame_locals[name] for name in names if name in frame_locals}


def _run(cfg, work_dir: Path, processes: int = 1) -> tuple[torch.nn.Module, list[dict]]:
    """Train with the Runner, resuming from ``work_dir``; returns the model and val results.

    In a data-parallel worker (:mod:`detrprune.train.distributed`) the launching process has already
    prepared the work folder; the worker only finds the checkpoint to resume from.
    """
    from mmengine.runner import Runner

    if in_worker():
        configure_runner(cfg)
        latest = resumable_checkpoint(work_dir)
    else:
        latest = prepare_work_dir(work_dir, training_stamp(cfg, processes))
    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []),
        dict(type=register_hook("DetrpruneRngStateKeeper", RngStateKeeper)),
        dict(type=register_hook("DetrpruneCheckpointDigests", CheckpointDigests)),
    ]
    # mmengine keeps one logger, MessageHub and visualiser per name, and reuses an existing one:
    # the recipe names its visualiser "visualizer", the others are named after the second the
    # Runner started. A second Runner in one process (a resumed finished run, the iterative
    # loop's steps, the tests) would write into the first one's (possibly deleted) folder.
    cfg.experiment_name = f"detrprune-{uuid.uuid4().hex[:12]}"
    if cfg.get("visualizer"):
        cfg.visualizer["name"] = cfg.experiment_name
    if latest is not None:
        register_work_dir_loader()
        cfg.resume = True
        cfg.load_from = WORK_DIR_SCHEME + str(latest)
        log.info("resuming from %s", latest)
    runner = Runner.from_cfg(cfg)
    runner.train()
    detector = runner.model.module if hasattr(runner.model, "module") else runner.model
    recorder = next((h for h in runner.hooks if isinstance(h, ValRecorder)), None)
    return detector, (recorder.records if recorder else [])


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
    from detrprune.train.checkpoint import read_checkpoint

    arguments = _call_arguments(locals())
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
        cfg.custom_hooks = [dict(type=register_hook("DetrpruneValRecorder", ValRecorder))]
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    processes = int(train.get("gpus", 1))
    if processes > 1 and not in_worker():
        # The input checkpoint's content is part of the stamp: a re-pruned input restarts.
        prepare_work_dir(Path(work_dir), training_stamp(cfg, processes))
        return launch("detrprune.train.runner:finetune_checkpoint", processes, arguments)
    detector, validations = _run(cfg, Path(work_dir), processes)
    check_zeros_kept(detector)
    detector.eval()
    meta = {
        **meta,
        "variant": variant or str(meta.get("variant", "")).replace("prune/", "finetune/", 1),
        "finetuned": True,
        "finetune": {key: finetune[key] for key in ("iters", "lr", "warmup_iters")},
        "train_device": _device_of(detector),
    }
    if not is_main_process():
        return {"meta": meta, "validations": validations}
    save_detector(detector, out_model, pruned_model_cfg, meta)
    log.info("fine-tuned model written to %s", out_model)
    keep_final_checkpoint(Path(work_dir))
    return {"meta": meta, "validations": validations}


def train_scratch(
    pruned: Path,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    iterations: int,
    *,
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    out_model: Path,
    seed: int,
    variant: str,
) -> dict[str, Any]:
    """Train the scratch twin of a filter-pruned checkpoint (:mod:`detrprune.train.scratch`): its
    shapes, freshly initialised, trained with the baseline's recipe for ``iterations`` (the
    schedule stretched to them) and saved as ``variant``."""
    from detrprune.train.checkpoint import read_checkpoint
    from detrprune.train.scratch import (
        SCRATCH_MODEL_TYPE,
        register_scratch_twin,
        stretched_schedule,
    )

    arguments = _call_arguments(locals())
    register_mmdet()
    torch.set_num_threads(int(train["threads"]))
    _, pruned_model_cfg, pruned_meta = read_checkpoint(Path(pruned))
    settings = stretched_schedule(train, iterations)
    cfg = build_training_config(
        model,
        settings,
        train_json=train_json,
        val_json=val_json,
        data_root=data_root,
        work_dir=work_dir,
        seed=seed,
    )
    cfg.model = dict(type=SCRATCH_MODEL_TYPE, checkpoint=str(pruned))
    register_scratch_twin()
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    processes = int(train.get("gpus", 1))
    if processes > 1 and not in_worker():
        prepare_work_dir(Path(work_dir), training_stamp(cfg, processes))
        return launch("detrprune.train.runner:train_scratch", processes, arguments)
    detector, _ = _run(cfg, Path(work_dir), processes)
    detector.eval()
    meta = {key: pruned_meta[key] for key in ("kind", "scope", "ratio", "pruning")}
    meta.update(
        # Its own series in the summary (scratch/<method>), beside the method's pruned models.
        method=variant.rsplit("/", 1)[0],
        pruned_from=pruned_meta["variant"],
        variant=variant,
        seed=seed,
        finetuned=False,
        scratch={"iterations": int(iterations), "warmup_iters": settings["warmup_iters"]},
        iterations=int(iterations),
        train_device=_device_of(detector),
    )
    if not is_main_process():
        return {"meta": meta}
    save_detector(detector, out_model, pruned_model_cfg, meta)
    log.info("scratch twin written to %s", out_model)
    keep_final_checkpoint(Path(work_dir))
    return {"meta": meta}
