"""Structured pruning inside the transformer's attention: whole heads removed.

Torch-Pruning's dependency graph cannot see the coupling inside deformable attention (its
``view()`` calls use the stored head, level and point counts, and ``grid_sample`` looks
element-wise to it), so heads are removed here by hand, with Torch-Pruning's own channel-removal
functions doing the tensor surgery on each Linear:

* mmcv's ``MultiScaleDeformableAttention`` (every encoder layer's self-attention and every
  decoder layer's cross-attention): a head owns ``head_dim`` rows of ``value_proj``, the same
  columns of ``output_proj``, and ``num_levels * num_points`` (x2 for the x/y offsets) rows of
  ``attention_weights`` and ``sampling_offsets``. The softmax runs over each head's own
  level x point weights, so removing a head changes nothing in the others; ``num_heads`` is
  updated, and mmcv's forward (PyTorch ``grid_sample`` path and CUDA kernel alike) derives
  everything else from the tensors' shapes.
* ``nn.MultiheadAttention`` (the decoder's self-attention between queries): its functional
  forward requires the projections' width to equal the residual width, so a pruned one is
  replaced by :class:`HeadPrunedMultiheadAttention`, the same computation with the same
  parameter names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) for fewer heads.

A head's importance is the L1 norm of the weights that carry its content: its ``value_proj``
rows and ``output_proj`` columns (deformable attention), or its query/key/value rows of
``in_proj_weight`` and its ``out_proj`` columns (multi-head attention), biases included. The
``ratio`` removes ``round(ratio * heads)`` heads of every attention layer (at least one kept)
of the chosen stacks: the encoder, the decoder or both.

Sampling points (scope ``+points``) are the lighter cut: every head of every deformable
attention keeps its value and output projections but samples fewer points per level. A point
owns one row of ``attention_weights`` and two (x, y) of ``sampling_offsets``; the softmax then
runs over the kept points only. A point's importance is its ``attention_weights`` bias, the
logit it gets before the query moves it: the points a trained model attends to most are those
with the largest bias (on the demo's trained baseline this picks the points with the most
attention mass in 67-96 % of the heads' levels, against 13-29 % for the rows' L1 norms).
``ratio`` removes ``round(ratio * points)`` points of every head and level (at least one kept).
Only the encoder's points can go: the decoder's cross-attention divides the offsets it samples
at by ``num_points`` when its reference points are boxes (two-stage and refine variants), so
removing points there would move every kept point.

A saved pruned model is rebuilt by
:func:`detrprune.train.checkpoint.shrink_attention_to_state_dict`: the head and point
counts follow from the saved tensors' shapes, so no extra metadata is needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
import torch_pruning as tp
from torch import nn

from detrprune.constants import POINT_STACKS
from detrprune.prune.criteria import Saliency, get_criterion
from detrprune.prune.criteria.magnitude import l1_saliency

log = logging.getLogger(__name__)


class HeadPrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (sequence-first, no separate k/v dims) with ``num_heads`` heads
    of ``head_dim`` each, whose total width may be less than ``embed_dim``.

    Same parameter names and the same arithmetic as torch's module (queries scaled by
    ``head_dim ** -0.5``, dropout on the attention weights while training), so a state dict of
    the unpruned module restricted to some heads loads into it unchanged.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner))
        self.out_proj = nn.Linear(inner, embed_dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """Inputs (length, batch, embed_dim), as torch's module takes them; returns
        (output, None)."""
        length, batch, _ = query.shape
        source = key.shape[0]
        heads, dim = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def split_heads(x: torch.Tensor, n: int) -> torch.Tensor:
            return x.reshape(n, batch * heads, dim).transpose(0, 1)

        q = split_heads(F.linear(query, w_q, b_q), length) * dim**-0.5
        k = split_heads(F.linear(key, w_k, b_k), source)
        v = split_heads(F.linear(value, w_v, b_v), source)
        scores = torch.bmm(q, k.transpose(1, 2))  # (batch * heads, length, source)
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(mask, float("-inf"))
            else:
                scores = scores + mask
        if key_padding_mask is not None:
            scores = scores.view(batch, heads, length, source)
            scores = scores.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
            scores = scores.view(batch * heads, length, source)
        weights = F.dropout(scores.softmax(-1), p=self.dropout, training=self.training)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(length, batch, heads * dim)
        return self.out_proj(out), None


def deformable_attentions(detector: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every mmcv ``MultiScaleDeformableAttention`` in the detector."""
    from mmcv.ops import MultiScaleDeformableAttention

    for name, module in detector.named_modules():
        if isinstance(module, MultiScaleDeformableAttention):
            yield name, module


