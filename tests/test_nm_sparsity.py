"""N:M semi-structured weight pruning (scope ``2:4``) on a real mmdet Deformable DETR.

What only a GPU can show (the speed of the pattern on sparse tensor cores) is in
test_semi_structured.py; here: the pattern itself, after pruning and after fine-tuning, and
that the compact sparse checkpoint keeps it bit for bit.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from detrprune.config import ConfigError, validate_config
from detrprune.constants import NM_DEFAULT_PARTS, nm_pattern
from detrprune.prune.sparse_io import load_sparse, save_sparse
from detrprune.prune.spec import MethodSpec
from detrprune.prune.weights import (
    layer_role,
    nm_prune,
    prunable_weights,
    weight_part,
    weight_prune,
)
from detrprune.train.checkpoint import read_checkpoint

from .conftest import default_config
from .test_finetune import _finetune, _pruned_checkpoint
from .test_sparse_io import _assert_bit_exact


def _kept_magnitudes_by_brute_force(weight: torch.Tensor, n: int, m: int) -> list[list[float]]:
    """Per group, the magnitudes of the n-subset with the largest total, by trying them all.
    (Which of equal magnitudes stays is torch.topk's choice, so magnitudes are compared.)"""
    kept = []
    for row, start in itertools.product(range(weight.shape[0]), range(0, weight.shape[1], m)):
        group = weight[row, start : start + m].abs().tolist()
        best = max(itertools.combinations(range(m), n), key=lambda c: sum(group[i] for i in c))
        kept.append(sorted(group[i] for i in best))
    return kept


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_prune_keeps_the_n_largest_of_every_m_inputs(n, m):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4 * m, generator=generator)
    weight[0, :m] = 1.0  # all equal: any n of them, but exactly n
    weight[1, :m] = -0.5  # equal magnitudes of the other sign
    linear = nn.Linear(4 * m, 6, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    nm_prune(linear, ["weight"], n, m)
    pruned = linear.weight.detach()
    mask = pruned != 0
    assert torch.equal(mask.reshape(6, -1, m).sum(-1), torch.full((6, 4), n))
    assert torch.equal(pruned[mask], weight[mask])  # kept weights keep their values
    kept = [
        sorted(pruned[row, start : start + m].abs()[mask[row, start : start + m]].tolist())
        for row, start in itertools.product(range(6), range(0, 4 * m, m))
    ]
    assert kept == _kept_magnitudes_by_brute_force(weight, n, m)


def _assert_pattern(weight: torch.Tensor, n: int, m: int, where: str) -> None:
    nonzero = (weight != 0).reshape(weight.shape[0], -1, m).sum(-1)
    assert int(nonzero.max()) <= n, f"{where}: a group of {m} keeps {int(nonzero.max())} > {n}"


def _selected_linears(detector: nn.Module, parts=NM_DEFAULT_PARTS):
    return {
        name: module.weight
        for name, module, _ in prunable_weights(detector)
        if isinstance(module, nn.Linear) and weight_part(name) in parts
    }


def test_two_four_scope_prunes_every_transformer_linear_and_nothing_else(tiny_detector):
    detector, _ = tiny_detector
    before = {name: param.detach().clone() for name, param in detector.named_parameters()}
    stats = weight_prune(detector, 0.5, "2:4")
    selected = _selected_linears(detector)
    assert selected and stats["nm_layers"] == len(selected) and stats["nm_left_dense"] == []
    assert stats["modules"] == list(NM_DEFAULT_PARTS)
    # mmcv initialises attention_weights to zero: zeros already there count as pruned.
    assert 0.5 <= stats["sparsity"] < 0.7
    for name, weight in selected.items():
        _assert_pattern(weight, 2, 4, name)
        kept = weight != 0
        assert torch.equal(weight[kept], before[name][kept]), f"{name}: a kept weight changed"
        assert not torch.signbit(weight[~kept]).any(), f"{name}: -0.0 left"
    # Convolutions, the head, the sampling offsets and every bias are untouched.
    for name, param in detector.named_parameters():
        if name not in selected:
            assert torch.equal(param, before[name]), name


def test_layers_ffn_limits_two_four_to_the_encoders_feed_forward_blocks(tiny_detector):
    """``modules: [encoder], layers: [ffn]``: the encoder's FFN Linears follow 2:4; its attention
    projections, the decoder and everything else keep every weight."""
    detector, _ = tiny_detector
    before = {name: param.detach().clone() for name, param in detector.named_parameters()}
    stats = weight_prune(detector, 0.5, "2:4", modules=["encoder"], layers=["ffn"])
    ffn = {
        name: weight
        for name, weight in _selected_linears(detector, ("encoder",)).items()
        if ".ffn." in name
    }
    assert len(ffn) == 2 * len(detector.encoder.layers)
    assert stats["nm_layers"] == len(ffn) and stats["layers"] == ["ffn"]
    assert stats["sparsity"] == 0.5
    for name, weight in ffn.items():
        _assert_pattern(weight, 2, 4, name)
        assert int((weight == 0).sum()) == weight.numel() // 2, name
    for name, param in detector.named_parameters():
        if name not in ffn:
            assert torch.equal(param, before[name]), name
    spec = {"kind": "weight", "scope": "2:4", "modules": ["encoder"], "layers": ["ffn"]}
    assert MethodSpec.from_config(spec).describe() == "2:4:encoder:ffn"


def test_every_prunable_weight_has_the_layer_kind_its_name_says(tiny_detector):
    detector, _ = tiny_detector
    roles = {name: layer_role(name) for name, _, _ in prunable_weights(detector)}
    assert roles["decoder.layers.0.self_attn.attn.in_proj_weight"] == "attention"
    assert roles["decoder.layers.0.self_attn.attn.out_proj.weight"] == "attention"
    assert roles["encoder.layers.0.self_attn.value_proj.weight"] == "attention"
    assert roles["encoder.layers.0.ffn.layers.1.weight"] == "ffn"
    assert roles["bbox_head.reg_branches.0.0.weight"] == "other"
    assert roles["memory_trans_fc.weight"] == "other"
    # Nothing outside the transformer is an FFN or an attention projection.
    for name, role in roles.items():
        if weight_part(name) not in ("encoder", "decoder", "sampling_offsets"):
            assert role == "other", name


def test_a_linear_whose_width_is_no_multiple_of_m_stays_dense_and_is_named(tiny_detector):
    detector, _ = tiny_detector
    name, linear = next(
        (n, m)
        for n, m in detector.named_modules()
        if isinstance(m, nn.Linear) and weight_part(f"{n}.weight") == "encoder"
    )
    odd = nn.Linear(linear.in_features - 1, linear.out_features)
    parent, attribute = name.rsplit(".", 1)
    setattr(detector.get_submodule(parent), attribute, odd)
    stats = weight_prune(detector, 0.5, "2:4")
    assert stats["nm_left_dense"] == [f"{name}.weight"]
    assert int((odd.weight == 0).sum()) == 0


@pytest.mark.parametrize("ratio", [0.3, 0.9])
def test_a_ratio_other_than_the_patterns_sparsity_is_refused(tiny_detector, ratio):
    detector, _ = tiny_detector
    with pytest.raises(ValueError, match="2:4: the ratio is its sparsity, 50"):
        weight_prune(detector, ratio, "2:4")


def test_scope_grammar():
    assert nm_pattern("2:4") == (2, 4) and nm_pattern("layerwise") is None
    with pytest.raises(ValueError, match="keeps N >= M"):
        nm_pattern("4:4")


def test_config_refuses_ratios_the_pattern_cannot_give_in_one_line():
    config = default_config()
    config["pruning"]["methods"]["two_four"] = {"kind": "weight", "scope": "2:4", "ratios": [70]}
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value) == (
        "config: pruning.methods.two_four.ratios: scope 2:4 zeroes 50 % of the weights it "
        "prunes: its ratios must be [50], got [70]"
    )
    config["pruning"]["methods"]["two_four"]["ratios"] = [50]
    validate_config(config)


