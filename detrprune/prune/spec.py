"""A pruning method as one typed value: what ``pruning.methods.<name>`` says, less its ratios.

:meth:`MethodSpec.from_config` parses and checks a method's mapping once (the config check
turns its errors into one line naming the key); everything after works on the typed value:
:func:`detrprune.prune.methods.apply_pruning`, the prune job, the iterative loop, and the scope
as the summary spells it (:meth:`MethodSpec.describe`). The mapping itself stays what the rules
pass as params (``spec_of`` in ``rules/common.smk``), so this type changes nothing Snakemake
compares. Free of heavy imports: the config check uses it before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detrprune.constants import (
    DEFAULT_GRADIENT_IMAGES,
    DEFAULT_ROUND_TO,
    FILTER_SCOPES,
    POINT_STACKS,
    SPARSITY_PARTS,
    TRANSFORMER_STACKS,
    WEIGHT_LAYER_KINDS,
    WEIGHT_SCOPES,
    default_transformer_stacks,
    nm_pattern,
    weight_modules,
)
from detrprune.prune.criteria import criteria, get_criterion

KINDS = ("filter", "weight")
# The scopes each pruning kind understands (the schema lists their union).
KIND_SCOPES = {"filter": FILTER_SCOPES, "weight": WEIGHT_SCOPES}
# Keys only one kind takes, and how its error names them.
_KEY_KIND = {"modules": "weight", "layers": "weight", "criterion": "filter", "round_to": "filter"}
_WHAT = {
    "modules": "a module choice",
    "layers": "a layer choice",
    "criterion": "a criterion",
    "round_to": "a round_to",
}
_TRANSFORMER_PARTS = frozenset({"ffn", "attention", "points"})


class MethodSpecError(ValueError):
    """A method the study cannot run; the message starts at the key: ``.scope: ...``."""


@dataclass(frozen=True)
class MethodSpec:
    """What a pruning method prunes and how, its ratios aside.

    ``kind`` "filter" removes channels, FFN units, heads and points (:mod:`.filters`): ``scope``
    is a ``+``-joined set of parts, ranked by ``criterion`` (a name in
    :mod:`detrprune.prune.criteria`), kept widths rounded to ``round_to``, the transformer's
    parts pruned in ``transformer`` (None: :func:`default_transformer_stacks`) and
    ``part_ratios`` giving some parts a ratio of their own (percent); a criterion that ranks by
    the training loss's gradients sums them over ``gradient_images`` training images.
    ``kind`` "weight" zeroes weights (:mod:`.weights`): ``scope`` layerwise, global or N:M, in
    the parts ``modules`` and the layer kinds ``layers`` (None: the defaults)."""

    kind: str
    scope: str
    criterion: str = "l1"
    round_to: int = DEFAULT_ROUND_TO
    transformer: tuple[str, ...] | None = None
    part_ratios: Mapping[str, int] = field(default_factory=dict)
    modules: tuple[str, ...] | None = None
    layers: tuple[str, ...] | None = None
    gradient_images: int | None = None

    @classmethod
    def from_config(cls, method: Mapping[str, Any]) -> MethodSpec:
        """Parse a ``pruning.methods.<name>`` mapping (``ratios`` is ignored), checking every
        rule that spans its keys; raises :class:`MethodSpecError`."""
        kind, scope = method["kind"], method["scope"]
        if kind not in KINDS:
            raise MethodSpecError(f".kind: {kind!r} is not one of {', '.join(KINDS)}")
        scopes = KIND_SCOPES[kind]
        if scope not in scopes:
            raise MethodSpecError(
                f".scope: {scope!r} is not a {kind} pruning scope (expected one of "
                f"{', '.join(scopes)})"
            )
        for key in ("modules", "layers", "criterion", "round_to"):
            if key in method and kind != _KEY_KIND[key]:
                raise MethodSpecError(f".{key}: only {_KEY_KIND[key]} pruning takes {_WHAT[key]}")
            if key == "criterion" and key in method and method[key] not in criteria():
                raise MethodSpecError(
                    f".criterion: {method['criterion']!r} is not a registered criterion "
                    f"(one of {', '.join(criteria())}; docs/extending.md adds one)"
                )
        if "layers" in method and "other" not in method["layers"]:
            # FFNs and attention projections live in the transformer (sampling offsets too).
            modules = list(weight_modules(scope, method.get("modules")))
            if not set(modules) & {*TRANSFORMER_STACKS, "sampling_offsets"}:
                raise MethodSpecError(
                    f".layers: {method['layers']} are transformer layers, and modules "
                    f"{modules} has none of them"
                )
        gradients = kind == "filter" and get_criterion(method.get("criterion", "l1")).gradients
        if "gradient_images" in method and not gradients:
            raise MethodSpecError(
                ".gradient_images: only a criterion that ranks by gradients (taylor) takes "
                "training images"
            )
        parts = set(scope.split("+"))
        if "part_ratios" in method:
            if kind != "filter":
                raise MethodSpecError(".part_ratios: only filter pruning takes part ratios")
            extra = sorted(set(method["part_ratios"]) - parts)
            if extra:
                raise MethodSpecError(f".part_ratios: {', '.join(extra)} not in scope {scope!r}")
        if "transformer" in method and not _TRANSFORMER_PARTS & parts:
            raise MethodSpecError(
                f".transformer: only a filter scope with +ffn, +attention or +points prunes the "
                f"transformer (scope is {scope!r})"
            )
        if "points" in parts and not set(method.get("transformer", POINT_STACKS)) <= set(
            POINT_STACKS
        ):
            raise MethodSpecError(
                f".transformer: scope {scope} prunes the sampling points of "
                f"{list(POINT_STACKS)} only (the decoder scales its box-relative offsets by the "
                f"point count): leave transformer out or set it to {list(POINT_STACKS)}"
            )
        optional = {
            key: tuple(method[key]) if isinstance(method[key], list) else method[key]
            for key in ("criterion", "round_to", "transformer", "modules", "layers")
            if key in method
        }
        if gradients:
            optional["gradient_images"] = int(
                method.get("gradient_images", DEFAULT_GRADIENT_IMAGES)
            )
        return cls(
            kind=kind,
            scope=scope,
            part_ratios=dict(method.get("part_ratios", {})),
            **optional,
        )

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts of a filter scope (``backbone+ffn`` -> ``("backbone", "ffn")``)."""
        return tuple(self.scope.split("+"))

    @property
    def stacks(self) -> tuple[str, ...]:
        """The transformer stacks a filter method prunes its FFNs, heads and points in."""
        return self.transformer or default_transformer_stacks(self.scope)

    @property
    def needs_gradients(self) -> bool:
        """Whether the method's criterion ranks by the training loss's gradients."""
        return self.kind == "filter" and get_criterion(self.criterion).gradients

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` of an N:M weight scope, else None."""
        return nm_pattern(self.scope) if self.kind == "weight" else None

    def describe(self) -> str:
        """The scope as the summary shows it: the scope plus every option that differs from
        its default, e.g. ``backbone+ffn``, ``backbone:random`` (drawn at random, not by L1),
        ``backbone:round1`` (widths rounded otherwise than to :data:`DEFAULT_ROUND_TO`),
        ``backbone:taylor:images32`` (gradients over another number of training images),
        ``backbone+ffn+attention:encoder`` (FFNs and heads in the encoder only),
        ``backbone+attention+points:encoder:attention25+points50`` (parts at their own ratios,
        in percent); for weight methods the ``modules`` and ``layers`` chosen, e.g.
        ``layerwise:backbone`` or ``2:4:encoder:ffn``."""
        if self.kind == "filter":
            stacks = self.stacks
            ratios = self.part_ratios
            return (
                self.scope
                + (f":{'+'.join(stacks)}" if set(stacks) != set(TRANSFORMER_STACKS) else "")
                + (
                    ":" + "+".join(f"{part}{ratios[part]}" for part in sorted(ratios))
                    if ratios
                    else ""
                )
                + (f":{self.criterion}" if self.criterion != "l1" else "")
                + (
                    f":images{self.gradient_images}"
                    if self.gradient_images not in (None, DEFAULT_GRADIENT_IMAGES)
                    else ""
                )
                + (f":round{self.round_to}" if self.round_to != DEFAULT_ROUND_TO else "")
            )
        modules, layers = self.modules, self.layers
        return (
            self.scope
            + (f":{'+'.join(modules)}" if modules and tuple(modules) != SPARSITY_PARTS else "")
            + (f":{'+'.join(layers)}" if layers and set(layers) != set(WEIGHT_LAYER_KINDS) else "")
        )
