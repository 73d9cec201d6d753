"""Both pruners on a real mmdet Deformable DETR, and weights-only reload of what they save."""

from __future__ import annotations

import pytest
import torch

from detrprune.prune.counting import count_nonzero_parameters, count_parameters
from detrprune.prune.filters import filter_prune
from detrprune.prune.weights import prunable_weights, weight_prune
from detrprune.train.checkpoint import CheckpointError, load_detector, save_detector
from detrprune.train.model import DETECTOR_TYPE

from .conftest import PRUNING_SPECS, spec_id

H, W = 96, 256


def random_batch(seed: int = 0) -> dict:
    from mmdet.structures import DetDataSample

    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, H, W), generator=generator, dtype=torch.uint8)
    sample = DetDataSample(
        metainfo=dict(img_shape=(H, W), ori_shape=(H, W), scale_factor=(1.0, 1.0))
    )
    return {"inputs": [image], "data_samples": [sample]}


@torch.no_grad()
def _predict(detector) -> tuple[torch.Tensor, torch.Tensor]:
    result = detector.test_step(random_batch())[0].pred_instances
    return result.bboxes, result.scores


def _widths(backbone) -> dict[str, int]:
    return {
        n: m.out_channels for n, m in backbone.named_modules() if isinstance(m, torch.nn.Conv2d)
    }


def test_backbone_scope_prunes_inner_convs_and_keeps_the_residual_stream(tiny_detector):
    from detrprune.prune.filters import residual_stream_convs

    detector, _ = tiny_detector
    before = _widths(detector.backbone)
    kept = {id(m) for m in residual_stream_convs(detector.backbone)}
    filter_prune(detector, 0.5, (H, W))
    after = _widths(detector.backbone)
    for name, module in detector.backbone.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            if id(module) in kept:  # stem, blocks' last convs, downsample convs
                assert after[name] == before[name], name
            else:  # the blocks' inner convs
                assert after[name] == before[name] // 2, name
    assert detector.backbone.conv1.out_channels == 64
    assert "layer2.0.downsample.0" in after and after["layer2.0.conv2"] == before["layer2.0.conv2"]
    bboxes, scores = _predict(detector)
    assert bboxes.shape[1] == 4 and torch.isfinite(scores).all()


def test_residual_scope_also_removes_the_stream_and_keeps_neck_outputs(tiny_detector):
    detector, _ = tiny_detector
    neck_widths = [
        m.out_channels for m in detector.neck.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    before_backbone = count_parameters(detector.backbone)
    stats = filter_prune(detector, 0.5, (H, W), scope="backbone+residual")
    assert stats["params_after"] < stats["params_before"]
    # Channel ratio 0.5 on coupled convs removes about three quarters of their weights.
    assert count_parameters(detector.backbone) < 0.4 * before_backbone
    assert detector.backbone.conv1.out_channels == 32
    assert [
        m.out_channels for m in detector.neck.modules() if isinstance(m, torch.nn.Conv2d)
    ] == neck_widths
    bboxes, scores = _predict(detector)
    assert bboxes.shape[1] == 4 and torch.isfinite(scores).all()


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_weight_pruning_reaches_the_ratio_and_masks_are_permanent(tiny_detector, scope):
    detector, _ = tiny_detector

    def zero_fractions():
        return {
            name: float((getattr(module, param) == 0).float().mean())
            for name, module, param in prunable_weights(detector)
        }

    # Some layers start all-zero by design (the last box-regression layer, sampling offsets).
    zero_before = zero_fractions()
    stats = weight_prune(detector, 0.6, scope)
    assert stats["sparsity"] == pytest.approx(0.6, abs=0.01)
    state_keys = detector.state_dict().keys()
    assert not [k for k in state_keys if k.endswith(("_orig", "_mask"))]
    if scope == "layerwise":
        for name, zeros in zero_fractions().items():
            assert zeros == pytest.approx(max(0.6, zero_before[name]), abs=0.02), name
    assert count_nonzero_parameters(detector) < count_parameters(detector)


@pytest.mark.parametrize("method", ["filter", "weight"])
def test_pruned_checkpoint_reloads_weights_only_with_identical_outputs(
    tiny_detector, tmp_path, method
):
    detector, cfg = tiny_detector
    if method == "filter":
        filter_prune(detector, 0.3, (H, W))
    else:
        weight_prune(detector, 0.5, "layerwise")
    path = tmp_path / "model.pth"
    save_detector(detector, path, cfg, {"variant": method, "method": method, "ratio": 30})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "model_cfg", "meta", "state_dict"}
    reloaded, reloaded_cfg, meta = load_detector(path)
    assert meta["ratio"] == 30 and reloaded_cfg["type"] == DETECTOR_TYPE
    assert count_parameters(reloaded) == count_parameters(detector)
    expected_state, reloaded_state = detector.state_dict(), reloaded.state_dict()
    assert expected_state.keys() == reloaded_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(tensor, reloaded_state[name]), name
    expected, got = _predict(detector), _predict(reloaded)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="other.pth: not a detrprune-checkpoint-v1 file"):
        load_detector(path)


