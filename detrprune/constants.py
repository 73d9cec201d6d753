"""Names every stage of the study shares: the classes, the model parts, the pruning scopes and
the iterative loop's step columns. One home each, free of heavy imports, so that the config
check, the rules and the report can use them without loading torch."""

from __future__ import annotations

import re
from collections.abc import Sequence

# The KITTI classes the detector learns, in category-id order (COCO ids 1, 2, 3).
CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")

# The model parts the compute (GMACs) is broken down into; "other" is what no part claims
# (a two-stage model's proposal generation from the encoder memory).
GMACS_PARTS: tuple[str, ...] = ("backbone", "neck", "encoder", "decoder", "head", "other")

# The parts latency is broken down into (``latency_ms_<part>``): the modules of GMACS_PARTS, and
# "rest" for the time inside ``test_step`` no part claims (pre-processing, two-stage proposal
# selection, post-processing), which GMACs barely see.
LATENCY_PARTS: tuple[str, ...] = ("backbone", "neck", "encoder", "decoder", "head", "rest")

# The parts weight pruning can be restricted to and sparsity is reported by; deformable
# attention's sampling offsets are their own part because pruning them moves where attention
# looks, not only how much each sample weighs.
SPARSITY_PARTS: tuple[str, ...] = (
    "backbone",
    "neck",
    "encoder",
    "decoder",
    "head",
    "sampling_offsets",
    "other",
)

# The scopes each pruning kind understands.
# "+attention" also removes whole heads of every attention layer of the transformer; "+points"
# removes sampling points of every deformable attention's heads and levels (after "+attention"'s
# heads when a scope has both).
FILTER_SCOPES: tuple[str, ...] = (
    "backbone",
    "backbone+ffn",
    "backbone+residual",
    "backbone+residual+ffn",
    "backbone+attention",
    "backbone+ffn+attention",
    "backbone+residual+ffn+attention",
    "backbone+points",
    "backbone+attention+points",
)
# The parts of a filter scope a method's ``part_ratios`` can give their own ratio (percent),
# instead of the target's: the transformer's FFN widths, heads and sampling points. The target's
# ratio stays the backbone's (and the residual stream's), the axis its plots are drawn on.
PART_RATIO_PARTS: tuple[str, ...] = ("ffn", "attention", "points")
# What evaluation records of a 2:4 model on the GPU (detrprune.evaluate.semi_structured): the
# numbers and text that reach results/summary.csv, and the per-layer detail metrics.json keeps.
SEMI_STRUCTURED_COLUMNS: tuple[str, ...] = (
    "gpu_latency_ms_median_2to4",
    "gpu_latency_ms_median_dense_fp16",
    "gpu_speedup_2to4",
    "gpu_2to4_layers_converted",
    "gpu_2to4_layers_kept_dense",
    "gpu_2to4_max_rel_err",
)
SEMI_STRUCTURED_TEXT_COLUMNS: tuple[str, ...] = ("gpu_2to4_backend",)
SEMI_STRUCTURED_DETAIL_KEYS: tuple[str, ...] = (
    "gpu_2to4_device",
    "gpu_layer_speedup_2to4",
    "gpu_layer_speedup_2to4_by_kind",
    "gpu_layer_timing_2to4",
    "gpu_2to4_kept_dense",
)

# The transformer stacks whose FFNs, attention heads and sampling points the ``+ffn``,
# ``+attention`` and ``+points`` parts prune (a method's ``transformer`` key; default both). The
# encoder runs over every pixel of every level, the decoder over a few hundred queries: almost
# all the transformer's time is in the encoder, and pruning the decoder costs accuracy for little
# time.
TRANSFORMER_STACKS: tuple[str, ...] = ("encoder", "decoder")
# The stacks whose sampling points ``+points`` can remove: the decoder's cross-attention divides
# its offsets by the point count when its reference points are boxes (two-stage and refine).
POINT_STACKS: tuple[str, ...] = ("encoder",)


def default_transformer_stacks(scope: str) -> tuple[str, ...]:
    """The stacks a filter ``scope`` prunes in when its method names none: the encoder for
    ``+points`` (:data:`POINT_STACKS`), both stacks otherwise."""
    return POINT_STACKS if "points" in scope.split("+") else TRANSFORMER_STACKS