def test_the_sparse_checkpoint_keeps_the_pattern_bit_exactly(tiny_detector, tmp_path):
    detector, _ = tiny_detector
    weight_prune(detector, 0.5, "2:4")
    state = {k: v.detach().clone() for k, v in detector.state_dict().items()}
    path = tmp_path / "two_four.sparse"
    stats = save_sparse(state, path, meta={"scope": "2:4"})
    loaded, _ = load_sparse(path)
    assert stats["mask_tensors"] >= len(_selected_linears(detector))
    _assert_bit_exact(state, loaded)


@pytest.mark.slow
def test_fine_tuning_keeps_the_pattern(tiny_detector, micro, micro_data, tmp_path):
    spec = {"kind": "weight", "scope": "2:4"}
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.5)
    _finetune(pruned, micro, micro_data, tmp_path)
    before, _, _ = read_checkpoint(pruned)
    after, _, _ = read_checkpoint(tmp_path / "finetuned.pth")
    selected = [f"{name}" for name in _selected_linears(tiny_detector[0])]
    assert selected
    trained = 0
    for key in selected:
        _assert_pattern(after[key], 2, 4, key)
        zeros = before[key] == 0
        assert (after[key][zeros] == 0).all(), f"{key}: a pruned weight moved"
        trained += int(not torch.equal(after[key], before[key]))
    assert trained > len(selected) // 2, "fine-tuning did not train the kept weights"


def test_an_unquoted_n_m_scope_gets_a_hint_not_a_schema_dump(tmp_path):
    """YAML reads ``scope: 2:4`` as 124 (base 60): the error says to quote it."""
    import yaml

    text = "methods:\n  two_four: {kind: weight, scope: 2:4, ratios: [50]}\n"
    config = default_config()
    config["pruning"]["methods"].update(yaml.safe_load(text)["methods"])
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value) == (
        "config: pruning.methods.two_four.scope: 124 is a number: write an N:M scope in quotes, "
        'scope: "2:4"'
    )