def test_ratio_outside_range_is_refused(tiny_detector):
    detector, _ = tiny_detector
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        weight_prune(detector, 1.0)
    with pytest.raises(ValueError, match="unknown scope"):
        weight_prune(detector, 0.5, "everything")


def test_sparsity_by_part_shows_global_pruning_emptying_sampling_offsets(tiny_detector):
    from detrprune.prune.weights import sparsity_by_part

    detector, _ = tiny_detector
    weight_prune(detector, 0.5, "global")
    parts = sparsity_by_part(detector)
    assert set(parts) >= {
        "sparsity_backbone",
        "sparsity_encoder",
        "sparsity_decoder",
        "sparsity_head",
        "sparsity_sampling_offsets",
    }
    # Freshly initialised sampling offsets are all zero: one global threshold takes them all.
    assert parts["sparsity_sampling_offsets"] == 1.0
    assert 0.0 < parts["sparsity_backbone"] < 1.0


def test_backbone_ffn_scope_prunes_ffn_hidden_rows_by_l1(tiny_detector):
    from detrprune.prune.filters import transformer_ffns

    detector, _ = tiny_detector
    ffns = dict(transformer_ffns(detector))
    assert len(ffns) == 2  # one encoder and one decoder layer at the micro size
    expected = {}
    for name, ffn in ffns.items():
        first = ffn.layers[0][0]
        rows = first.weight.detach().abs().sum(1)
        keep = sorted(torch.argsort(rows, descending=True)[: first.out_features // 2].tolist())
        expected[name] = (
            first.weight.detach()[keep].clone(),
            ffn.layers[1].weight[:, keep].clone(),
        )
    stats = filter_prune(detector, 0.5, (H, W), scope="backbone+ffn")
    for name, ffn in ffns.items():
        first, second = ffn.layers[0][0], ffn.layers[1]
        assert stats["ffn_hidden"][name] == [64, 32]
        assert first.out_features == second.in_features == ffn.feedforward_channels == 32
        assert second.out_features == first.in_features == 32  # the residual width stays
        # The rows kept are those of largest L1 norm, and the second Linear's inputs follow.
        assert torch.equal(first.weight, expected[name][0])
        assert torch.equal(second.weight, expected[name][1])
    bboxes, scores = _predict(detector)
    assert bboxes.shape[1] == 4 and torch.isfinite(scores).all()


def test_backbone_ffn_scope_removes_more_than_backbone_alone(micro):
    from detrprune.train.model import build_detector, model_config

    counts = {}
    for scope in ("backbone", "backbone+ffn", "backbone+residual", "backbone+residual+ffn"):
        torch.manual_seed(0)
        detector = build_detector(model_config(micro["model"]))
        detector.init_weights()
        detector.eval()
        counts[scope] = filter_prune(detector, 0.3, (H, W), scope=scope)["params_after"]
    assert counts["backbone+ffn"] < counts["backbone"]
    assert counts["backbone+residual"] < counts["backbone"]
    assert counts["backbone+residual+ffn"] < counts["backbone+residual"]


def test_weight_pruning_module_choice_touches_only_those_parts(tiny_detector):
    from detrprune.prune.weights import sparsity_by_part

    detector, _ = tiny_detector
    # A fresh model has zeros already (mmcv zero-initialises attention_weights): compare.
    before = sparsity_by_part(detector)
    stats = weight_prune(detector, 0.5, "global", modules=["backbone", "sampling_offsets"])
    assert stats["modules"] == ["backbone", "sampling_offsets"]
    after = sparsity_by_part(detector)
    assert after["sparsity_backbone"] > before["sparsity_backbone"] + 0.3
    for part in ("neck", "encoder", "decoder", "head"):
        assert after[f"sparsity_{part}"] == before[f"sparsity_{part}"], part
    with pytest.raises(ValueError, match="unknown part"):
        weight_prune(detector, 0.5, "layerwise", modules=["transformer"])


def test_weight_pruning_to_a_higher_ratio_extends_the_masks(tiny_detector):
    detector, _ = tiny_detector
    weight_prune(detector, 0.3, "layerwise")
    first = {name: (getattr(m, p) == 0).clone() for name, m, p in prunable_weights(detector)}
    stats = weight_prune(detector, 0.6, "layerwise")
    assert stats["sparsity"] == pytest.approx(0.6, abs=0.01)
    for name, module, param in prunable_weights(detector):
        assert (getattr(module, param)[first[name]] == 0).all(), name


def saved_micro_baseline(tmp_path, micro) -> tuple:
    """A seeded, freshly initialised micro detector saved as a baseline: (path, detector)."""
    from detrprune.train.model import build_detector, model_config

    torch.manual_seed(0)
    cfg = model_config(micro["model"])
    detector = build_detector(cfg)
    detector.init_weights()
    baseline = tmp_path / "baseline.pth"
    save_detector(
        detector, baseline, cfg, {"variant": "baseline", "method": "baseline", "ratio": 0}
    )
    return baseline, detector


@pytest.mark.parametrize("spec", PRUNING_SPECS, ids=spec_id)
def test_every_method_and_scope_reloads_with_identical_outputs(tmp_path, micro, spec):
    """prune_checkpoint saves, reloads into a fresh model and compares the raw outputs."""
    from detrprune.prune.methods import prune_checkpoint, verify_reload

    baseline, _ = saved_micro_baseline(tmp_path, micro)
    out = tmp_path / "pruned.pth"
    meta = prune_checkpoint(baseline, out, "m", spec, 40, (H, W))
    assert meta["variant"] == "prune/m/r40" and meta["kind"] == spec["kind"]
    model, _, saved = load_detector(out)
    assert saved == meta
    verify_reload(model, out, (H, W))
    # And the check has teeth: a perturbed model is told apart from its checkpoint. A bias, not
    # a weight: the class weights multiply a LayerNorm output, whose features sum to zero, so a
    # uniform shift of a weight can leave every output bit-identical on some CPUs.
    with torch.no_grad():
        model.bbox_head.cls_branches[0].bias.add_(1e-3)
    with pytest.raises(RuntimeError, match="differs from the saved one"):
        verify_reload(model, out, (H, W))


def test_a_truncated_checkpoint_is_named_in_one_line(tiny_detector, tmp_path):
    detector, cfg = tiny_detector
    path = tmp_path / "model.pth"
    save_detector(detector, path, cfg, {"variant": "x"})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"^{path}: not a readable checkpoint \(") as info:
        load_detector(path)
    assert "\n" not in str(info.value)


def test_saving_the_same_model_twice_gives_identical_bytes(tiny_detector, tmp_path):
    detector, cfg = tiny_detector
    first, second = tmp_path / "a" / "model.pth", tmp_path / "bb" / "other-name.pth"
    for path in (first, second):
        save_detector(detector, path, cfg, {"variant": "x"})
    assert first.read_bytes() == second.read_bytes()


def test_random_criterion_is_seeded_and_differs_from_l1(micro):
    """The random-criterion control keeps the L1 method's widths but draws other channels."""
    from detrprune.train.model import build_detector, model_config

    def pruned(criterion: str, seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        detector = build_detector(model_config(micro["model"]))
        detector.init_weights()
        detector.eval()
        filter_prune(detector, 0.5, (H, W), scope="backbone+ffn", criterion=criterion, seed=seed)
        return {k: v.clone() for k, v in detector.state_dict().items()}

    l1, random_a, random_a_again, random_b = (
        pruned("l1", 0),
        pruned("random", 0),
        pruned("random", 0),
        pruned("random", 1),
    )
    assert {k: v.shape for k, v in random_a.items()} == {k: v.shape for k, v in l1.items()}
    assert all(torch.equal(random_a[k], random_a_again[k]) for k in random_a)
    inner = "backbone.layer1.0.conv1.weight"
    ffn = "encoder.layers.0.ffn.layers.0.0.weight"
    assert ffn in l1
    for name in (inner, ffn):
        assert not torch.equal(random_a[name], l1[name]), name
        assert not torch.equal(random_a[name], random_b[name]), name
    with pytest.raises(ValueError, match="criterion"):
        pruned("l2", 0)


def test_round_to_keeps_every_pruned_width_a_multiple_of_it_and_reloads(tmp_path, micro):
    """round_to 8 rounds each kept width down to a multiple of 8 (Torch-Pruning's option), in the
    backbone and the FFNs; the checkpoint reloads with identical outputs. At ratio 0.3 the
    unrounded widths are not multiples of 8, so the option is what makes them so."""
    from detrprune.prune.filters import transformer_ffns
    from detrprune.prune.methods import prune_checkpoint
    from detrprune.prune.spec import MethodSpec

    baseline, detector = saved_micro_baseline(tmp_path, micro)
    full = _widths(detector.backbone)

    def pruned_widths(round_to: int) -> dict[str, int]:
        spec = {"kind": "filter", "scope": "backbone+ffn", "round_to": round_to}
        out = tmp_path / f"round{round_to}.pth"
        meta = prune_checkpoint(baseline, out, "m", spec, 30, (H, W))
        assert meta["scope"] == MethodSpec.from_config(spec).describe()
        model, _, _ = load_detector(out)
        widths = {k: v for k, v in _widths(model.backbone).items() if v != full[k]}
        widths |= {name: ffn.feedforward_channels for name, ffn in transformer_ffns(model)}
        return widths

    unrounded, rounded = pruned_widths(1), pruned_widths(8)
    assert rounded.keys() == unrounded.keys() and any("ffn" in name for name in rounded)
    assert any(width % 8 for width in unrounded.values())
    for name, width in rounded.items():
        assert width % 8 == 0 and unrounded[name] - 8 < width <= unrounded[name], name

    # The default (8) goes without saying; any other rounding is part of the scope's name.
    def describe(spec: dict) -> str:
        return MethodSpec.from_config(spec).describe()

    assert describe({"kind": "filter", "scope": "backbone"}) == "backbone"
    assert describe({"kind": "filter", "scope": "backbone", "round_to": 8}) == "backbone"
    assert describe({"kind": "filter", "scope": "backbone", "round_to": 1}) == "backbone:round1"


@pytest.mark.parametrize("round_to", [8, 1])
def test_a_high_ratio_prunes_every_group_and_empties_none(tmp_path, micro, round_to):
    """Torch-Pruning rounds a kept width down to 0 and then leaves that group unpruned: at r90
    with round_to 8, layer1's 64-wide inner convs stayed 64 wide while layer2's went to 8. Every
    group is narrower now, none is empty, and the checkpoint records the groups held at the
    floor. At r99 with round_to 1, int(64 x 0.01) = 0 kept channels emptied groups the same way."""
    from detrprune.prune.methods import prune_checkpoint

    baseline, detector = saved_micro_baseline(tmp_path, micro)
    full = _widths(detector.backbone)
    ratio = 90 if round_to == 8 else 99
    spec = {"kind": "filter", "scope": "backbone", "round_to": round_to}
    meta = prune_checkpoint(baseline, tmp_path / "high.pth", "m", spec, ratio, (H, W))
    model, _, saved_meta = load_detector(tmp_path / "high.pth")
    pruned = _widths(model.backbone)
    inner = [name for name in full if name.endswith(".conv1")]
    assert inner
    for name in inner:
        assert 0 < pruned[name] < full[name], (name, pruned[name], full[name])
        assert pruned[name] % round_to == 0, (name, pruned[name])
    assert meta["pruning"]["groups_clamped"] > 0
    assert saved_meta["pruning"]["groups_clamped"] == meta["pruning"]["groups_clamped"]


@pytest.mark.parametrize("scope", ["backbone+residual+ffn+attention", "backbone+attention+points"])
def test_targets_prune_a_pruned_model_to_the_one_shot_shapes(tiny_detector, scope):
    """``targets`` (the iterative loop's steps): a model already pruned at 20 % is pruned to the
    shapes of the same original pruned at 50 % in one shot, heads and points included, the
    channels ranked on its own weights; it still runs."""
    import copy

    from detrprune.prune.filters import filter_shapes
    from detrprune.prune.methods import apply_pruning
    from detrprune.prune.spec import MethodSpec

    detector, _ = tiny_detector
    spec = MethodSpec.from_config({"kind": "filter", "scope": scope, "round_to": 8})
    one_shot = copy.deepcopy(detector)
    apply_pruning(one_shot, spec, 0.5, (H, W))
    targets = filter_shapes(one_shot)
    apply_pruning(detector, spec, 0.2, (H, W))
    assert filter_shapes(detector) != targets
    apply_pruning(detector, spec, 0.5, (H, W), targets=targets)
    assert filter_shapes(detector) == targets
    shapes = {name: tuple(t.shape) for name, t in detector.state_dict().items()}
    assert shapes == {name: tuple(t.shape) for name, t in one_shot.state_dict().items()}
    bboxes, scores = _predict(detector)
    assert bboxes.shape[1] == 4 and torch.isfinite(scores).all()
