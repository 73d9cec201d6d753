"""How filter pruning ranks what it removes: a registry of criteria, one module each.

A criterion ranks the channels of every coupled group (Torch-Pruning's importance: the backbone's
convs, the residual stream, the FFNs' hidden units) and the heads of every attention layer. It is
registered by :func:`register_criterion` in the module that implements it, a module of this
package; every module of the package is imported when the registry is first read, so a new
criterion is one new file here (``docs/extending.md``). A criterion kept outside this repository
is a module of any installed distribution that names it under the entry-point group
``detrprune.criteria`` (:data:`ENTRY_POINT_GROUP`); those are imported too.

Importing this package loads neither torch nor Torch-Pruning: the config check reads the
registry's names, and a criterion builds its Torch-Pruning importance only when it prunes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Where distributions outside this repository declare their criteria modules.
ENTRY_POINT_GROUP = "detrprune.criteria"

# What a criterion scores a weight tensor by, element by element, to rank attention heads: the
# tensor and its gradient (None where none was computed). ``None`` in its place draws heads at
# random.
Saliency = Callable[["torch.Tensor", "torch.Tensor | None"], "torch.Tensor"]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: ``channel_importance(group_reduction)`` builds the Torch-Pruning
    importance that ranks coupled channel groups ("mean" over a group's layers, or "first":
    the group's root layer alone); ``saliency`` scores weights element-wise to rank attention
    heads (``None``: heads drawn at random from torch's generator, which the pruner seeds);
    ``gradients``: it ranks by the training loss's gradients, which the prune job accumulates
    in the weights' ``.grad`` first, from images of the training split
    (:mod:`detrprune.prune.gradients`)."""

    name: str
    description: str
    channel_importance: Callable[[str], Any]
    saliency: Saliency | None
    gradients: bool = False


_REGISTRY: dict[str, Criterion] = {}
_discovered = False


def register_criterion(
    name: str,
    *,
    description: str,
    saliency: Saliency | None,
    gradients: bool = False,
) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Register the decorated ``channel_importance`` factory as criterion ``name`` (the value of
    a filter method's ``criterion`` key); see :class:`Criterion` for the other arguments."""

    def register(channel_importance: Callable[[str], Any]) -> Callable[[str], Any]:
        if name in _REGISTRY:
            raise ValueError(f"pruning criterion {name!r} is registered twice")
        _REGISTRY[name] = Criterion(name, description, channel_importance, saliency, gradients)
        return channel_importance

    return register


def _discover() -> None:
    """Import every module of this package, then every ``detrprune.criteria`` entry point, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        importlib.import_module(module.name)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()


def criteria() -> dict[str, Criterion]:
    """Every registered criterion, by name (built-ins first, in module order)."""
    _discover()
    return dict(_REGISTRY)


def get_criterion(name: str) -> Criterion:
    """The criterion registered as ``name``; a one-line error naming the known ones otherwise."""
    known = criteria()
    if name not in known:
        raise ValueError(f"unknown pruning criterion {name!r}, expected one of {', '.join(known)}")
    return known[name]
