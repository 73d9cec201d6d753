"""Criterion ``l1``: the L1 norm of the weights, the study's default ranking."""

from __future__ import annotations

from typing import Any

from detrprune.prune.criteria import register_criterion


def _abs(weight, grad):  # noqa: ANN001, ARG001 (a Saliency; the gradient is not used)
    return weight.abs()


@register_criterion(
    "l1",
    description="smallest L1 norm of the weights first (Li et al., ICLR 2017)",
    saliency=_abs,
)
def l1_importance(group_reduction: str) -> Any:
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1, group_reduction=group_reduction)