def multihead_attentions(detector: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """(name, owner, attention) of every torch multi-head attention (pruned or not) held as the
    ``attn`` of an mmcv ``MultiheadAttention`` wrapper: the decoder's self-attention."""
    for name, owner in detector.named_modules():
        attention = getattr(owner, "attn", None)
        if isinstance(attention, nn.MultiheadAttention | HeadPrunedMultiheadAttention):
            yield f"{name}.attn", owner, attention


def _deformable_head_slices(module: nn.Module, heads: list[int]) -> dict[str, list[int]]:
    """Indices, per Linear, of the rows (or ``output_proj`` columns) that ``heads`` own."""
    head_dim = module.value_proj.out_features // module.num_heads
    samples = module.num_levels * module.num_points

    def rows(width: int) -> list[int]:
        return [h * width + i for h in heads for i in range(width)]

    return {
        "value_proj": rows(head_dim),
        "output_proj": rows(head_dim),
        "attention_weights": rows(samples),
        "sampling_offsets": rows(2 * samples),
    }


def _grad(*params: torch.Tensor, dim: int = 1) -> torch.Tensor | None:
    """The gradients of ``params`` joined as :func:`torch.cat` joins them (a bias as a column),
    or ``None`` when one has none."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        return None
    return torch.cat([g if g.dim() == 2 else g[:, None] for g in grads], dim=dim)


def deformable_head_importance(module: nn.Module, saliency: Saliency = l1_saliency) -> torch.Tensor:
    """Each head's ``saliency`` (default: L1 norm) summed over its ``value_proj`` rows (bias
    included) and ``output_proj`` columns."""
    heads = module.num_heads
    value_proj, output_proj = module.value_proj, module.output_proj
    value = torch.cat([value_proj.weight, value_proj.bias[:, None]], dim=1)
    value_score = saliency(value.detach(), _grad(value_proj.weight, value_proj.bias))
    per_head_value = value_score.reshape(heads, -1).sum(1)
    output_grad = output_proj.weight.grad
    # (embed, heads * head_dim)
    output = saliency(output_proj.weight.detach(), output_grad)
    per_head_output = output.reshape(output.shape[0], heads, -1).sum((0, 2))
    return per_head_value + per_head_output


def remove_deformable_heads(module: nn.Module, heads: list[int]) -> None:
    """Remove ``heads`` (indices) from one ``MultiScaleDeformableAttention`` in place."""
    if not heads:
        return
    if len(heads) >= module.num_heads:
        raise ValueError(f"cannot remove all {module.num_heads} heads of an attention layer")
    slices = _deformable_head_slices(module, sorted(heads))
    tp.prune_linear_out_channels(module.value_proj, slices["value_proj"])
    tp.prune_linear_in_channels(module.output_proj, slices["output_proj"])
    tp.prune_linear_out_channels(module.attention_weights, slices["attention_weights"])
    tp.prune_linear_out_channels(module.sampling_offsets, slices["sampling_offsets"])
    module.num_heads -= len(heads)


def multihead_head_importance(
    attention: nn.Module, saliency: Saliency = l1_saliency
) -> torch.Tensor:
    """Each head's ``saliency`` (default: L1 norm) summed over its query/key/value rows of
    ``in_proj`` (biases included) and its ``out_proj`` columns."""
    heads = attention.num_heads
    projections = torch.cat([attention.in_proj_weight, attention.in_proj_bias[:, None]], dim=1)
    in_grad = _grad(attention.in_proj_weight, attention.in_proj_bias)
    per_head_in = saliency(projections.detach(), in_grad).reshape(3, heads, -1).sum((0, 2))
    output = saliency(attention.out_proj.weight.detach(), attention.out_proj.weight.grad)
    per_head_out = output.reshape(output.shape[0], heads, -1).sum((0, 2))
    return per_head_in + per_head_out


def without_heads(attention: nn.Module, heads: list[int]) -> HeadPrunedMultiheadAttention:
    """A :class:`HeadPrunedMultiheadAttention` holding ``attention``'s weights but for ``heads``."""
    if getattr(attention, "_qkv_same_embed_dim", True) is False:
        raise ValueError("multi-head attention with separate key/value widths is not supported")
    if len(heads) >= attention.num_heads:
        raise ValueError(f"cannot remove all {attention.num_heads} heads of an attention layer")
    head_dim = attention.head_dim
    kept = [h for h in range(attention.num_heads) if h not in set(heads)]
    columns = [h * head_dim + i for h in kept for i in range(head_dim)]
    inner = attention.num_heads * head_dim
    rows = [part * inner + c for part in range(3) for c in columns]
    dropout = float(attention.dropout)
    pruned = HeadPrunedMultiheadAttention(attention.embed_dim, len(kept), head_dim, dropout)
    pruned.to(attention.in_proj_weight.device, attention.in_proj_weight.dtype)
    with torch.no_grad():
        pruned.in_proj_weight.copy_(attention.in_proj_weight[rows])
        pruned.in_proj_bias.copy_(attention.in_proj_bias[rows])
        pruned.out_proj.weight.copy_(attention.out_proj.weight[:, columns])
        pruned.out_proj.bias.copy_(attention.out_proj.bias)
    pruned.train(attention.training)
    return pruned


