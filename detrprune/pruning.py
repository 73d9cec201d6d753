"""Pruning methods: L1-norm structured filter pruning and unstructured magnitude weight pruning.

Filter pruning removes channels physically with Torch-Pruning's DependencyGraph. It traces only
``neck(backbone(x))``: tracing the whole detector misses the coupling inside deformable attention
(its ``view()`` uses stored head/level/point counts), and the pruned model then fails. The neck's
convs are ignored layers, so their outputs (the transformer's width) stay and their inputs follow
the backbone's pruned channels.

Weight pruning zeroes weights with ``torch.nn.utils.prune`` and makes the masks permanent, so the
state dict is a plain one again (no ``weight_orig``/``weight_mask``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

log = logging.getLogger(__name__)

FILTER_SCOPES = ("backbone",)
WEIGHT_SCOPES = ("layerwise", "global")


class _BackboneNeck(nn.Module):
    """The part of the detector the dependency graph is traced through."""

    def __init__(self, backbone: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


def filter_prune(
    detector: nn.Module, ratio: float, input_hw: tuple[int, int], scope: str = "backbone"
) -> dict[str, int]:
    """Remove ``ratio`` of the channels of every prunable backbone group, ranked by group L1 norm.

    ``ratio`` is Torch-Pruning's channel ratio (0.3 removes 30 % of each group's channels, which
    removes roughly half of the parameters of the layers involved). Returns parameter counts
    before and after.
    """
    if scope not in FILTER_SCOPES:
        raise ValueError(f"pruning.filter.scope: unknown scope {scope!r}, expected {FILTER_SCOPES}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"filter pruning ratio must be in (0, 1), got {ratio}")
    traced = _BackboneNeck(detector.backbone, detector.neck)
    before = count_parameters(detector)
    # Torch-Pruning traces with autograd; frozen BN/stem parameters would be invisible to it.
    grad_flags = {p: p.requires_grad for p in traced.parameters()}
    for p in traced.parameters():
        p.requires_grad_(True)
    was_training = detector.training
    traced.eval()
    try:
        neck_convs = [m for m in detector.neck.modules() if isinstance(m, nn.Conv2d)]
        pruner = tp.pruner.BasePruner(
            traced,
            example_inputs=torch.zeros(1, 3, *input_hw),
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=neck_convs,
        )
        pruner.step()
    finally:
        for p, flag in grad_flags.items():
            p.requires_grad_(flag)
        detector.train(was_training)
    after = count_parameters(detector)
    log.info("filter pruning %.0f%% (%s): params %d -> %d", 100 * ratio, scope, before, after)
    return {"params_before": before, "params_after": after}


def prunable_weights(detector: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(qualified name, module, parameter name) of every Conv/Linear weight matrix.

    ``nn.MultiheadAttention`` keeps its input projection as a bare parameter; it is included.
    """
    for name, module in detector.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            yield f"{name}.weight", module, "weight"
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            yield f"{name}.in_proj_weight", module, "in_proj_weight"


def weight_prune(detector: nn.Module, ratio: float, scope: str = "layerwise") -> dict[str, float]:
    """Zero the smallest-magnitude ``ratio`` of the prunable weights, then make it permanent.

    ``layerwise`` removes the same fraction in every layer; ``global`` uses one threshold over all
    of them (which can empty whole layers whose weights are small by design, such as deformable
    attention's sampling offsets). Returns the achieved sparsity over the prunable weights.
    """
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"pruning.weight.scope: unknown scope {scope!r}, expected {WEIGHT_SCOPES}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"weight pruning ratio must be in (0, 1), got {ratio}")
    targets = [(module, param) for _, module, param in prunable_weights(detector)]
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ratio)
    else:
        for module, param in targets:
            prune.l1_unstructured(module, param, amount=ratio)
    with torch.no_grad():
        for module, param in targets:
            prune.remove(module, param)
            # The mask multiplies, so pruned negative weights become -0.0; make every pruned
            # weight +0.0 so that "zero" means all bits zero (what sparse storage relies on).
            getattr(module, param).add_(0.0)
    total = sum(getattr(m, p).numel() for m, p in targets)
    zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in targets)
    sparsity = zeros / total
    log.info("weight pruning %.0f%% (%s): sparsity %.4f", 100 * ratio, scope, sparsity)
    return {"prunable_weights": total, "zeroed_weights": zeros, "sparsity": sparsity}


SPARSITY_PARTS = ("backbone", "neck", "encoder", "decoder", "head", "sampling_offsets", "other")


def sparsity_by_part(detector: nn.Module) -> dict[str, float]:
    """Fraction of zero weights among the prunable weights of each model part.

    Deformable attention's ``sampling_offsets`` are reported on their own (and left out of the
    encoder/decoder figures): mmcv initialises them to zero and trains them at 0.1x lr, so global
    magnitude pruning empties them first and the detector loses its sampling locations.
    """
    zeros = dict.fromkeys(SPARSITY_PARTS, 0)
    totals = dict.fromkeys(SPARSITY_PARTS, 0)
    for name, module, param in prunable_weights(detector):
        top = name.split(".", 1)[0]
        if ".sampling_offsets." in f".{name}":
            part = "sampling_offsets"
        elif top == "bbox_head":
            part = "head"
        else:
            part = top if top in SPARSITY_PARTS else "other"
        weight = getattr(module, param)
        zeros[part] += int((weight == 0).sum())
        totals[part] += weight.numel()
    return {f"sparsity_{p}": zeros[p] / totals[p] for p in SPARSITY_PARTS if totals[p]}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all elements, zero or not)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def prune_checkpoint(
    baseline: Path,
    out_model: Path,
    method: str,
    ratio_percent: int,
    scope: str,
    input_hw: tuple[int, int],
) -> dict[str, Any]:
    """Prune the baseline checkpoint with ``method`` at ``ratio_percent`` and save the result.

    The saved file is reloaded into a freshly built model before returning, so a checkpoint
    that cannot be rebuilt fails here rather than in evaluation.
    """
    from detrprune.checkpoint import load_detector, save_detector
    from detrprune.workflow import percent_to_fraction

    ratio = percent_to_fraction(ratio_percent)
    detector, model_cfg, meta = load_detector(baseline)
    if method == "filter":
        stats: dict[str, Any] = filter_prune(detector, ratio, input_hw, scope)
    elif method == "weight":
        stats = weight_prune(detector, ratio, scope)
    else:
        raise ValueError(f"unknown pruning method {method!r}, expected 'filter' or 'weight'")
    meta = {
        **meta,
        "variant": f"{method}_r{ratio_percent}",
        "method": method,
        "ratio": int(ratio_percent),
        "scope": scope,
        "pruning": stats,
    }
    save_detector(detector, out_model, model_cfg, meta)
    reloaded, _, _ = load_detector(out_model)
    if count_parameters(reloaded) != count_parameters(detector):
        raise RuntimeError(f"{out_model}: reloaded model differs in size from the pruned one")
    return meta
