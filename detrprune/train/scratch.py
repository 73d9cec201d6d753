"""Scratch twins: a pruned model's architecture, freshly initialised and trained like the baseline.

Liu et al. ("Rethinking the Value of Network Pruning", ICLR 2019) asked of structured pruning
whether the pruned architecture, trained from scratch, does as well as the pruned-and-fine-tuned
model. A scratch twin answers it for one target: the pruned checkpoint lends only its shapes
(every layer's width, every attention layer's heads and sampling points); the weights are drawn
as the baseline's were (the modules' own initialisation at the new widths, then the detector's
``init_weights``, under the training seed), and the baseline's recipe trains it for a budget
named as in the paper:

* ``e`` (``scratch/<method>/r<ratio>``): the baseline's iterations plus the fine-tune's, i.e. as
  many training images as the pruned model saw in both;
* ``b`` (``scratch_b/<method>/r<ratio>``): the same training compute, i.e. ``e`` scaled by the
  baseline's GMACs over the pruned model's.

The lr schedule stretches with the iterations: the warm-up and the lr drop come at the same
fractions of the run as in the baseline's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

from detrprune.variants import SCRATCH_FOLDERS

SCRATCH_MODEL_TYPE = "DetrpruneScratchTwin"


def scratch_iterations(
    budget: str,
    baseline_iters: int,
    finetune_iters: int,
    baseline_gmacs: float | None = None,
    pruned_gmacs: float | None = None,
) -> int:
    """The iterations a scratch twin trains for under ``budget`` (see the module's docstring)."""
    images = int(baseline_iters) + int(finetune_iters)
    if budget == "e":
        return images
    if budget != "b":
        raise ValueError(f"scratch budget {budget!r}: expected one of {', '.join(SCRATCH_FOLDERS)}")
    if not baseline_gmacs or not pruned_gmacs or baseline_gmacs <= 0 or pruned_gmacs <= 0:
        raise ValueError(
            f"scratch budget b needs both models' GMACs, got {baseline_gmacs} and {pruned_gmacs}"
        )
    return max(1, round(images * float(baseline_gmacs) / float(pruned_gmacs)))


def iterations_of_job(
    budget: str,
    baseline_iters: int,
    finetune_iters: int,
    baseline_metrics: str | Path | None = None,
    pruned_metrics: str | Path | None = None,
) -> int:
    """:func:`scratch_iterations`, the GMACs of budget ``b`` read from the two models'
    ``metrics.json`` (their evaluations)."""
    import json

    def gmacs(path: str | Path | None) -> float | None:
        return None if path is None else float(json.loads(Path(path).read_text())["gmacs"])

    return scratch_iterations(
        budget, baseline_iters, finetune_iters, gmacs(baseline_metrics), gmacs(pruned_metrics)
    )


def stretched_schedule(train: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    """``train`` (the baseline's settings) for a run of ``iterations``: the warm-up scaled to the
    same fraction of the run (``lr_drop_at`` is a fraction already), checkpoints no further apart
    than the run is long, and validation only at the end (the evaluate rule measures the model)."""
    baseline_iters = int(train["max_iters"])
    warmup = round(int(train["warmup_iters"]) * iterations / baseline_iters)
    return {
        **train,
        "max_iters": int(iterations),
        "warmup_iters": warmup,
        "checkpoint_interval": min(int(train["checkpoint_interval"]), int(iterations)),
        "val_interval": 0,
    }


def build_scratch_twin(checkpoint: str | Path) -> nn.Module:
    """A detector of the pruned checkpoint's shapes and none of its weights, in train mode.

    The detector is built from the checkpoint's model config (the baseline's, at full width),
    narrowed to the saved shapes by dropping trailing channels, heads and points, and each module
    re-initialised by its own ``reset_parameters`` at its new width (a Conv's bound depends on
    its fan-in). The Runner then calls the detector's ``init_weights`` as it did for the
    baseline; both draw from the generator the Runner seeded.
    """
    from detrprune.train.checkpoint import (
        CheckpointError,
        read_checkpoint,
        shrink_attention_to_state_dict,
        shrink_to_state_dict,
    )
    from detrprune.train.model import build_detector

    state, model_cfg, meta = read_checkpoint(Path(checkpoint))
    if meta.get("kind") != "filter":
        raise CheckpointError(
            f"{checkpoint}: a scratch twin needs a filter-pruned model (its shapes are the "
            f"architecture), got kind {meta.get('kind')!r}"
        )
    detector = build_detector(model_cfg)
    shrink_attention_to_state_dict(detector, state, where=str(checkpoint))
    shrink_to_state_dict(detector, state, where=str(checkpoint))
    for module in detector.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    built = {name: tuple(tensor.shape) for name, tensor in detector.state_dict().items()}
    saved = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if built != saved:
        differing = sorted(set(built.items()) ^ set(saved.items()))[:3]
        raise CheckpointError(f"{checkpoint}: the scratch twin's shapes differ: {differing}")
    detector.train()
    return detector


def register_scratch_twin() -> None:
    """Register :func:`build_scratch_twin` as the model type a scratch twin's Runner builds."""
    from mmdet.registry import MODELS

    if SCRATCH_MODEL_TYPE not in MODELS.module_dict:
        MODELS.register_module(name=SCRATCH_MODEL_TYPE, module=build_scratch_twin)
