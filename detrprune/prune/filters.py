"""Structured filter pruning: channels, FFN widths, attention heads and sampling points removed.

Filter pruning removes channels physically with Torch-Pruning's DependencyGraph. It traces only
``neck(backbone(x))``: tracing the whole detector misses the coupling inside deformable attention
(its ``view()`` uses stored head/level/point counts), and the pruned model then fails. The neck's
convs are ignored layers, so their outputs (the transformer's width) stay and their inputs follow
the backbone's channels. Its scope is a ``+``-joined set of parts:

* ``backbone`` (always): the ResNet's inner convs, those inside a residual block whose output
  stays in the block (conv1 of a BasicBlock; conv1 and conv2 of a Bottleneck). The stem, the
  blocks' last convs and the downsample convs, which write the residual stream, keep their
  widths: this is what the study we reproduce pruned.
* ``residual``: the residual stream's channels too (stem, block outputs, downsample convs, and
  every conv that reads them), each coupled group pruned as one.
* ``ffn``: the hidden width of every encoder/decoder FFN (the Linear pair embed -> ffn ->
  embed), each FFN traced on its own; the rows of the first Linear are ranked by L1 norm and the
  second Linear's inputs follow.
* ``attention``: whole heads of every attention layer of the transformer (deformable attention
  in the encoder and the decoder's cross-attention, and the decoder's self-attention), ranked by
  the L1 norm of the weights that carry each head's content (:mod:`detrprune.prune.attention`).
* ``points``: sampling points of every head and level of the encoder's deformable attention,
  ranked by their attention logit's bias (after ``attention``'s heads when the scope has both).

A method's ``transformer`` key limits ``ffn``, ``attention`` and ``points`` to some of the
transformer's stacks (:data:`TRANSFORMER_STACKS`, default both; ``points``: the encoder):
``[encoder]`` prunes where the time is. Its ``part_ratios`` give ``ffn``, ``attention`` or
``points`` a ratio of their own, the same for all its targets, whose ratio then prunes the rest.

The residual width of the transformer and the detection heads always keep their widths.

Each part is registered (:func:`~detrprune.prune.parts.register_part`) on the function below that
prunes it; :func:`filter_prune` applies a scope's parts in the order they are registered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from detrprune.constants import (
    FILTER_SCOPES,
    TRANSFORMER_STACKS,
    default_transformer_stacks,
)
from detrprune.prune.attention import prune_attention_heads, prune_sampling_points
from detrprune.prune.counting import count_parameters
from detrprune.prune.criteria import get_criterion
from detrprune.prune.parts import (
    PartPruner,
    PartResult,
    PartStep,
    register_flag_part,
    register_part,
    scope_parts,
)

log = logging.getLogger(__name__)


class _BackboneNeck(nn.Module):
    """The part of the detector the dependency graph is traced through."""

    def __init__(self, backbone: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


class _NoEmptyGroupPruner(tp.pruner.BasePruner):
    """Torch-Pruning's pruner, except that no group is ever emptied.

    Torch-Pruning 1.6.1 rounds a kept width down to a multiple of ``round_to``, which can reach
    0, and then leaves that group unpruned without a word (at r90 with round_to 8, layer1's
    64-wide convs kept all 64 while layer2 went to 8). Here a group keeps at least ``round_to``
    channels (all of a narrower one); :attr:`clamped` counts the groups held at that floor.
    The pruner is always given a ``round_to`` (1 keeps widths as they are), so the floor also
    holds at ratios that would remove every channel.
    """

    clamped = 0

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        n_pruned = super()._round_to(n_pruned, current_channels, round_to)
        floor = min(round_to, current_channels)
        if current_channels - n_pruned < floor:
            self.clamped += 1
            n_pruned = current_channels - floor
        return n_pruned


def filter_prune(
    detector: nn.Module,
    ratio: float,
    input_hw: tuple[int, int],
    scope: str = "backbone",
    criterion: str = "l1",
    seed: int = 0,
    round_to: int = 1,
    transformer: Sequence[str] | None = None,
    part_ratios: Mapping[str, float] | None = None,
    targets: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """Remove ``ratio`` of the channels of every group in ``scope``, ranked by ``criterion``.

    ``ratio`` is Torch-Pruning's channel ratio (0.3 removes 30 % of each group's channels, which
    removes roughly half of the parameters of the layers involved). ``criterion`` "l1" ranks by
    group L1 norm; "random" draws the channels (seeded by ``seed``): the control that says
    whether the L1 ranking beats chance. ``round_to`` > 1 rounds every kept width down to a
    multiple of it (Torch-Pruning's ``round_to``; CPU and GPU kernels favour multiples of 8);
    attention heads and sampling points are whole already. ``transformer`` names the stacks (of
    :data:`TRANSFORMER_STACKS`) whose FFNs, heads and sampling points ``ffn``, ``attention``
    and ``points`` prune (default: :func:`~detrprune.constants.default_transformer_stacks`).
    ``part_ratios`` gives some of those parts (registered with ``own_ratio``) their own ratio, e.g.
    ``{"attention": 0.25, "points": 0.5}``: heads are the costly cut in accuracy, points the
    cheap one, and one ratio for both cannot trade them. ``ratio`` prunes the rest.
    ``targets`` (:func:`filter_shapes` of a model pruned from the same original one) prunes to
    those shapes instead: every Conv/Linear of the scope to its target width, every attention
    layer to its target heads and points, channels and heads still chosen by ``criterion`` on
    the current weights, and no rounding (the target's widths are rounded already). The
    iterative loop uses it to land each step on the one-shot shapes of its cumulative ratio;
    ``ratio`` is then only reported.
    Returns parameter counts before and after, the FFN widths when the scope has ``ffn``, the
    head counts when it has ``attention`` and the points per head and level when it has
    ``points``.
    """
    if scope not in FILTER_SCOPES:
        raise ValueError(f"pruning.filter.scope: unknown scope {scope!r}, expected {FILTER_SCOPES}")
    get_criterion(criterion)  # a one-line error naming the registered ones
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"filter pruning ratio must be in (0, 1), got {ratio}")
    if round_to < 1:
        raise ValueError(f"pruning.filter.round_to must be >= 1, got {round_to}")
    registered = scope_parts()
    parts = tuple(scope.split("+"))
    own_ratio = [name for name in parts if registered[name].own_ratio]
    part_ratios = dict(part_ratios or {})
    for part, part_ratio in part_ratios.items():
        if part not in own_ratio:
            raise ValueError(
                f"pruning.filter.part_ratios: {part!r} is not a part of scope {scope!r} that "
                f"takes its own ratio ({', '.join(own_ratio)})"
            )
        if not 0.0 < part_ratio < 1.0:
            raise ValueError(f"pruning.filter.part_ratios.{part}: {part_ratio} is not in (0, 1)")
    if transformer is None:
        transformer = default_transformer_stacks(scope)
    if not transformer or not set(transformer) <= set(TRANSFORMER_STACKS):
        raise ValueError(
            f"pruning.filter.transformer: {list(transformer)} is not a non-empty choice of "
            f"{TRANSFORMER_STACKS}"
        )
    step = PartStep(ratio, criterion, round_to, tuple(transformer), parts, tuple(input_hw), targets)
    before = count_parameters(detector)
    was_training = detector.training
    results: dict[str, PartResult] = {}
    try:
        # RandomImportance draws from torch's global generator: seed a private copy of it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name, part in registered.items():
                if name in parts and part.prune is not None:
                    results[name] = part.prune(
                        detector, replace(step, ratio=part_ratios.get(name, ratio))
                    )
    finally:
        detector.train(was_training)
    after = count_parameters(detector)
    if targets is not None:
        missed = {
            name: [width, targets["widths"][name]]
            for name, width in filter_shapes(detector)["widths"].items()
            if name in targets["widths"] and width != targets["widths"][name]
        }
        if missed:
            raise RuntimeError(f"filter pruning to target shapes: widths [got, target] {missed}")
    log.info("filter pruning %.0f%% (%s): params %d -> %d", 100 * ratio, scope, before, after)
    clamped = sum(result.clamped for result in results.values())
    if clamped:
        log.warning(
            "filter pruning %.0f%% (%s): %d channel groups kept at their floor of "
            "min(round_to=%d, width) channels rather than emptied",
            100 * ratio,
            scope,
            clamped,
            round_to,
        )
    stats: dict[str, Any] = {
        "params_before": before,
        "params_after": after,
        "ffn_hidden": {},
        "groups_clamped": clamped,
    }
    for name, result in results.items():
        key = registered[name].stats_key
        if key and result.units:
            stats[key] = result.units
    return stats


@register_part(
    "backbone",
    description="the ResNet's inner convs (conv1 of a BasicBlock; conv1 and conv2 of a "
    "Bottleneck), in one Torch-Pruning dependency graph traced through backbone and neck",
)
def prune_backbone_channels(detector: nn.Module, step: PartStep) -> PartResult:
    """The ``backbone`` part (and ``residual`` when the scope has it): the neck's convs keep
    their outputs, the residual stream's convs too unless ``residual`` is in the scope."""
    traced = _BackboneNeck(detector.backbone, detector.neck)
    # Torch-Pruning traces with autograd; frozen BN/stem parameters would be invisible to it.
    grad_flags = {p: p.requires_grad for p in traced.parameters()}
    for p in traced.parameters():
        p.requires_grad_(True)
    traced.eval()
    try:
        kept = [m for m in detector.neck.modules() if isinstance(m, nn.Conv2d)]
        if "residual" not in step.parts:
            kept += residual_stream_convs(detector.backbone)
        if step.targets is None:
            sizing: dict[str, Any] = {"pruning_ratio": step.ratio, "round_to": step.round_to}
        else:
            sizing = {
                "pruning_ratio": 0.0,
                "pruning_ratio_dict": _ratios_to_widths(
                    detector, "backbone", step.targets["widths"], set(map(id, kept))
                ),
                "round_to": 1,
            }
        pruner = _NoEmptyGroupPruner(
            traced,
            example_inputs=torch.zeros(1, 3, *step.input_hw),
            importance=_importance(step.criterion, group_reduction="mean"),
            ignored_layers=kept,
            **sizing,
        )
        pruner.step()
    finally:
        for p, flag in grad_flags.items():
            p.requires_grad_(flag)
    return PartResult({}, pruner.clamped)


register_flag_part(
    "residual",
    description="the residual stream's channels too (stem, block outputs, downsample convs and "
    "every conv that reads them), each coupled group pruned as one",
)


@register_part(
    "ffn",
    description="the hidden width of every FFN of the method's transformer stacks",
    own_ratio=True,
    stats_key="ffn_hidden",
)
def _prune_ffns(detector: nn.Module, step: PartStep) -> PartResult:
    widths, clamped = prune_ffn_hidden(
        detector,
        step.ratio,
        step.criterion,
        step.round_to,
        step.stacks,
        target_widths=None if step.targets is None else step.targets["widths"],
    )
    return PartResult(widths, clamped)


def residual_stream_convs(backbone: nn.Module) -> list[nn.Conv2d]:
    """The convs of an mmdet ResNet that write its residual stream.

    The stem (``conv1``, or every conv of a deep stem), each block's last conv (``conv3`` of a
    Bottleneck, ``conv2`` of a BasicBlock) and each downsample conv. Keeping their output
    widths leaves only the blocks' inner convs to prune.
    """
    stem = getattr(backbone, "stem", None) if getattr(backbone, "deep_stem", False) else None
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)] if stem else [backbone.conv1]
    for layer_name in backbone.res_layers:
        for block in getattr(backbone, layer_name):
            convs.append(block.conv3 if hasattr(block, "conv3") else block.conv2)
            if block.downsample is not None:
                convs += [m for m in block.downsample.modules() if isinstance(m, nn.Conv2d)]
    return convs


