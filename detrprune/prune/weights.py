"""Unstructured magnitude and N:M weight pruning, and where the zeros are.

Weight pruning zeroes weights with ``torch.nn.utils.prune`` and makes the masks permanent, so the
state dict is a plain one again (no ``weight_orig``/``weight_mask``). ``modules`` limits it to some
model parts (see :data:`SPARSITY_PARTS`), ``layers`` to some kinds of layer within them (FFN,
attention projection or other, :data:`WEIGHT_LAYER_KINDS`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from detrprune.constants import (
    ATTENTION_LAYERS,
    SPARSITY_PARTS,
    WEIGHT_LAYER_KINDS,
    WEIGHT_SCOPES,
    nm_pattern,
    weight_modules,
)
from detrprune.prune.attention import HeadPrunedMultiheadAttention

log = logging.getLogger(__name__)


def prunable_weights(detector: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(qualified name, module, parameter name) of every Conv/Linear weight matrix.

    ``nn.MultiheadAttention`` keeps its input projection as a bare parameter; it is included.
    """
    for name, module in detector.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            yield f"{name}.weight", module, "weight"
        elif (
            isinstance(module, nn.MultiheadAttention | HeadPrunedMultiheadAttention)
            and module.in_proj_weight is not None
        ):
            yield f"{name}.in_proj_weight", module, "in_proj_weight"


def weight_part(name: str) -> str:
    """The model part (one of :data:`SPARSITY_PARTS`) a prunable weight's qualified name is in.

    Deformable attention's ``sampling_offsets`` are a part of their own (and left out of the
    encoder/decoder): mmcv initialises them to zero and trains them at 0.1x lr, so global
    magnitude pruning empties them first and the detector loses its sampling locations.
    """
    top = name.split(".", 1)[0]
    if ".sampling_offsets." in f".{name}":
        return "sampling_offsets"
    if top == "bbox_head":
        return "head"
    return top if top in SPARSITY_PARTS else "other"


def layer_role(name: str) -> str:
    """The kind of layer (one of :data:`WEIGHT_LAYER_KINDS`) a module or prunable weight is, by
    its qualified name: ``attention`` for an attention projection (:data:`ATTENTION_LAYERS`, or
    ``nn.MultiheadAttention``'s ``in_proj_weight``), ``ffn`` for a layer inside a feed-forward
    block of the transformer, ``other`` for the rest."""
    parts = name.split(".")
    if parts[-1] == "in_proj_weight":
        return "attention"
    if parts[-1] == "weight":
        parts = parts[:-1]
    if parts and parts[-1] in ATTENTION_LAYERS:
        return "attention"
    if "ffn" in parts or "ffns" in parts:
        return "ffn"
    return "other"


def nm_prune(root: nn.Module, weights: Sequence[str], n: int, m: int) -> None:
    """Keep the ``n`` largest-magnitude of every ``m`` consecutive input weights of each named
    weight (qualified names under ``root``, e.g. ``"encoder.layers.0.ffn.layers.1.weight"``) and
    zero the rest, in place, as +0.0.

    torch's own N:M sparsifier does it (``torch.ao.pruning.WeightNormSparsifier`` with 1 x M
    blocks and M - N zeros in each): the groups run along the input dimension, as sparse tensor
    cores read them. Which of equal magnitudes stays is ``torch.topk``'s choice.
    """
    from torch.ao.pruning import WeightNormSparsifier

    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    for name in weights:
        columns = root.get_parameter(name).shape[1]
        if columns % m:
            raise ValueError(f"{name}: {columns} inputs are not a whole number of groups of {m}")
    sparsifier = WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, m), zeros_per_block=m - n
    )
    sparsifier.prepare(root, [{"tensor_fqn": name} for name in weights])
    sparsifier.step()
    sparsifier.squash_mask()
    with torch.no_grad():
        for name in weights:
            root.get_parameter(name).add_(0.0)  # -0.0 -> +0.0: "zero" is all bits zero


