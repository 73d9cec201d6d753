"""Training and fine-tuning by mmengine's Runner (no hand-written loop), resumable after a kill.

The Runner keeps periodic checkpoints (weights, optimizer, scheduler, iteration) in a work folder
that is not a workflow output, so Snakemake does not delete it when a job dies; a rerun resumes
from the latest one. Those files hold pickled mmengine objects, which ``torch.load`` refuses
since torch 2.6 (``weights_only=True``). They are loaded through one narrow, registered scheme
that accepts only the work folder's own checkpoints; everything the DAG passes between rules
stays weights-only (see :mod:`detrprune.train.checkpoint`).

Fine-tuning hands the Runner a pruned model through a registered builder
(:data:`PRUNED_MODEL_TYPE`) rather than a config it would initialise: ``Runner.train()`` calls
``init_weights()``, and mmdet's ``DeformableDETR.init_weights`` re-initialises the transformer
unconditionally, which would silently discard the weights being fine-tuned. For weight-pruned
models the gradients of the zeroed weights are masked, so those weights stay exactly zero.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.data.download import sha256_file
from detrprune.train.checkpoint import save_detector
from detrprune.train.distributed import configure_runner, in_worker, is_main_process, launch
from detrprune.train.hooks import RngStateKeeper, ValRecorder, register_hook, write_validations
from detrprune.train.model import build_training_config, register_mmdet
from detrprune.train.pretrained import PretrainedStart, init_files

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
    from detrprune.prune.methods import prunable_weights

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
    from detrprune.prune.methods import prunable_weights

    for name, module, param in prunable_weights(detector):
        keep = getattr(module, param + ZERO_MASK_SUFFIX, None)
        if keep is not None:
            pruned = getattr(module, param).detach()[~keep]
            if bool((pruned != 0).any()) or bool(torch.signbit(pruned).any()):
                raise RuntimeError(f"fine-tuning moved pruned weights of {name} away from zero")


# The mmengine config entries of RUN_ONLY_TRAIN_KEYS (detrprune.config): a change of these
# resumes the work folder instead of wiping it (days of checkpoints at full size).
_RESUME_NEUTRAL_CFG = (
    ("default_hooks", "logger", "interval"),
    ("default_hooks", "checkpoint", "interval"),
    ("train_dataloader", "num_workers"),
    ("train_dataloader", "persistent_workers"),
    ("val_dataloader", "num_workers"),
    ("val_dataloader", "persistent_workers"),
    ("test_dataloader", "num_workers"),
    ("test_dataloader", "persistent_workers"),
    ("work_dir",),
    ("log_level",),
)
# Config values naming a file whose content, not its path, decides the result (the train/val
# JSON, a fine-tuned input model, the pretrained starts of model.init).
_CONTENT_KEYS = ("ann_file", "checkpoint", "backbone", "detector")


def resume_stamp(settings: Mapping[str, Any], files: Any = ()) -> str:
    """A digest of what decides a run's result, so that a work folder is resumed only by the
    run it belongs to: ``settings`` (JSON), the content of every file in ``files`` and of every
    file a :data:`_CONTENT_KEYS` value in ``settings`` names (its path does not count), and this
    package's version."""
    from detrprune import __version__

    def content(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                key: (
                    _file_digest(item)
                    if key in _CONTENT_KEYS and isinstance(item, str | Path)
                    else content(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [content(item) for item in value]
        return value

    digest = hashlib.sha256(__version__.encode())
    digest.update(json.dumps(content(settings), sort_keys=True, default=str).encode())
    for path in files:
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


def _file_digest(value: str | Path) -> str:
    """sha256 of the file a config value names (a checkpoint scheme prefix removed), or the
    value itself where it names no file."""
    path = Path(str(value).split("://", 1)[-1])
    return f"sha256:{sha256_file(path)}" if str(value) and path.is_file() else str(value)


def training_stamp(cfg, processes: int = 1) -> str:
    """:func:`resume_stamp` of an mmengine training config, resume-neutral values removed;
    ``processes`` (data-parallel ranks) sets the total batch, so it is part of it."""
    settings = {**cfg.to_dict(), "data_parallel_processes": processes}
    for path in _RESUME_NEUTRAL_CFG:
        parent = settings
        for key in path[:-1]:
            parent = parent.get(key) or {}
        parent.pop(path[-1], None)
    return resume_stamp(settings)


def prepare_work_dir(work_dir: Path, stamp: str) -> str | None:
    """The latest checkpoint to resume from, or None; a work dir of another run is wiped."""
    from mmengine.runner import find_latest_checkpoint

    stamp_file = work_dir / CONFIG_STAMP
    if work_dir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        log.info(
            "%s holds checkpoints of another configuration or input: starting afresh", work_dir
        )
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    latest = find_latest_checkpoint(str(work_dir))
    if latest is not None and Path(latest).resolve().parent != work_dir.resolve():
        raise RuntimeError(f"{work_dir}: last_checkpoint points outside the work dir: {latest}")
    return latest


def keep_final_checkpoint(work_dir: Path) -> int:
    """Delete a finished run's earlier Runner checkpoints from ``work_dir``; returns bytes freed.

    Each holds the weights and AdamW's two moments (three times the model: about 490 MB for
    the full R50 model) and served only to resume a killed run. The final one stays: a rerun
    whose settings changed only in what :func:`training_stamp` ignores resumes from it
    instead of training again.
    """
    from mmengine.runner import find_latest_checkpoint

    latest = find_latest_checkpoint(str(work_dir))
    if latest is None:
        return 0
    final = Path(latest).resolve()
    freed = 0
    for earlier in sorted(Path(work_dir).glob("iter_*.pth")):
        if earlier.resolve() != final:
            freed += earlier.stat().st_size
            earlier.unlink()
    if freed:
        log.info("%s: removed the earlier resume checkpoints (%.0f MB)", work_dir, freed / 1e6)
    return freed


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
        "out_config seed validate variant out_validations"
    ).split()
    return {name: frame_locals[name] for name in names if name in frame_locals}


def _run(cfg, work_dir: Path, processes: int = 1) -> tuple[torch.nn.Module, list[dict]]:
    """Train with the Runner, resuming from ``work_dir``; returns the model and val results.

    In a data-parallel worker (:mod:`detrprune.train.distributed`) the launching process has already
    prepared the work folder; the worker only finds the checkpoint to resume from.
    """
    from mmengine.runner import Runner, find_latest_checkpoint

    if in_worker():
        configure_runner(cfg)
        latest = find_latest_checkpoint(str(work_dir))
    else:
        latest = prepare_work_dir(work_dir, training_stamp(cfg, processes))
    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []),
        dict(type=register_hook("DetrpruneRngStateKeeper", RngStateKeeper)),
    ]
    # mmengine keeps one logger, MessageHub and visualiser per name, and reuses an existing one:
    # the recipe names its visualiser "visualizer", the others are named after the second the
    # Runner started. A second Runner in one process (a resumed finished run, the iterative
    # loop's steps, the tests) would write into the first one's (possibly deleted) folder.
    cfg.experiment_name = f"detrprune-{uuid.uuid4().hex[:12]}"
    if cfg.get("visualizer"):
        cfg.visualizer["name"] = cfg.experiment_name
    if latest is not None:
        _register_work_dir_loader()
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
