"""Criterion ``random``: channels and heads drawn at random (seeded), the control that says
whether a criterion beats chance."""

from __future__ import annotations

from typing import Any

from detrprune.prune.criteria import register_criterion


@register_criterion(
    "random",
    description="drawn at random from the study's seed: the control for a criterion",
    saliency=None,
)
def random_importance(group_reduction: str) -> Any:  # noqa: ARG001 (nothing to reduce)
    import torch_pruning as tp

    return tp.importance.RandomImportance()