# "N:M" scopes keep the N largest-magnitude weights of every M consecutive input weights of each
# selected Linear: 2:4 is what sparse tensor cores (Ampere and later) run; 4:8 is the same
# sparsity with more freedom in which weights stay, and no kernel.
WEIGHT_SCOPES: tuple[str, ...] = ("layerwise", "global", "2:4", "4:8")
# The kinds of layer a weight method's ``layers`` key chooses among (default all), within the
# parts its ``modules`` names: the Linears of the transformer's feed-forward blocks, its attention
# projections, and every other prunable weight (convs, the head, the two-stage projections).
# Sparse 2:4 kernels speed up large matrix products: the encoder's FFNs, which see every image
# token, are where they can pay.
WEIGHT_LAYER_KINDS: tuple[str, ...] = ("ffn", "attention", "other")
# The attention projections by module name: mmcv's deformable attention (value_proj,
# output_proj, sampling_offsets, attention_weights) and nn.MultiheadAttention (its bare
# in_proj_weight, out_proj).
ATTENTION_LAYERS: frozenset[str] = frozenset(
    {"value_proj", "output_proj", "sampling_offsets", "attention_weights", "in_proj", "out_proj"}
)
# The parts an N:M scope prunes when a method names no ``modules``: the transformer's Linears
# (FFNs and attention projections; sampling offsets are a part of their own and stay dense).
NM_DEFAULT_PARTS: tuple[str, ...] = ("encoder", "decoder")


def weight_modules(scope: str, modules: Sequence[str] | None = None) -> tuple[str, ...]:
    """The parts a weight method with ``scope`` prunes: its ``modules``, else all of
    :data:`SPARSITY_PARTS` (:data:`NM_DEFAULT_PARTS` for an N:M scope)."""
    if modules:
        return tuple(modules)
    return NM_DEFAULT_PARTS if nm_pattern(scope) is not None else SPARSITY_PARTS


def nm_pattern(scope: str) -> tuple[int, int] | None:
    """``(N, M)`` of an N:M weight scope such as ``"2:4"``; None for the other scopes."""
    match = re.fullmatch(r"([1-9][0-9]*):([1-9][0-9]*)", scope)
    if match is None:
        return None
    n, m = int(match.group(1)), int(match.group(2))
    if n >= m:
        raise ValueError(f"pruning.weight.scope: {scope!r} keeps N >= M weights of every M")
    return n, m


# Filter pruning rounds every kept width down to a multiple of this unless a method sets its own
# ``round_to`` (1 keeps the exact ratio): CPU GEMM and GPU tensor-core kernels run widths that
# are multiples of 8 best, and ragged widths can cost more time than the channels they remove.
DEFAULT_ROUND_TO = 8
# How many training images a criterion that ranks by the loss's gradients (taylor) sums them over
# unless a method sets its own ``gradient_images``.
DEFAULT_GRADIENT_IMAGES = 16

# Columns of the iterative loop's results/iterative/steps.csv, in file order.
ITERATIVE_STEP_COLUMNS: tuple[str, ...] = (
    "step",
    "step_ratio",
    "cumulative_ratio",
    "gmacs",
    "params_total",
    "params_nonzero",
    # What the step reached, beside the planned cumulative_ratio: kept output channels over the
    # original's (of the layers pruned; 1 for weight pruning) and parameters over the baseline's.
    "kept_channel_fraction",
    "params_fraction",
    "mAP_before_finetune",
    "mAP50_before_finetune",
    "mAP_after_finetune",
    "mAP50_after_finetune",
    "map_drop",
    "within_budget",
    "selected",
)

# The fine-tune settings each step of the iterative loop (and its control) takes from
# pruning.finetune; its own finetune_iters replaces the fine-tune's iters.
ITERATIVE_FINETUNE_KEYS: tuple[str, ...] = ("lr", "warmup_iters")

# Columns of the baseline's training curve, results/baseline/validations.csv.
VALIDATION_COLUMNS: tuple[str, ...] = ("iter", "mAP", "mAP50")
