"""Whole attention heads (scope ``+attention``) and sampling points (scope ``+points``) removed
from a real mmdet Deformable DETR.

Reload and fine-tuning of the scope are swept with every other scope (``PRUNING_SPECS`` in
test_pruning.py and test_finetune.py); its full-size run is in test_full_study.py.

The micro detector has 4 heads in every attention layer: the encoder's and the decoder's
deformable attention (mmcv ``MultiScaleDeformableAttention``, 3 levels of 4 sampling points per
head) and the decoder's query self-attention (``nn.MultiheadAttention``).
"""

from __future__ import annotations

import pytest
import torch

from detrprune.prune.attention import (
    HeadPrunedMultiheadAttention,
    deformable_attentions,
    heads_to_remove,
    multihead_attentions,
    prune_attention_heads,
    prune_sampling_points,
    without_heads,
)
from detrprune.prune.filters import filter_prune
from detrprune.prune.methods import _raw_outputs, prune_checkpoint
from detrprune.train.checkpoint import CheckpointError, load_detector, save_detector
from detrprune.train.model import synthetic_batch

from .test_pruning import H, W, saved_micro_baseline

SCOPE = "backbone+residual+ffn+attention"


def _silence_head(detector, head: int) -> None:
    """Zero every weight that carries ``head``'s content in every attention layer."""
    with torch.no_grad():
        for _, module in deformable_attentions(detector):
            dim = module.value_proj.out_features // module.num_heads
            rows = slice(head * dim, (head + 1) * dim)
            module.value_proj.weight[rows] = 0
            module.value_proj.bias[rows] = 0
            module.output_proj.weight[:, rows] = 0
        for _, _, attention in multihead_attentions(detector):
            dim = attention.head_dim
            inner = attention.num_heads * dim
            for part in range(3):
                rows = slice(part * inner + head * dim, part * inner + (head + 1) * dim)
                attention.in_proj_weight[rows] = 0
                attention.in_proj_bias[rows] = 0
            attention.out_proj.weight[:, head * dim : (head + 1) * dim] = 0


def test_removing_a_silent_head_leaves_every_output_unchanged(tiny_detector):
    """A head whose content weights are all zero contributes nothing: L1 ranks it last, and
    removing it from every layer changes no output beyond float rounding."""
    detector, _ = tiny_detector
    _silence_head(detector, head=1)
    value_rows = {
        name: module.value_proj.weight.detach().clone()
        for name, module in deformable_attentions(detector)
    }
    batch = synthetic_batch((H, W))
    with torch.no_grad():
        before = _raw_outputs(detector, batch)
    counts = prune_attention_heads(detector, 0.25)
    assert counts and all(c == [4, 3] for c in counts.values()), counts
    assert any(".self_attn.attn" in name for name in counts)  # the decoder's self-attention
    assert sum("cross_attn" in name for name in counts) == 1
    for name, module in deformable_attentions(detector):
        dim = module.value_proj.out_features // module.num_heads
        kept = torch.cat([value_rows[name][:dim], value_rows[name][2 * dim :]])
        assert torch.equal(module.value_proj.weight, kept), name  # heads 0, 2, 3 stay
        assert module.sampling_offsets.out_features == 3 * module.num_levels * module.num_points * 2
    with torch.no_grad():
        after = _raw_outputs(detector, batch)
    assert len(before) == len(after)
    for expected, got in zip(before, after, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_the_pruned_self_attention_computes_what_torchs_module_does():
    """HeadPrunedMultiheadAttention with no head removed equals nn.MultiheadAttention, masks
    included, in eval mode."""
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(16, 4).eval()
    copy = without_heads(reference, []).eval()
    assert isinstance(copy, HeadPrunedMultiheadAttention)
    query, key = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    causal = torch.triu(torch.ones(5, 7, dtype=torch.bool), diagonal=3)
    for mask, pad in ((None, None), (causal, padding), (causal.float() * -1e4, None)):
        with torch.no_grad():
            expected = reference(query, key, key, attn_mask=mask, key_padding_mask=pad)[0]
            got = copy(query, key, key, attn_mask=mask, key_padding_mask=pad)[0]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("heads", "ratio", "removed"), [(8, 0.5, 4), (8, 0.3, 2), (8, 0.1, 1), (2, 0.9, 1)]
)
def test_heads_removed_per_layer(heads, ratio, removed):
    assert heads_to_remove(heads, ratio) == removed