def heads_to_remove(heads: int, ratio: float) -> int:
    """How many of ``heads`` (or sampling points) a ``ratio`` removes: ``round(ratio * heads)``,
    keeping one."""
    return min(heads - 1, math.floor(ratio * heads + 0.5))


def _least_important(importance: torch.Tensor, count: int, criterion: str) -> list[int]:
    """The ``count`` heads to remove: least ``importance`` first, or drawn from torch's global
    generator for a criterion without a saliency (``random``)."""
    if get_criterion(criterion).saliency is None:
        order = torch.randperm(importance.numel())
    else:
        # Stable: equal scores (e.g. several all-zero heads) go in head order.
        order = torch.sort(importance, stable=True).indices
    return sorted(int(i) for i in order[:count])


def prune_attention_heads(
    detector: nn.Module,
    ratio: float,
    criterion: str = "l1",
    stacks: Sequence[str] = ("encoder", "decoder"),
) -> dict[str, list[int]]:
    """Remove ``round(ratio * heads)`` heads of every attention layer of the transformer's
    ``stacks`` (encoder and/or decoder), the least important by
    :func:`deformable_head_importance` / :func:`multihead_head_importance` under the registered
    ``criterion``'s saliency (:mod:`detrprune.prune.criteria`; "l1": the L1 norm), or drawn at
    random for a criterion without one ("random", from torch's global generator: the caller
    seeds it). Returns each layer's head count before and after."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"attention head pruning ratio must be in (0, 1), got {ratio}")

    def selected(name: str) -> bool:
        return name.split(".", 1)[0] in stacks

    # A criterion without a saliency draws the heads: any importance will do for the count.
    saliency = get_criterion(criterion).saliency or l1_saliency

    counts: dict[str, list[int]] = {}
    for name, module in [(n, m) for n, m in deformable_attentions(detector) if selected(n)]:
        before = module.num_heads
        chosen = _least_important(
            deformable_head_importance(module, saliency), heads_to_remove(before, ratio), criterion
        )
        remove_deformable_heads(module, chosen)
        counts[name] = [before, module.num_heads]
    for name, owner, attention in [a for a in multihead_attentions(detector) if selected(a[0])]:
        before = attention.num_heads
        chosen = _least_important(
            multihead_head_importance(attention, saliency),
            heads_to_remove(before, ratio),
            criterion,
        )
        if chosen:
            owner.attn = without_heads(attention, chosen)
            owner.num_heads = owner.attn.num_heads
        counts[name] = [before, owner.attn.num_heads]
    if not counts:
        raise ValueError(f"scope +attention: the detector has no attention layer in {list(stacks)}")
    log.info("attention heads pruned: %s", counts)
    return counts


def deformable_point_importance(module: nn.Module) -> torch.Tensor:
    """Each sampling point's ``attention_weights`` bias, shaped (heads, levels, points)."""
    return module.attention_weights.bias.detach().reshape(
        module.num_heads, module.num_levels, module.num_points
    )


