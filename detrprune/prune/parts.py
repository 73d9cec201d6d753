"""The parts a filter scope is made of (``backbone+ffn+attention``): a registry.

Each part is registered by :func:`register_part` in the module that implements it
(:mod:`detrprune.prune.filters`), in the order filter pruning applies them: the backbone's
channels first (one Torch-Pruning dependency graph, which ``residual`` widens to the residual
stream), then the transformer's FFN widths, its attention heads, and its sampling points (after
the heads, so that a layer's points are counted on the heads it keeps).

The scopes the config accepts (:data:`~detrprune.constants.FILTER_SCOPES`, which the schema
lists) and the parts that take a ratio of their own
(:data:`~detrprune.constants.PART_RATIO_PARTS`) are light constants the config check reads
without torch; a test checks them against this registry, so neither can name a part that is not
implemented here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PartStep:
    """What a part's pruner is asked to do: prune ``ratio`` of its units (its own ratio when the
    method's ``part_ratios`` gives one) ranked by ``criterion``, rounding kept widths down to a
    multiple of ``round_to``, in the transformer ``stacks``; or, given ``targets``
    (:func:`~detrprune.prune.filters.filter_shapes` of a model pruned from the same original), to
    those shapes. ``parts`` are all the parts of the scope; ``input_hw`` the image size a
    dependency graph is traced with."""

    ratio: float
    criterion: str
    round_to: int
    stacks: tuple[str, ...]
    parts: tuple[str, ...]
    input_hw: tuple[int, int]
    targets: Mapping[str, Mapping[str, int]] | None = None


@dataclass(frozen=True)
class PartResult:
    """What a part's pruner did: ``units`` (for each pruned layer, by qualified name, its
    ``[before, after]`` width, heads or points) and how many groups it held at the ``round_to``
    floor rather than emptied (``clamped``)."""

    units: dict[str, list[int]]
    clamped: int = 0


PartPruner = Callable[["nn.Module", PartStep], PartResult]


@dataclass(frozen=True)
class ScopePart:
    """A registered part: ``prune`` removes its units from a detector (``None`` for a part that
    widens another part's pruning instead: ``residual`` is read by the backbone's);
    ``own_ratio``: a method's ``part_ratios`` may give it a ratio of its own; ``stats_key``:
    where the prune job's statistics record its ``units``."""

    name: str
    description: str
    prune: PartPruner | None
    own_ratio: bool = False
    stats_key: str | None = None


_REGISTRY: dict[str, ScopePart] = {}


def register_part(
    name: str,
    *,
    description: str,
    own_ratio: bool = False,
    stats_key: str | None = None,
) -> Callable[[PartPruner], PartPruner]:
    """Register the decorated pruner as scope part ``name``; parts are applied in the order they
    are registered (see :class:`ScopePart` for the arguments)."""

    def register(prune: PartPruner) -> PartPruner:
        _add(ScopePart(name, description, prune, own_ratio, stats_key))
        return prune

    return register


def register_flag_part(name: str, *, description: str) -> None:
    """Register ``name`` as a part with no pruner of its own: another part's pruner reads it from
    :attr:`PartStep.parts` (``residual`` widens the backbone's dependency graph)."""
    _add(ScopePart(name, description, None))


def _add(part: ScopePart) -> None:
    if part.name in _REGISTRY:
        raise ValueError(f"scope part {part.name!r} is registered twice")
    _REGISTRY[part.name] = part


def scope_parts() -> dict[str, ScopePart]:
    """The registered parts by name, in the order they are applied."""
    import detrprune.prune.filters  # noqa: F401 (registers the parts it implements)

    return dict(_REGISTRY)