def test_attention_scope_prunes_heads_reloads_and_counts_less_compute(tmp_path, micro):
    """The +attention scope removes half the heads of every layer on top of filter_all's parts;
    the checkpoint reloads weights-only into a fresh model, and fvcore counts less work in the
    encoder and decoder (grid_sample included) than the same scope without attention."""
    from detrprune.evaluate.metrics import fvcore_gmacs
    from detrprune.train.model import inference_batch

    from .conftest import REPO

    baseline, _ = saved_micro_baseline(tmp_path, micro)
    frames = sorted((REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2").glob("*"))
    gmacs = {}
    for scope in ("backbone+residual+ffn", SCOPE):
        out = tmp_path / f"{scope}.pth"
        meta = prune_checkpoint(baseline, out, "m", {"kind": "filter", "scope": scope}, 50, (H, W))
        model, _, _ = load_detector(out)  # prune_checkpoint has compared its outputs already
        gmacs[scope] = fvcore_gmacs(model, [inference_batch(frames[:1], (W, H))])
        if scope == SCOPE:
            heads = meta["pruning"]["attention_heads"]
            assert heads and all(c == [4, 2] for c in heads.values())
            assert all(m.num_heads == 2 for _, m in deformable_attentions(model))
            assert all(a.num_heads == 2 for _, _, a in multihead_attentions(model))
    plain, pruned = gmacs["backbone+residual+ffn"], gmacs[SCOPE]
    for part in ("gmacs_encoder", "gmacs_decoder"):
        assert pruned[part] < plain[part], part
    assert pruned["gmacs_backbone"] == pytest.approx(plain["gmacs_backbone"])
    sampled = [op for op in plain["gmacs_by_operator"] if "grid_sampler" in op]
    assert sampled, plain["gmacs_by_operator"]
    for op in sampled:
        assert pruned["gmacs_by_operator"][op] == pytest.approx(plain["gmacs_by_operator"][op] / 2)


def test_encoder_only_prunes_the_encoders_ffns_and_heads_and_reloads(tmp_path, micro):
    """``transformer: [encoder]`` prunes the encoder's FFNs and heads and leaves every decoder
    layer as it was; the checkpoint reloads into a fresh model; the scope says so."""
    from detrprune.prune.filters import transformer_ffns

    baseline, _ = saved_micro_baseline(tmp_path, micro)
    out = tmp_path / "encoder.pth"
    spec = {"kind": "filter", "scope": "backbone+ffn+attention", "transformer": ["encoder"]}
    meta = prune_checkpoint(baseline, out, "m", spec, 50, (H, W))
    assert meta["scope"] == "backbone+ffn+attention:encoder"
    encoder_attentions = [
        name for name, _ in deformable_attentions(load_detector(baseline)[0]) if "encoder." in name
    ]
    assert encoder_attentions and set(meta["pruning"]["attention_heads"]) == set(encoder_attentions)
    assert all(n.startswith("encoder.") for n in meta["pruning"]["ffn_hidden"])
    model, _, _ = load_detector(out)  # prune_checkpoint has compared its outputs already
    full = micro["model"]["ffn_dims"]
    for name, ffn in transformer_ffns(model):
        hidden = next(m for m in ffn.modules() if isinstance(m, torch.nn.Linear)).out_features
        assert hidden == (full // 2 if name.startswith("encoder.") else full), name
    for name, module in deformable_attentions(model):
        assert module.num_heads == (2 if name.startswith("encoder.") else 4), name
    assert all(a.num_heads == 4 for _, _, a in multihead_attentions(model))
    assert not any(
        isinstance(a, HeadPrunedMultiheadAttention) for _, _, a in multihead_attentions(model)
    )


def test_random_head_choice_is_seeded(micro):
    from detrprune.train.model import build_detector, model_config

    def kept_value_rows(criterion: str, seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        detector = build_detector(model_config(micro["model"]))
        detector.init_weights()
        filter_prune(detector, 0.5, (H, W), scope=SCOPE, criterion=criterion, seed=seed)
        return detector.encoder.layers[0].self_attn.value_proj.weight.detach().clone()

    first, again, other = (kept_value_rows("random", s) for s in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    ("prune", "tensor", "rows_cut", "message"),
    [
        (prune_attention_heads, "value_proj", 1, "not a whole number of heads"),
        (prune_sampling_points, "sampling_offsets", 2, "not a whole number of points"),
    ],
)
def test_a_count_that_does_not_divide_is_refused(
    tiny_detector, tmp_path, prune, tensor, rows_cut, message
):
    """A saved deformable attention whose rows are not whole heads (value_proj) or whole points
    per head and level (sampling_offsets) is refused, not loaded with wrong counts."""
    detector, cfg = tiny_detector
    prune(detector, 0.5)
    path = tmp_path / "model.pth"
    save_detector(detector, path, cfg, {"variant": "x"})
    payload = torch.load(path, weights_only=True)
    name = next(name for name, _ in deformable_attentions(detector))
    key = f"{name}.{tensor}.weight"
    payload["state_dict"][key] = payload["state_dict"][key][:-rows_cut]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_detector(path)


def _silence_point(detector, point: int) -> None:
    """Give ``point`` of every head and level of every deformable attention a logit of -1e4:
    a softmax weight of exactly zero, whatever the query."""
    with torch.no_grad():
        for _, module in deformable_attentions(detector):
            heads, levels, points = module.num_heads, module.num_levels, module.num_points
            weight = module.attention_weights.weight.view(heads, levels, points, -1)
            bias = module.attention_weights.bias.view(heads, levels, points)
            weight[:, :, point] = 0
            bias[:, :, point] = -1e4


def test_removing_a_silent_sampling_point_leaves_every_output_unchanged(tiny_detector):
    """A point no head ever attends to samples nothing: its bias ranks it last, and removing it
    from every head and level of the encoder changes no output beyond float rounding; heads,
    value and output projections stay whole. The decoder's points are refused."""
    detector, _ = tiny_detector
    _silence_point(detector, point=2)
    offsets = {
        name: module.sampling_offsets.weight.detach().clone().view(4, 3, 4, 2, -1)
        for name, module in deformable_attentions(detector)
    }
    batch = synthetic_batch((H, W))
    with torch.no_grad():
        before = _raw_outputs(detector, batch)
    counts = prune_sampling_points(detector, 0.25)
    assert counts == {"encoder.layers.0.self_attn": [4, 3]}
    for name, module in deformable_attentions(detector):
        if not name.startswith("encoder."):
            assert module.num_points == 4
            continue
        assert module.num_heads == 4 and module.num_points == 3
        assert module.value_proj.out_features == module.output_proj.in_features == 32
        kept = offsets[name][:, :, [0, 1, 3]].reshape(module.sampling_offsets.weight.shape)
        assert torch.equal(module.sampling_offsets.weight, kept), name
    with torch.no_grad():
        after = _raw_outputs(detector, batch)
    for expected, got in zip(before, after, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prunes the sampling points of \\['encoder'\\] only"):
        prune_sampling_points(detector, 0.25, stacks=("encoder", "decoder"))


def test_points_scope_keeps_the_heads_reloads_and_halves_the_sampling(tmp_path, micro):
    """``backbone+points`` at 50 % keeps 2 of 4 points per head and level in the encoder only;
    the checkpoint reloads weights-only into a fresh model, and fvcore counts half the
    grid_sample work of the encoder, whose projections are untouched, against ``backbone``."""
    from detrprune.evaluate.metrics import fvcore_gmacs
    from detrprune.train.model import inference_batch

    from .conftest import REPO

    baseline, _ = saved_micro_baseline(tmp_path, micro)
    frame = sorted((REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2").glob("*"))
    specs = {
        "backbone": {"kind": "filter", "scope": "backbone"},
        "points": {"kind": "filter", "scope": "backbone+points", "transformer": ["encoder"]},
    }
    gmacs, models = {}, {}
    for name, spec in specs.items():
        out = tmp_path / f"{name}.pth"
        meta = prune_checkpoint(baseline, out, "m", spec, 50, (H, W))
        models[name], _, _ = load_detector(out)  # prune_checkpoint compared its outputs already
        gmacs[name] = fvcore_gmacs(models[name], [inference_batch(frame[:1], (W, H))])
    assert meta["scope"] == "backbone+points:encoder"
    assert meta["pruning"]["sampling_points"] == {"encoder.layers.0.self_attn": [4, 2]}
    for name, module in deformable_attentions(models["points"]):
        assert module.num_heads == 4, name
        assert module.num_points == (2 if name.startswith("encoder.") else 4), name
    plain, pruned = gmacs["backbone"], gmacs["points"]
    assert pruned["gmacs_encoder"] < plain["gmacs_encoder"]
    for part in ("gmacs_backbone", "gmacs_decoder"):
        assert pruned[part] == pytest.approx(plain[part]), part
    sampled = [op for op in plain["gmacs_by_operator"] if "grid_sampler" in op]
    assert sampled, plain["gmacs_by_operator"]
    encoder_share = {  # the decoder's sampling is untouched: only the encoder's half goes
        op: pruned["gmacs_by_operator"][op] / plain["gmacs_by_operator"][op] for op in sampled
    }
    assert all(0.5 < share < 1.0 for share in encoder_share.values()), encoder_share


def test_part_ratios_prune_heads_and_points_at_their_own_ratios(tmp_path, micro):
    """``part_ratios`` give heads and points their own ratios while the target's prunes the
    backbone: ``backbone+attention+points`` at 50 % with heads at 25 % and points at 50 % keeps
    3 of 4 encoder heads with 2 of 4 points each, leaves the decoder whole, prunes the backbone
    exactly as ``backbone`` at 50 %, and reloads."""
    baseline, _ = saved_micro_baseline(tmp_path, micro)
    specs = {
        "backbone": {"kind": "filter", "scope": "backbone"},
        "mixed": {
            "kind": "filter",
            "scope": "backbone+attention+points",
            "part_ratios": {"points": 50, "attention": 25},
        },
    }
    models, metas = {}, {}
    for name, spec in specs.items():
        out = tmp_path / f"{name}.pth"
        metas[name] = prune_checkpoint(baseline, out, "m", spec, 50, (H, W))
        models[name], _, _ = load_detector(out)  # prune_checkpoint compared its outputs already
    meta = metas["mixed"]
    assert meta["scope"] == "backbone+attention+points:encoder:attention25+points50"
    assert meta["pruning"]["attention_heads"] == {"encoder.layers.0.self_attn": [4, 3]}
    assert meta["pruning"]["sampling_points"] == {"encoder.layers.0.self_attn": [4, 2]}
    for name, module in deformable_attentions(models["mixed"]):
        expected = (3, 2) if name.startswith("encoder.") else (4, 4)
        assert (module.num_heads, module.num_points) == expected, name
    backbones = [models[name].backbone.state_dict() for name in specs]
    assert {k: v.shape for k, v in backbones[0].items()} == {
        k: v.shape for k, v in backbones[1].items()
    }
    with pytest.raises(ValueError, match="'ffn' is not a part of scope 'backbone\\+points'"):
        filter_prune(models["backbone"], 0.5, (H, W), "backbone+points", part_ratios={"ffn": 0.5})
