"""Criterion ``taylor``: first-order Taylor importance, ``|weight x gradient|`` of the training
loss (Molchanov et al., CVPR 2019): what removing a weight would change in the loss, to first
order. Data-driven: the prune job first sums the loss gradients of ``gradient_images`` seeded
images of the training split (:mod:`detrprune.prune.gradients`)."""

from __future__ import annotations

from typing import Any

from detrprune.prune.criteria import register_criterion


def _taylor(weight, grad):  # noqa: ANN001 (a Saliency)
    if grad is None:
        raise ValueError("criterion taylor: a weight has no gradient (none was accumulated)")
    return (weight * grad).abs()


@register_criterion(
    "taylor",
    description="smallest |weight x loss gradient| first, from training images "
    "(Molchanov et al., CVPR 2019)",
    saliency=_taylor,
    gradients=True,
)
def taylor_importance(group_reduction: str) -> Any:
    import torch_pruning as tp

    return tp.importance.GroupTaylorImportance(group_reduction=group_reduction)
