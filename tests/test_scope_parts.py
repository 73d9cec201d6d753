"""The filter scopes' parts: registered where they are implemented, and the light constants the
config check and the schema read agree with that registry."""

from __future__ import annotations

import pytest
import torch

from detrprune.constants import FILTER_SCOPES, PART_RATIO_PARTS
from detrprune.prune import parts as parts_module
from detrprune.prune.filters import filter_prune, filter_shapes
from detrprune.prune.parts import PartResult, ScopePart, register_part, scope_parts


def test_every_scope_names_registered_parts_backbone_first_in_the_order_they_apply():
    registered = list(scope_parts())
    used = set()
    for scope in FILTER_SCOPES:
        parts = scope.split("+")
        assert parts[0] == "backbone", scope
        assert len(set(parts)) == len(parts), scope
        assert all(part in registered for part in parts), scope
        # written in the order filter pruning applies them, so that a scope has one spelling
        assert parts == sorted(parts, key=registered.index), scope
        used.update(parts)
    assert used == set(registered), "a registered part no scope offers"


def test_the_parts_that_take_their_own_ratio_are_the_registered_ones():
    own = tuple(name for name, part in scope_parts().items() if part.own_ratio)
    assert own == PART_RATIO_PARTS


def test_every_part_but_a_flag_prunes_and_records_its_units():
    for name, part in scope_parts().items():
        assert part.description, name
        if part.prune is None:
            assert not part.own_ratio and part.stats_key is None, name
        else:
            assert part.stats_key or name == "backbone", name


def test_a_part_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'ffn' is registered twice"):
        register_part("ffn", description="again")(lambda detector, step: PartResult({}))


def test_filter_prune_applies_a_scopes_parts_in_order_with_their_own_ratios(
    tiny_detector, monkeypatch
):
    """Each of the scope's parts is called once, in registration order, with its own ratio where
    ``part_ratios`` gives one, the scope's parts, and the targets passed through; what it returns
    is what the statistics record."""
    detector, cfg = tiny_detector
    calls: list[tuple[str, float, tuple[str, ...], bool]] = []
    registry = dict(parts_module._REGISTRY)

    def recording(part: ScopePart) -> ScopePart:
        def prune(detector, step):
            calls.append((part.name, step.ratio, step.parts, step.targets is not None))
            return part.prune(detector, step)

        return ScopePart(part.name, part.description, prune, part.own_ratio, part.stats_key)

    monkeypatch.setattr(
        parts_module,
        "_REGISTRY",
        {name: recording(part) if part.prune else part for name, part in registry.items()},
    )
    scope = "backbone+residual+ffn+attention"
    hw = (64, 96)
    stats = filter_prune(detector, 0.5, hw, scope, part_ratios={"attention": 0.25})
    assert calls == [
        ("backbone", 0.5, tuple(scope.split("+")), False),
        ("ffn", 0.5, tuple(scope.split("+")), False),
        ("attention", 0.25, tuple(scope.split("+")), False),
    ]
    assert set(stats["ffn_hidden"]) and set(stats["attention_heads"])
    assert "sampling_points" not in stats

    # Pruning a fresh copy to the pruned model's shapes hands every part the targets.
    torch.manual_seed(0)
    from detrprune.train.model import build_detector

    fresh = build_detector(cfg)
    fresh.eval()
    calls.clear()
    filter_prune(fresh, 0.5, hw, scope, targets=filter_shapes(detector))
    assert [(name, given) for name, _, _, given in calls] == [
        ("backbone", True),
        ("ffn", True),
        ("attention", True),
    ]
    assert filter_shapes(fresh) == filter_shapes(detector)