def filter_shapes(detector: nn.Module) -> dict[str, dict[str, int]]:
    """What filter pruning changes in ``detector``: the output width of every Conv/Linear
    (``widths``, by qualified name), the heads of every attention layer (``heads``) and the
    sampling points per head and level of every deformable attention (``points``).

    Pass it as :func:`filter_prune`'s ``targets`` to prune another copy of the same original
    model to these shapes.
    """
    from detrprune.prune.attention import deformable_attentions

    widths = {
        name: module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        for name, module in detector.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }
    points = {name: int(module.num_points) for name, module in deformable_attentions(detector)}
    return {"widths": widths, "heads": attention_head_counts(detector), "points": points}


def kept_channel_fraction(original: nn.Module, pruned: nn.Module) -> float:
    """Output channels (rows) kept over the original's, summed over the Conv/Linear layers
    whose output width pruning changed (1.0 when none did, as for weight pruning)."""
    return kept_width_fraction(filter_shapes(original)["widths"], filter_shapes(pruned)["widths"])


def kept_width_fraction(before: Mapping[str, int], after: Mapping[str, int]) -> float:
    """:func:`kept_channel_fraction` from the layers' output widths (by qualified name)."""
    changed = [name for name, width in before.items() if after.get(name, width) != width]
    if not changed:
        return 1.0
    return sum(after[name] for name in changed) / sum(before[name] for name in changed)


