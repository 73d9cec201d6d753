"""Both pruners on a real mmdet Deformable DETR, and weights-only reload of what they save."""

from __future__ import annotations

import pytest
import torch

from detrprune.checkpoint import CheckpointError, load_detector, save_detector
from detrprune.model import DETECTOR_TYPE
from detrprune.pruning import (
    count_nonzero_parameters,
    count_parameters,
    filter_prune,
    prunable_weights,
    weight_prune,
)

H, W = 96, 256


def _batch(seed: int = 0) -> dict:
    from mmdet.structures import DetDataSample

    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, H, W), generator=generator, dtype=torch.uint8)
    sample = DetDataSample(
        metainfo=dict(img_shape=(H, W), ori_shape=(H, W), scale_factor=(1.0, 1.0))
    )
    return {"inputs": [image], "data_samples": [sample]}


@torch.no_grad()
def _predict(detector) -> tuple[torch.Tensor, torch.Tensor]:
    result = detector.test_step(_batch())[0].pred_instances
    return result.bboxes, result.scores


def test_filter_pruning_removes_backbone_channels_and_keeps_neck_outputs(tiny_detector):
    detector, _ = tiny_detector
    neck_widths = [
        m.out_channels for m in detector.neck.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    before_backbone = count_parameters(detector.backbone)
    stats = filter_prune(detector, 0.5, (H, W))
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
    from detrprune.pruning import sparsity_by_part

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
