"""Files from outside the process never run code: a shared checkpoint's model config, and a
checkpoint planted in a Runner's work folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from detrprune.train.checkpoint import (
    FORMAT,
    CheckpointError,
    check_model_types,
    load_detector,
    save_detector,
)
from detrprune.train.model import model_config
from detrprune.train.resume import (
    ResumeError,
    digest_path,
    prepare_work_dir,
    resumable_checkpoint,
)
from detrprune.train.runner import train_baseline

from .conftest import default_config, micro_config


def _payload(model_cfg: dict, state: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "state_dict": state or {},
        "meta": "{}",
        "model_cfg": json.dumps(model_cfg),
    }


def test_a_checkpoint_naming_os_system_is_refused_and_runs_nothing(tmp_path):
    pwned = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pth"
    torch.save(_payload({"type": "os.system", "command": f"touch {pwned}"}), evil)
    with pytest.raises(CheckpointError) as refused:
        load_detector(evil)
    message = str(refused.value)
    assert "\n" not in message
    assert str(evil) in message and "model_cfg.type" in message and "os.system" in message
    assert not pwned.exists()


@pytest.mark.parametrize(
    "where, bad",
    [
        (("backbone", "type"), "os.system"),
        (("backbone", "norm_cfg", "type"), "subprocess.getoutput"),
        (("encoder", "layer_cfg", "self_attn_cfg", "type"), "os.system"),
        (("bbox_head", "loss_cls", "type"), "NoSuchLoss"),
        (("backbone", "type"), "mmdet.models:ResNet"),
        (("train_cfg", "assigner", "match_costs", 0, "type"), "os.system"),
        (("backbone", "_scope_"), "os"),
    ],
    ids=lambda value: str(value),
)
def test_a_nested_bad_type_is_refused_before_anything_is_built(tiny_detector, tmp_path, where, bad):
    detector, cfg = tiny_detector
    pwned = tmp_path / "pwned.txt"
    cfg = json.loads(json.dumps(cfg))
    parent = cfg
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = bad
    if bad == "os.system":
        parent["command"] = f"touch {pwned}"
    path = tmp_path / "shared.pth"
    save_detector(detector, path, cfg, {"variant": "shared"})
    with pytest.raises(CheckpointError) as refused:
        load_detector(path)
    expected = "model_cfg" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)
    assert expected in str(refused.value) and str(path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not pwned.exists()


def test_the_shipped_model_configs_name_only_registered_types():
    from .test_full_config import full_config

    check_model_types(model_config(default_config()["model"]), where="config.yaml")
    check_model_types(model_config(full_config()["model"]), where="configs/kitti.yaml")


def test_a_saved_detector_still_loads(tiny_detector, tmp_path):
    detector, cfg = tiny_detector
    save_detector(detector, tmp_path / "model.pth", cfg, {"variant": "x"})
    reloaded, _, _ = load_detector(tmp_path / "model.pth")
    for name, tensor in detector.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


class _RunsACommand:
    """Unpickling this runs ``touch``: what a planted Runner checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained_work_dir(tmp_path_factory, micro_data):
    """A finished micro training: its work folder (final checkpoint and digest) and settings."""
    config = micro_config()
    config["train"].update(max_iters=4, checkpoint_interval=2, val_interval=0)
    folder = tmp_path_factory.mktemp("trained")
    arguments = dict(
        model=config["model"],
        train=config["train"],
        seed=config["seed"],
        **micro_data,
    )
    train_baseline(
        **arguments,
        work_dir=folder / "work",
        out_model=folder / "model.pth",
        out_config=folder / "config.py",
    )
    return folder, arguments


def _copy_work_dir(trained_work_dir, tmp_path) -> tuple[Path, dict]:
    folder, arguments = trained_work_dir
    work = tmp_path / "work"
    shutil.copytree(folder / "work", work)
    return work, arguments


def _rerun(arguments: dict, work: Path) -> None:
    train_baseline(
        **arguments,
        work_dir=work,
        out_model=work.parent / "model.pth",
        out_config=work.parent / "config.py",
    )


def test_the_runner_records_the_digest_of_its_final_checkpoint(trained_work_dir):
    folder, _ = trained_work_dir
    checkpoints = sorted((folder / "work").glob("iter_*.pth"))
    assert [p.name for p in checkpoints] == ["iter_4.pth"]  # keep_final_checkpoint
    assert digest_path(checkpoints[0]).is_file()
    assert sorted(p.name for p in (folder / "work").glob("iter_*.sha256")) == ["iter_4.pth.sha256"]
    assert resumable_checkpoint(folder / "work") == checkpoints[0]


def test_a_planted_checkpoint_is_never_resumed_from(trained_work_dir, tmp_path, caplog):
    work, arguments = _copy_work_dir(trained_work_dir, tmp_path)
    pwned = tmp_path / "pwned.txt"
    planted = work / "iter_8.pth"  # newer than the run's own final one
    torch.save({"state_dict": _RunsACommand(pwned)}, planted)
    (work / "last_checkpoint").write_text(str(planted))
    with caplog.at_level(logging.WARNING):
        _rerun(arguments, work)
    assert not pwned.exists()
    assert "iter_8.pth has no recorded digest" in caplog.text
    assert not planted.exists()  # the finished run keeps only its own final checkpoint


def test_a_checkpoint_changed_after_its_save_is_refused_in_one_line(trained_work_dir, tmp_path):
    work, arguments = _copy_work_dir(trained_work_dir, tmp_path)
    pwned = tmp_path / "pwned.txt"
    torch.save({"state_dict": _RunsACommand(pwned)}, work / "iter_4.pth")
    with pytest.raises(ResumeError) as refused:
        _rerun(arguments, work)
    assert "\n" not in str(refused.value)
    assert "iter_4.pth: its sha256 differs" in str(refused.value)
    assert not pwned.exists()


@pytest.mark.parametrize("pointer", ["", "{work}/iter_6.pth", "/elsewhere/iter_4.pth"])
def test_an_empty_or_dangling_pointer_resumes_from_the_newest_verified_checkpoint(
    trained_work_dir, tmp_path, caplog, pointer
):
    work, _ = _copy_work_dir(trained_work_dir, tmp_path)
    (work / "last_checkpoint").write_text(pointer.format(work=work))
    stamp = (work / "detrprune-config.sha256").read_text()
    with caplog.at_level(logging.WARNING):
        assert prepare_work_dir(work, stamp) == work / "iter_4.pth"
    assert "last_checkpoint" in caplog.text and "ignored" in caplog.text


def test_a_work_dir_without_any_verified_checkpoint_starts_over(trained_work_dir, tmp_path):
    work, _ = _copy_work_dir(trained_work_dir, tmp_path)
    digest_path(work / "iter_4.pth").unlink()
    (work / "last_checkpoint").write_text("")
    stamp = (work / "detrprune-config.sha256").read_text()
    assert prepare_work_dir(work, stamp) is None
