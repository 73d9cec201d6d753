"""Criterion ``taylor``: |weight x training-loss gradient|, from seeded images of the training
split only, on real mmdet models; the gradients leave no trace on the pruned checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from detrprune.prune.gradients import accumulated_gradients, training_images
from detrprune.prune.methods import apply_pruning, prune_checkpoint
from detrprune.prune.spec import MethodSpec, MethodSpecError
from detrprune.train.checkpoint import load_detector

from .test_pruning import saved_micro_baseline

H, W = 96, 256  # the micro config's input (input_scale 256 x 96)


def _ids(path) -> set[int]:
    return {image["id"] for image in json.loads(path.read_text())["images"]}


def test_the_gradient_images_come_from_the_training_split_only(micro_data):
    train, val = _ids(micro_data["train_json"]), _ids(micro_data["val_json"])
    args = (micro_data["train_json"], micro_data["data_root"], (W, H))
    drawn = training_images(*args, count=4, seed=0)
    ids = [batch["data_samples"][0].img_id for batch in drawn]
    assert len(ids) == 4 and set(ids) <= train and not set(ids) & val
    # Seeded: the same seed draws the same images, another seed others.
    again = [b["data_samples"][0].img_id for b in training_images(*args, count=4, seed=0)]
    other = [b["data_samples"][0].img_id for b in training_images(*args, count=4, seed=1)]
    assert again == ids and other != ids
    # Each carries its ground truth in the input's pixels, for the loss.
    sample = drawn[0]["data_samples"][0]
    assert sample.img_shape[0] <= H and sample.img_shape[1] <= W
    assert len(sample.gt_instances.bboxes) == len(sample.gt_instances.labels)


def test_gradients_are_summed_then_cleared_and_statistics_untouched(tiny_detector, micro_data):
    detector, _ = tiny_detector
    batches = training_images(micro_data["train_json"], micro_data["data_root"], (W, H), 2, 0)
    bn = detector.backbone.bn1
    statistics = (bn.running_mean.clone(), bn.running_var.clone())
    frozen = detector.backbone.conv1.weight
    frozen.requires_grad_(False)  # as the recipe's frozen stem
    with accumulated_gradients(detector, batches) as loss:
        assert loss > 0
        assert frozen.grad is not None and frozen.grad.abs().sum() > 0
        encoder = next(iter(detector.encoder.parameters()))
        assert encoder.grad is not None
    assert all(p.grad is None for p in detector.parameters())
    assert not frozen.requires_grad
    assert torch.equal(bn.running_mean, statistics[0]) and torch.equal(
        bn.running_var, statistics[1]
    )


def test_taylor_ranks_otherwise_than_l1_and_reloads(tmp_path, micro, micro_data):
    baseline, _ = saved_micro_baseline(tmp_path, micro)
    kept = {}
    for criterion in ("l1", "taylor"):
        spec = {"kind": "filter", "scope": "backbone+ffn+attention", "criterion": criterion}
        out = tmp_path / f"{criterion}.pth"
        meta = prune_checkpoint(
            baseline,
            out,
            "m",
            spec,
            50,
            (H, W),
            seed=0,
            train_json=micro_data["train_json"],
            data_root=micro_data["data_root"],
        )
        model, _, _ = load_detector(out)  # prune_checkpoint has checked the reload already
        kept[criterion] = model.state_dict()
        assert meta["scope"] == (
            "backbone+ffn+attention" + ("" if criterion == "l1" else ":taylor")
        )
    # The same widths, other channels: some pruned tensor differs.
    assert kept["l1"].keys() == kept["taylor"].keys()
    assert all(kept["l1"][k].shape == kept["taylor"][k].shape for k in kept["l1"])
    assert any(not torch.equal(kept["l1"][k], kept["taylor"][k]) for k in kept["l1"])


def test_taylor_keeps_the_heads_with_most_weight_times_gradient(tiny_detector, micro_data):
    """Heads are ranked by the criterion's saliency |w x g| summed over each head's weights: the
    heads it removes from the encoder's first attention are those with the least."""
    from detrprune.prune.attention import deformable_head_importance
    from detrprune.prune.criteria import get_criterion

    detector, _ = tiny_detector
    batches = training_images(micro_data["train_json"], micro_data["data_root"], (W, H), 2, 0)
    attention = detector.encoder.layers[0].self_attn
    with accumulated_gradients(detector, batches):
        scores = deformable_head_importance(attention, get_criterion("taylor").saliency)
    expected = sorted(torch.sort(scores, stable=True).indices[:2].tolist())
    value_rows = attention.value_proj.weight.detach().clone()
    head_dim = value_rows.shape[0] // attention.num_heads
    spec = MethodSpec.from_config(
        {"kind": "filter", "scope": "backbone+attention", "criterion": "taylor"}
    )
    apply_pruning(detector, spec, 0.5, (H, W), gradient_batches=batches)
    kept = [h for h in range(4) if h not in expected]
    rows = [h * head_dim + i for h in kept for i in range(head_dim)]
    assert torch.equal(attention.value_proj.weight, value_rows[rows])


def test_gradient_images_belong_to_a_gradient_criterion():
    spec = MethodSpec.from_config({"kind": "filter", "scope": "backbone", "criterion": "taylor"})
    assert spec.gradient_images == 16 and spec.needs_gradients
    assert spec.describe() == "backbone:taylor"
    spec = {"kind": "filter", "scope": "backbone", "criterion": "taylor", "gradient_images": 4}
    assert MethodSpec.from_config(spec).describe() == "backbone:taylor:images4"
    with pytest.raises(MethodSpecError, match="only a criterion that ranks by gradients"):
        MethodSpec.from_config({"kind": "filter", "scope": "backbone", "gradient_images": 4})
    with pytest.raises(ValueError, match="ranks by gradients: give training images"):
        apply_pruning(torch.nn.Linear(2, 2), MethodSpec.from_config(spec), 0.5, (H, W))