def weight_prune(
    detector: nn.Module,
    ratio: float,
    scope: str = "layerwise",
    modules: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero the smallest-magnitude ``ratio`` of the prunable weights, then make it permanent.

    ``layerwise`` removes the same fraction in every layer; ``global`` uses one threshold over all
    of them (which can empty whole layers whose weights are small by design, such as deformable
    attention's sampling offsets). An N:M scope (``"2:4"``) keeps the N largest of every M
    consecutive input weights of each selected ``nn.Linear`` (:func:`nm_prune`); its ``ratio``
    must be its sparsity, 1 - N/M, and Linears whose input width is not a multiple of M stay
    dense (counted and logged). ``modules`` (parts of :data:`SPARSITY_PARTS`, default all;
    :data:`NM_DEFAULT_PARTS` for N:M) limits which weights are pruned, and ``layers`` (kinds of
    :data:`WEIGHT_LAYER_KINDS`, default all; :func:`layer_role`) which of theirs, e.g.
    ``["ffn"]`` for the feed-forward blocks alone. Weights that are already zero count as
    pruned, so pruning an already-pruned model to a higher ratio extends its masks. Returns the
    achieved sparsity over the selected weights.
    """
    pattern = nm_pattern(scope)
    if scope not in WEIGHT_SCOPES and pattern is None:
        raise ValueError(f"pruning.weight.scope: unknown scope {scope!r}, expected {WEIGHT_SCOPES}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"weight pruning ratio must be in (0, 1), got {ratio}")
    if pattern is not None and not math.isclose(ratio, 1 - pattern[0] / pattern[1]):
        expected = 100 * (1 - pattern[0] / pattern[1])
        raise ValueError(
            f"weight pruning {scope}: the ratio is its sparsity, {expected:g}, got {100 * ratio:g}"
        )
    parts = weight_modules(scope, modules)
    unknown = sorted(set(parts) - set(SPARSITY_PARTS))
    if unknown:
        raise ValueError(
            f"weight pruning modules: unknown part(s) {unknown}, expected {SPARSITY_PARTS}"
        )
    kinds = tuple(layers) if layers else WEIGHT_LAYER_KINDS
    unknown = sorted(set(kinds) - set(WEIGHT_LAYER_KINDS))
    if unknown:
        raise ValueError(
            f"weight pruning layers: unknown kind(s) {unknown}, expected {WEIGHT_LAYER_KINDS}"
        )
    selected = [
        (name, module, param)
        for name, module, param in prunable_weights(detector)
        if weight_part(name) in parts and layer_role(name) in kinds
    ]
    skipped: list[str] = []
    if pattern is not None:
        # Sparse tensor cores take Linear weights only, in groups along the input dimension.
        selected = [entry for entry in selected if isinstance(entry[1], nn.Linear)]
        skipped = [name for name, module, _ in selected if module.in_features % pattern[1]]
        selected = [entry for entry in selected if entry[0] not in skipped]
    targets = [(module, param) for _, module, param in selected]
    if not targets:
        raise ValueError(
            f"weight pruning modules {list(parts)}, layers {list(kinds)}: no prunable weight "
            "in them"
        )
    if pattern is not None:
        nm_prune(detector, [name for name, _, _ in selected], *pattern)
    elif scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ratio)
    else:
        for module, param in targets:
            prune.l1_unstructured(module, param, amount=ratio)
    with torch.no_grad():
        for module, param in targets:
            if pattern is None:
                prune.remove(module, param)
            # The mask multiplies, so pruned negative weights become -0.0; make every pruned
            # weight +0.0 so that "zero" means all bits zero (what sparse storage relies on).
            getattr(module, param).add_(0.0)
    total = sum(getattr(m, p).numel() for m, p in targets)
    zeros = sum(int((getattr(m, p) == 0).sum()) for m, p in targets)
    sparsity = zeros / total
    log.info(
        "weight pruning %.0f%% (%s, %s, %s): %d weight matrices, sparsity %.4f",
        100 * ratio,
        scope,
        parts,
        kinds,
        len(targets),
        sparsity,
    )
    if skipped:
        log.info(
            "weight pruning %s: %d Linear(s) left dense (input width): %s",
            scope,
            len(skipped),
            skipped,
        )
    stats: dict[str, Any] = {
        "prunable_weights": total,
        "zeroed_weights": zeros,
        "sparsity": sparsity,
        "modules": list(parts),
        "layers": list(kinds),
    }
    if pattern is not None:
        stats["nm"] = list(pattern)
        stats["nm_layers"] = len(targets)
        stats["nm_left_dense"] = skipped
    return stats


def sparsity_by_part(detector: nn.Module) -> dict[str, float]:
    """Fraction of zero weights among the prunable weights of each model part."""
    zeros = dict.fromkeys(SPARSITY_PARTS, 0)
    totals = dict.fromkeys(SPARSITY_PARTS, 0)
    for name, module, param in prunable_weights(detector):
        part = weight_part(name)
        weight = getattr(module, param)
        zeros[part] += int((weight == 0).sum())
        totals[part] += weight.numel()
    return {f"sparsity_{p}": zeros[p] / totals[p] for p in SPARSITY_PARTS if totals[p]}