def attention_head_counts(detector: nn.Module) -> dict[str, int]:
    """Heads of every attention layer of the transformer, by qualified name."""
    from detrprune.prune.attention import deformable_attentions, multihead_attentions

    counts = {name: int(module.num_heads) for name, module in deformable_attentions(detector)}
    counts.update(
        {name: int(attention.num_heads) for name, _, attention in multihead_attentions(detector)}
    )
    return counts


def sampling_point_counts(detector: nn.Module) -> dict[str, int]:
    """Sampling points per head and level of every deformable attention, by qualified name."""
    return filter_shapes(detector)["points"]


def _ratios_to_widths(
    detector: nn.Module, under: str, widths: Mapping[str, int], ignored: set[int]
) -> dict[nn.Module, float]:
    """Torch-Pruning's ``pruning_ratio_dict`` that takes every Conv/Linear of ``detector`` under
    ``under`` (a qualified name; "" for all) and not in ``ignored`` (by ``id``) to its width in
    ``widths`` (by qualified name; a module not there keeps its width).

    Torch-Pruning keeps ``int(current * (1 - ratio))`` channels of a group, taking the ratio of
    the module it uses as the group's root; coupled modules share a target width, so each gets
    ``1 - (target + 0.5) / current`` (the 0.5 guards the float product) and the root's is right
    whichever it is. Modules already at their width are left out (ratio 0, the default).
    """
    ratios: dict[nn.Module, float] = {}
    for name, module in detector.named_modules():
        inside = not under or name == under or name.startswith(f"{under}.")
        if not inside or id(module) in ignored:
            continue
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        current = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        target = widths.get(name, current)
        if not 1 <= target <= current:
            raise ValueError(f"{name}: cannot prune {current} output channels to {target}")
        if target < current:
            ratios[module] = 1.0 - (target + 0.5) / current
    return ratios


