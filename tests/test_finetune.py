"""Fine-tuning a pruned checkpoint with mmengine's Runner: weights kept, zeros kept, reloadable."""

from __future__ import annotations

import json

import pytest
import torch

from detrprune.constants import CLASSES
from detrprune.evaluate.metrics import coco_accuracy
from detrprune.prune.methods import apply_pruning, verify_reload
from detrprune.prune.spec import MethodSpec
from detrprune.train.checkpoint import load_detector, read_checkpoint, save_detector
from detrprune.train.model import build_detector, model_config
from detrprune.train.runner import ZERO_MASK_SUFFIX, attach_zero_masks, finetune_checkpoint

from .conftest import PRUNING_SPECS, spec_id

pytestmark = pytest.mark.slow

FINETUNE = {"iters": 3, "lr": 1e-3, "warmup_iters": 1}


LAYERWISE = MethodSpec.from_config({"kind": "weight", "scope": "layerwise"})


def _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, ratio):
    detector, cfg = tiny_detector
    width, height = micro["model"]["input_scale"]
    apply_pruning(detector, MethodSpec.from_config(spec), ratio, (height, width))
    path = tmp_path / "pruned.pth"
    meta = {"variant": "prune/x/r50", "method": "x", "ratio": 50, "kind": spec["kind"]}
    save_detector(detector, path, cfg, meta)
    return path


def _finetune(path, micro, micro_data, tmp_path, finetune=FINETUNE, validate=False):
    return finetune_checkpoint(
        path,
        micro["model"],
        micro["train"],
        finetune,
        train_json=micro_data["train_json"],
        val_json=micro_data["val_json"],
        data_root=micro_data["data_root"],
        work_dir=tmp_path / "work",
        out_model=tmp_path / "finetuned.pth",
        seed=micro["seed"],
        validate=validate,
    )


def test_weight_pruned_zeros_stay_zero_while_the_rest_trains(
    tiny_detector, micro, micro_data, tmp_path
):
    spec = {"kind": "weight", "scope": "layerwise"}
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.5)
    result = _finetune(pruned, micro, micro_data, tmp_path)
    before, _, _ = read_checkpoint(pruned)
    after, _, meta = read_checkpoint(tmp_path / "finetuned.pth")
    assert meta["finetuned"] is True and meta["variant"] == "finetune/x/r50"
    assert result["meta"] == meta
    # A plain state dict again: the masks were folded back in.
    assert before.keys() == after.keys()
    assert not any(k.endswith(("_orig", "_mask")) for k in after)
    changed = 0
    for key, weight in before.items():
        if not key.endswith("weight") or weight.dim() < 2:
            continue
        zeros = weight == 0
        assert zeros.any(), key
        assert (after[key][zeros] == 0).all(), f"{key}: a pruned weight moved"
        # +0.0, not -0.0: "zero" is all bits zero for the sparse format.
        assert not torch.signbit(after[key][zeros]).any(), key
        changed += int(not torch.equal(after[key][~zeros], weight[~zeros]))
    assert changed > 10, "fine-tuning did not train the remaining weights"


