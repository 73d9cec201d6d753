"""Data-parallel training (train.gpus > 1) through torchrun and mmengine's pytorch launcher.

Run here on the CPU with the gloo backend, 2 processes; what only GPUs show is NCCL with one
device per rank (the same code path otherwise: mmengine's launcher, DDP, rank-0 outputs).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.prune.methods import apply_pruning
from detrprune.prune.spec import MethodSpec
from detrprune.train.checkpoint import read_checkpoint, save_detector
from detrprune.train.runner import finetune_checkpoint

from .conftest import kill_at_first_checkpoint, micro_config, snakemake_command

pytestmark = pytest.mark.slow


LAYERWISE = MethodSpec.from_config({"kind": "weight", "scope": "layerwise"})


def _config(gpus: int) -> dict:
    config = micro_config()
    config["dataset"]["synthetic"]["num_scenes"] = 8
    config["train"].update(max_iters=8, checkpoint_interval=2, log_interval=1, gpus=gpus)
    return config


def _command(workdir: Path) -> list[str]:
    return snakemake_command(workdir, "results/baseline/model.pth", "--cores", "2")


def _workers_alive() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"detrprune.train.distributed" in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


def test_two_processes_train_resume_after_a_kill_and_write_the_same_kind_of_checkpoint(tmp_path):
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    for workdir, gpus in ((single, 1), (parallel, 2)):
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(_config(gpus)))
    run = subprocess.run(_command(single), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]

    marker = parallel / "work" / "train_baseline" / "last_checkpoint"
    kill_at_first_checkpoint(_command(parallel), marker)  # Snakemake, the script, torchrun
    # The workers run in sessions of their own (torchrun's doing): they must die with it, not
    # go on writing checkpoints into the folder the rerun resumes from.
    deadline = time.monotonic() + 30
    while _workers_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _workers_alive(), "data-parallel workers outlived the killed job"
    resumed_from = Path(marker.read_text().strip()).name
    assert not (parallel / "results" / "baseline" / "model.pth").exists()

    subprocess.run([*_command(parallel), "--unlock"], capture_output=True, timeout=120, check=True)
    run = subprocess.run(_command(parallel), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (parallel / "logs" / "train_baseline.log").read_text()
    assert "data-parallel detrprune.train.runner:train_baseline on 2 processes" in log
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    iteration = int(resumed_from.removeprefix("iter_").removesuffix(".pth"))
    assert f"resumed epoch: 0, iter: {iteration}" in log
    assert "Iter(train) [1/8]" not in log  # the resumed run did not start over

    expected, expected_cfg, expected_meta = read_checkpoint(single / "results/baseline/model.pth")
    got, got_cfg, got_meta = read_checkpoint(parallel / "results/baseline/model.pth")
    assert got_cfg == expected_cfg and got_meta == expected_meta
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in expected.items()}
    assert all(torch.isfinite(v).all() for v in got.values() if v.is_floating_point())
    # Twice the total batch: not the single process's weights.
    assert any(not torch.equal(got[k], expected[k]) for k in expected)


def test_a_two_process_finetune_keeps_zeros_and_reports_its_validations(
    tiny_detector, micro, micro_data, tmp_path
):
    detector, cfg = tiny_detector
    width, height = micro["model"]["input_scale"]
    apply_pruning(detector, LAYERWISE, 0.5, (height, width))
    pruned = tmp_path / "pruned.pth"
    save_detector(detector, pruned, cfg, {"variant": "prune/x/r50", "kind": "weight"})
    result = finetune_checkpoint(
        pruned,
        micro["model"],
        {**micro["train"], "gpus": 2},
        {"iters": 2, "lr": 1e-3, "warmup_iters": 1},
        train_json=micro_data["train_json"],
        val_json=micro_data["val_json"],
        data_root=micro_data["data_root"],
        work_dir=tmp_path / "work",
        out_model=tmp_path / "finetuned.pth",
        seed=0,
        validate=True,
    )
    assert [record["iter"] for record in result["validations"]] == [0, 2]
    assert result["meta"]["finetuned"] is True
    before, _, _ = read_checkpoint(pruned)
    after, _, _ = read_checkpoint(tmp_path / "finetuned.pth")
    for key, weight in before.items():
        if key.endswith("weight") and weight.dim() >= 2:
            assert (after[key][weight == 0] == 0).all(), key