def _prune_units(
    detector: nn.Module,
    prune_fn: Any,
    ratio: float,
    criterion: str,
    stacks: Sequence[str],
    counts_of: Any,
    targets: Mapping[str, int] | None,
) -> dict[str, list[int]]:
    """Heads or sampling points (``prune_fn``: :func:`prune_attention_heads` or
    :func:`prune_sampling_points`, one ratio for all the layers of ``stacks``) pruned at
    ``ratio``, or, given ``targets`` (counts per layer), to those counts.

    A ratio ``r`` removes ``round(r * n)`` of a layer's ``n`` units (``heads_to_remove``); the one
    chosen lies in every layer's interval ``[(n - t - 0.5) / n, (n - t + 0.5) / n)`` so that each
    layer loses exactly ``n - t``.
    """
    if targets is None:
        return prune_fn(detector, ratio, criterion, stacks)
    before = {
        name: count
        for name, count in counts_of(detector).items()
        if name.split(".", 1)[0] in stacks
    }
    low, high = 0.0, 1.0
    for name, count in before.items():
        removed = count - int(targets[name])
        if not 0 <= removed < count:
            raise ValueError(f"{name}: cannot prune {count} heads/points to {targets[name]}")
        low = max(low, (removed - 0.5) / count)
        high = min(high, (removed + 0.5) / count)
    if all(count == targets[name] for name, count in before.items()):
        return {name: [count, count] for name, count in before.items()}
    if not low < high:
        raise ValueError(f"no one ratio prunes the heads/points {before} to {dict(targets)}")
    result = prune_fn(detector, (low + high) / 2, criterion, stacks)
    after = counts_of(detector)
    missed = {name: [after[name], targets[name]] for name in before if after[name] != targets[name]}
    if missed:
        raise RuntimeError(f"heads/points [got, target]: {missed}")
    return result


