"""Criterion ``l1``: the L1 norm of the weights, the study's default ranking."""

from __future__ import annotations

from typing import Any

from detrprune.prune.criteria import register_criterion


def l1_saliency(weight, grad):  # noqa: ANN001, ARG001 (a Saliency; no gradient needed)
    """Each weight's magnitude: summed over a head's weights, its L1 norm."""
    return weight.abs()


@register_criterion(
    "l1",
    description="smallest L1 norm of the weights first (Li et al., ICLR 2017)",
    saliency=l1_saliency,
)
def l1_importance(group_reduction: str) -> Any:
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=1, group_reduction=group_reduction)