def remove_deformable_points(module: nn.Module, points: Sequence[Sequence[Sequence[int]]]) -> None:
    """Remove ``points[head][level]`` (indices, the same number for every head and level) from
    one ``MultiScaleDeformableAttention`` in place."""
    heads, levels, per_level = module.num_heads, module.num_levels, module.num_points
    counts = {len(set(chosen)) for by_level in points for chosen in by_level}
    if len(points) != heads or any(len(by_level) != levels for by_level in points):
        raise ValueError(f"points to remove must be given per head ({heads}) and level ({levels})")
    if len(counts) != 1:
        raise ValueError("every head and level must lose the same number of sampling points")
    count = counts.pop()
    if count == 0:
        return
    if count >= per_level:
        raise ValueError(f"cannot remove all {per_level} sampling points of a head's level")
    rows = sorted(
        (h * levels + level) * per_level + p
        for h in range(heads)
        for level in range(levels)
        for p in set(points[h][level])
    )
    tp.prune_linear_out_channels(module.attention_weights, rows)
    tp.prune_linear_out_channels(
        module.sampling_offsets, [2 * r + xy for r in rows for xy in (0, 1)]
    )
    module.num_points -= count


def prune_sampling_points(
    detector: nn.Module,
    ratio: float,
    criterion: str = "l1",
    stacks: Sequence[str] = POINT_STACKS,
) -> dict[str, list[int]]:
    """Remove ``round(ratio * points)`` sampling points of every head and level of each
    deformable attention in the transformer's ``stacks`` (of :data:`POINT_STACKS`): those with
    the smallest :func:`deformable_point_importance` whatever the ``criterion`` (a point has no
    weights of its own to score), or drawn at random for a criterion without a saliency
    ("random", from torch's global generator: the caller seeds it). Returns each layer's points
    per head and level before and after."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"sampling point pruning ratio must be in (0, 1), got {ratio}")
    if not set(stacks) <= set(POINT_STACKS):
        raise ValueError(
            f"scope +points prunes the sampling points of {list(POINT_STACKS)} only, got "
            f"{list(stacks)}: the decoder scales its box-relative offsets by the point count"
        )
    counts: dict[str, list[int]] = {}
    for name, module in deformable_attentions(detector):
        if name.split(".", 1)[0] not in stacks:
            continue
        before = module.num_points
        count = heads_to_remove(before, ratio)
        importance = deformable_point_importance(module)
        points = [
            [
                _least_important(importance[h, level], count, criterion)
                for level in range(module.num_levels)
            ]
            for h in range(module.num_heads)
        ]
        remove_deformable_points(module, points)
        counts[name] = [before, module.num_points]
    if not counts:
        raise ValueError(
            f"scope +points: the detector has no deformable attention in {list(stacks)}"
        )
    log.info("sampling points per head and level pruned: %s", counts)
    return counts