def transformer_ffns(
    detector: nn.Module, stacks: Sequence[str] = TRANSFORMER_STACKS
) -> Iterator[tuple[str, nn.Module]]:
    """(name, FFN) of every feed-forward block (mmcv's ``FFN``) of the encoder and/or decoder."""
    from mmcv.cnn.bricks.transformer import FFN

    for part in stacks:
        owner = getattr(detector, part, None)
        if owner is None:
            continue
        for name, module in owner.named_modules():
            if isinstance(module, FFN):
                yield f"{part}.{name}", module


def _importance(criterion: str, group_reduction: str) -> tp.importance.Importance:
    """Torch-Pruning's channel ranking for a registered filter ``criterion``
    (:mod:`detrprune.prune.criteria`)."""
    return get_criterion(criterion).channel_importance(group_reduction)


def prune_ffn_hidden(
    detector: nn.Module,
    ratio: float,
    criterion: str = "l1",
    round_to: int = 1,
    stacks: Sequence[str] = TRANSFORMER_STACKS,
    target_widths: Mapping[str, int] | None = None,
) -> tuple[dict[str, list[int]], int]:
    """Remove ``ratio`` of the hidden units of every FFN of ``stacks``, those whose first-Linear
    rows have least L1 (kept widths rounded down to a multiple of ``round_to``, at least
    ``round_to`` kept).

    Each FFN's ``layers`` (Linear, act, dropout, Linear, dropout) is traced on its own; the last
    Linear is ignored so its outputs (the residual stream's width) stay. ``target_widths`` (output
    widths by the detector's qualified module names, see :func:`filter_shapes`) prunes each
    hidden width to its first Linear's width there instead (``ratio`` and ``round_to`` unused).
    Returns each FFN's hidden width before and after, and how many FFNs were held at the
    ``round_to`` floor.
    """
    widths: dict[str, list[int]] = {}
    clamped = 0
    for name, ffn in transformer_ffns(detector, stacks):
        linears = [m for m in ffn.layers.modules() if isinstance(m, nn.Linear)]
        first, last = linears[0], linears[-1]
        before = first.out_features
        if target_widths is None:
            sizing: dict[str, Any] = {"pruning_ratio": ratio, "round_to": round_to}
        else:
            sizing = {
                "pruning_ratio": 0.0,
                "pruning_ratio_dict": _ratios_to_widths(
                    ffn.layers,
                    "",
                    {
                        sub: target_widths[f"{name}.layers.{sub}"]
                        for sub, _ in ffn.layers.named_modules()
                        if f"{name}.layers.{sub}" in target_widths
                    },
                    {id(last)},
                ),
                "round_to": 1,
            }
        pruner = _NoEmptyGroupPruner(
            ffn.layers,
            example_inputs=torch.zeros(1, 2, first.in_features),
            # "first": rank by the root layer alone, i.e. the L1 norm of the first Linear's rows.
            importance=_importance(criterion, group_reduction="first"),
            ignored_layers=[last],
            **sizing,
        )
        pruner.step()
        clamped += pruner.clamped
        ffn.feedforward_channels = first.out_features
        widths[name] = [before, first.out_features]
    if not widths:
        raise ValueError(f"scope +ffn: the detector has no FFN to prune in {list(stacks)}")
    return widths, clamped


def _unit_pruner(prune_fn: Any, counts_of: Any, target_key: str) -> PartPruner:
    """The part pruner of heads or sampling points (:func:`_prune_units` with ``prune_fn``)."""

    def prune(detector: nn.Module, step: PartStep) -> PartResult:
        targets = None if step.targets is None else step.targets[target_key]
        return PartResult(
            _prune_units(
                detector, prune_fn, step.ratio, step.criterion, step.stacks, counts_of, targets
            )
        )

    return prune


# Registered after the backbone's and the FFNs' parts, in the order they are applied: a layer's
# points are counted on the heads it keeps.
register_part(
    "attention",
    description="whole heads of every attention layer of the method's transformer stacks",
    own_ratio=True,
    stats_key="attention_heads",
)(_unit_pruner(prune_attention_heads, attention_head_counts, "heads"))
register_part(
    "points",
    description="sampling points of every head and level of the encoder's deformable attention",
    own_ratio=True,
    stats_key="sampling_points",
)(_unit_pruner(prune_sampling_points, sampling_point_counts, "points"))
