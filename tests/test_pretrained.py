"""Pretrained starts (model.init): files read without running pickled code, keys adapted, every
tensor checked, and the Runner's baseline training starting from them."""

from __future__ import annotations

import pytest
import torch

from detrprune.data.download import sha256_file
from detrprune.train.checkpoint import read_checkpoint
from detrprune.train.model import build_detector, model_config
from detrprune.train.pretrained import (
    CLASS_BRANCHES,
    PretrainedError,
    load_pretrained,
    read_state_dict,
)
from detrprune.train.runner import train_baseline

from .test_full_config import full_config, save_model_zoo_detector


def _resnet_state(depth: int) -> dict[str, torch.Tensor]:
    """A randomly initialised ResNet's state dict: the names torchvision and mmdet share."""
    from mmdet.models.backbones import ResNet

    torch.manual_seed(depth)
    backbone = ResNet(depth=depth, out_indices=(1, 2, 3))
    backbone.init_weights()
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics an ImageNet file would have
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return backbone.state_dict()


def _fresh_detector(micro):
    torch.manual_seed(1)
    detector = build_detector(model_config(micro["model"]))
    detector.init_weights()
    return detector


@pytest.mark.parametrize("layout", ["torchvision", "mmpretrain"])
def test_an_imagenet_backbone_in_either_layout_is_loaded_exactly(micro, tmp_path, layout):
    resnet = _resnet_state(18)
    if layout == "torchvision":
        file_state = {**resnet, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    else:
        file_state = {f"backbone.{name}": value for name, value in resnet.items()}
        file_state["head.fc.weight"] = torch.randn(1000, 512)
        file_state = {"meta": {"mmpretrain_version": "1.2.0"}, "state_dict": file_state}
    path = tmp_path / "resnet18.pth"
    torch.save(file_state, path)
    detector = _fresh_detector(micro)
    neck_before = {k: v.clone() for k, v in detector.neck.state_dict().items()}
    load_pretrained(detector, {"backbone": str(path)})
    loaded = detector.backbone.state_dict()
    for name, value in resnet.items():
        assert torch.equal(loaded[name], value), name
    assert all(torch.equal(detector.neck.state_dict()[k], v) for k, v in neck_before.items())


def test_a_backbone_of_another_depth_is_an_error_naming_key_and_file(micro, tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(_resnet_state(50), path)
    with pytest.raises(PretrainedError) as error:
        load_pretrained(_fresh_detector(micro), {"backbone": str(path)})
    message = str(error.value)
    assert message.startswith(f"model.init.backbone: {path}: ") and "\n" not in message


class _Pickled:
    """Stands for the objects of some library a pickle may hold (and run code to rebuild)."""


def test_a_file_holding_pickled_objects_is_refused_unless_its_sha256_is_pinned(tmp_path):
    path = tmp_path / "zoo.pth"
    state = {"conv.weight": torch.ones(2, 2)}
    torch.save({"meta": {"hook": _Pickled()}, "state_dict": state}, path)
    with pytest.raises(PretrainedError) as error:
        read_state_dict(path, "model.init.detector")
    message = str(error.value)
    assert message.startswith(f"model.init.detector: {path} is not loadable weights-only (")
    assert message.endswith("pin its sha256 in model.init.sha256 to trust it")
    assert "\n" not in message
    pinned = sha256_file(path)
    assert read_state_dict(path, "model.init.detector", pinned).keys() == state.keys()
    with pytest.raises(PretrainedError, match="has sha256 .* the config pins 0{64}"):
        read_state_dict(path, "model.init.detector", "0" * 64)


def test_model_zoo_meta_with_numpy_values_loads_weights_only(tmp_path):
    import numpy

    path = tmp_path / "zoo.pth"
    meta = {"epoch": numpy.int64(50), "scale": numpy.float64(0.5), "anchors": numpy.zeros(3)}
    torch.save({"meta": meta, "state_dict": {"w": torch.zeros(1)}}, path)
    assert list(read_state_dict(path, "model.init.detector")) == ["w"]


def test_a_truncated_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "zoo.pth"
    torch.save({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(PretrainedError, match=f"model.init.detector: {path}: not a readable"):
        read_state_dict(path, "model.init.detector")


@pytest.mark.slow
def test_baseline_starts_from_a_full_size_model_zoo_detector(micro, micro_data, tmp_path):
    """The model zoo's layout at full size (R50, 6+6 layers, 300 queries, 80 classes): the
    Runner's training starts from it, every tensor but the class branches equal to the file's
    (lr 0, BatchNorm frozen as in the recipe, so one iteration changes nothing)."""
    full = full_config()["model"]
    zoo = tmp_path / "deformable-detr-refine-twostage_r50_coco.pth"
    zoo_state = save_model_zoo_detector(zoo)

    model = {**full, "init": {"backbone": None, "detector": str(zoo), "sha256": {}}}
    model["input_scale"] = [320, 96]  # the weights do not depend on it; the test runs faster
    train = {**micro["train"], "max_iters": 1, "batch_size": 1, "lr": 0.0, "warmup_iters": 0}
    out_model = tmp_path / "model.pth"
    train_baseline(
        model,
        train,
        train_json=micro_data["train_json"],
        val_json=micro_data["val_json"],
        data_root=micro_data["data_root"],
        work_dir=tmp_path / "work",
        out_model=out_model,
        out_config=tmp_path / "config.py",
        seed=0,
    )
    trained, _, _ = read_checkpoint(out_model)
    assert trained.keys() == zoo_state.keys()
    classes = [k for k in zoo_state if k.startswith(CLASS_BRANCHES)]
    assert classes and all(trained[k].shape[0] == 3 for k in classes)
    different = [
        k for k in zoo_state if k not in classes and not torch.equal(trained[k], zoo_state[k])
    ]
    assert different == []