def test_weight_pruned_model_with_frozen_stages_finetunes_and_keeps_frozen_zeros(
    micro, micro_data, tmp_path
):
    """frozen_stages freezes the stem and layer1 (as the full study does): their pruned
    weights get no gradient, so no hook, and must still be zero (and unchanged) afterwards."""
    micro["model"]["frozen_stages"] = 1
    torch.manual_seed(0)
    cfg = model_config(micro["model"])
    detector = build_detector(cfg)
    detector.init_weights()
    detector.eval()
    width, height = micro["model"]["input_scale"]
    apply_pruning(detector, LAYERWISE, 0.5, (height, width))
    pruned = tmp_path / "pruned.pth"
    save_detector(detector, pruned, cfg, {"variant": "prune/x/r50", "kind": "weight"})
    _finetune(pruned, micro, micro_data, tmp_path)
    before, _, _ = read_checkpoint(pruned)
    after, _, _ = read_checkpoint(tmp_path / "finetuned.pth")
    frozen = [k for k in before if k.startswith(("backbone.conv1.", "backbone.layer1."))]
    assert any(k.endswith("conv1.weight") for k in frozen)
    for key in frozen:
        assert torch.equal(before[key], after[key]), f"{key}: a frozen weight moved"
    for key in (k for k in before if k.endswith("weight") and before[k].dim() >= 2):
        zeros = before[key] == 0
        assert (after[key][zeros] == 0).all(), f"{key}: a pruned weight moved"
    trained = [k for k in before if k.startswith("backbone.layer2.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_zero_masks_follow_the_model_to_its_device(tiny_detector, micro):
    """What the CUDA fine-tune needs: masks move with the model (here to the meta device;
    only a GPU shows the CUDA case itself, see `make gpu-smoke`)."""
    detector, _ = tiny_detector
    width, height = micro["model"]["input_scale"]
    apply_pruning(detector, LAYERWISE, 0.5, (height, width))
    assert attach_zero_masks(detector) > 0
    detector.to("meta")
    masks = [b for n, b in detector.named_buffers() if n.endswith(ZERO_MASK_SUFFIX)]
    assert masks and all(mask.device.type == "meta" for mask in masks)
    assert not any(key.endswith(ZERO_MASK_SUFFIX) for key in detector.state_dict())


def test_runner_starts_from_the_pruned_weights_not_a_fresh_init(
    tiny_detector, micro, micro_data, tmp_path
):
    """mmdet's init_weights would re-initialise the transformer when the Runner starts."""
    spec = {"kind": "filter", "scope": "backbone+ffn"}
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.5)
    # lr 0: no parameter may change, so any difference is a re-initialisation.
    result = _finetune(pruned, micro, micro_data, tmp_path, dict(FINETUNE, lr=0.0), validate=True)
    before, _, _ = read_checkpoint(pruned)
    after, _, _ = read_checkpoint(tmp_path / "finetuned.pth")
    params = {name for name, _ in load_detector(pruned)[0].named_parameters()}
    for key in params:
        assert torch.equal(before[key], after[key]), f"{key} changed at lr 0"

    # The Runner's first validation (before any iteration) equals the pruned model's own.
    model, _, _ = load_detector(pruned)
    width, height = micro["model"]["input_scale"]
    expected, _ = coco_accuracy(
        model, micro_data["val_json"], micro_data["data_root"], (width, height), CLASSES
    )
    first = result["validations"][0]
    assert first["iter"] == 0
    assert first["coco/bbox_mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert first["coco/bbox_mAP_50"] == pytest.approx(expected["mAP50"], abs=1e-12)
    assert result["validations"][-1]["iter"] == FINETUNE["iters"]


@pytest.mark.parametrize("spec", PRUNING_SPECS, ids=spec_id)
def test_finetuned_checkpoint_reloads_with_identical_outputs(
    tiny_detector, micro, micro_data, tmp_path, spec
):
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.3)
    width, height = micro["model"]["input_scale"]
    verify_reload(load_detector(pruned)[0], pruned, (height, width))
    result = _finetune(pruned, micro, micro_data, tmp_path, dict(FINETUNE, iters=1))
    finetuned = tmp_path / "finetuned.pth"
    model, _, meta = load_detector(finetuned)
    assert meta == result["meta"]
    verify_reload(model, finetuned, (height, width))


def test_a_rerun_with_another_input_does_not_resume_the_old_work_dir(
    tiny_detector, micro, micro_data, tmp_path
):
    spec = {"kind": "weight", "scope": "layerwise"}
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.3)
    _finetune(pruned, micro, micro_data, tmp_path, dict(FINETUNE, iters=2))
    # Same path, other content (as when the baseline was retrained): the work dir is stale.
    model, cfg, meta = load_detector(pruned)
    apply_pruning(model, MethodSpec.from_config(spec), 0.6, (1, 1))
    save_detector(model, pruned, cfg, meta)
    _finetune(pruned, micro, micro_data, tmp_path, dict(FINETUNE, iters=2))
    after, _, _ = read_checkpoint(tmp_path / "finetuned.pth")
    weights = [t for k, t in after.items() if k.endswith("weight") and t.dim() >= 2]
    sparsity = sum(int((t == 0).sum()) for t in weights) / sum(t.numel() for t in weights)
    assert sparsity > 0.55


class _Killed(Exception):
    """Stands in for SIGKILL: the run stops where it is, its work folder stays."""


@pytest.mark.parametrize("kill_at", ["training", "final validation"])
def test_validations_survive_a_kill(tiny_detector, micro, micro_data, tmp_path, kill_at):
    """A fine-tune killed mid-way, or during its final validation (after its last checkpoint),
    still reports the validation before its first iteration and the one after its last."""
    from mmengine.runner import IterBasedTrainLoop, ValLoop

    spec = {"kind": "weight", "scope": "layerwise"}
    pruned = _pruned_checkpoint(tiny_detector, micro, tmp_path, spec, 0.5)
    micro["train"]["checkpoint_interval"] = 1
    finetune = dict(FINETUNE, iters=2)
    expected = _finetune(pruned, micro, micro_data, tmp_path / "uninterrupted", finetune, True)
    assert [r["iter"] for r in expected["validations"]] == [0, 2]

    run_iter, run_val = IterBasedTrainLoop.run_iter, ValLoop.run

    def iteration_killed_at_the_second(loop, data_batch):
        if loop.iter == 1:  # after the checkpoint of iteration 1
            raise _Killed
        return run_iter(loop, data_batch)

    def final_validation_killed(loop):
        if loop.runner.iter == 2:
            raise _Killed
        return run_val(loop)

    target, patch = {
        "training": (IterBasedTrainLoop, ("run_iter", iteration_killed_at_the_second)),
        "final validation": (ValLoop, ("run", final_validation_killed)),
    }[kill_at]
    setattr(target, *patch)
    try:
        with pytest.raises(_Killed):
            _finetune(pruned, micro, micro_data, tmp_path, finetune, validate=True)
    finally:
        IterBasedTrainLoop.run_iter, ValLoop.run = run_iter, run_val
    assert not (tmp_path / "finetuned.pth").exists()
    assert (tmp_path / "work" / "iter_1.pth").exists(), "a killed run keeps what it resumes from"
    resumed = _finetune(pruned, micro, micro_data, tmp_path, finetune, validate=True)
    # Finished, it keeps only the final checkpoint (weights and AdamW's moments).
    for work in (tmp_path / "work", tmp_path / "uninterrupted" / "work"):
        assert sorted(path.name for path in work.glob("*.pth")) == ["iter_2.pth"], work

    def as_text(validations):  # NaN (no Cyclist in the split) equals NaN here
        return json.dumps(validations, sort_keys=True)

    assert as_text(resumed["validations"]) == as_text(expected["validations"])
