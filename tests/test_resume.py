"""Training killed with SIGKILL resumes from its last checkpoint through a Snakemake rerun."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.train.checkpoint import read_checkpoint
from detrprune.train.model import build_training_config
from detrprune.train.resume import training_stamp
from detrprune.train.runner import train_baseline

from .conftest import kill_at_first_checkpoint, micro_config, snakemake_command

pytestmark = pytest.mark.slow


def resumable_config() -> dict:
    config = micro_config()
    config["dataset"]["synthetic"]["num_scenes"] = 8
    # Dropout stays on (0.1): it draws from torch's RNG, which the resumed run must restore.
    config["train"].update(max_iters=8, checkpoint_interval=2, log_interval=1)
    return config


def command(workdir: Path) -> list[str]:
    return snakemake_command(workdir, "results/baseline/model.pth", "--cores", "2")


def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for workdir in (reference, killed):
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(resumable_config()))
    run = subprocess.run(command(reference), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    marker = killed / "work" / "train_baseline" / "last_checkpoint"
    kill_at_first_checkpoint(command(killed), marker)
    resumed_from = Path(marker.read_text().strip()).name
    assert not (killed / "results" / "baseline" / "model.pth").exists()

    # Snakemake itself was killed too (as when a node dies): its lock stays until unlocked.
    subprocess.run([*command(killed), "--unlock"], capture_output=True, timeout=120, check=True)
    run = subprocess.run(command(killed), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (killed / "logs" / "train_baseline.log").read_text()
    assert f"resuming from {killed / 'work' / 'train_baseline' / resumed_from}" in log
    iteration = int(resumed_from.removeprefix("iter_").removesuffix(".pth"))
    assert f"resumed epoch: 0, iter: {iteration}" in log
    assert "Iter(train) [1/8]" not in log  # it did not start over

    # On CPU with fixed seeds the resumed run computes exactly what the uninterrupted one did:
    # mmengine replays the data loader (numpy/Python RNG of the pipeline) and our hook restores
    # torch's RNG (dropout) saved with the checkpoint.
    expected, _, _ = read_checkpoint(reference / "results" / "baseline" / "model.pth")
    got, _, _ = read_checkpoint(killed / "results" / "baseline" / "model.pth")
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == [], different[:5]


def _training_inputs(micro_data, tmp_path: Path) -> dict:
    """The micro data with its JSON copied, so a test can change their content in place."""
    folder = tmp_path / "coco"
    folder.mkdir()
    inputs = {"data_root": micro_data["data_root"]}
    for split in ("train", "val"):
        inputs[f"{split}_json"] = folder / f"{split}.json"
        inputs[f"{split}_json"].write_bytes(micro_data[f"{split}_json"].read_bytes())
    return inputs


def _shift_boxes(json_path: Path) -> None:
    """Other labels under the same path (as after a re-conversion): every box one pixel right."""
    data = json.loads(json_path.read_text())
    for annotation in data["annotations"]:
        annotation["bbox"][0] += 1
    json_path.write_text(json.dumps(data))


def test_resume_stamp_follows_what_changes_the_result(micro, micro_data, tmp_path):
    inputs = _training_inputs(micro_data, tmp_path)

    def stamp(**train) -> str:
        cfg = build_training_config(
            micro["model"], {**micro["train"], **train}, work_dir=tmp_path, seed=0, **inputs
        )
        return training_stamp(cfg)

    reference = stamp()
    # How the run is logged and checkpointed does not change what it computes.
    assert stamp(log_interval=7, checkpoint_interval=3, threads=1) == reference
    assert stamp(lr=1e-3) != reference
    # mmengine seeds each loader worker by its index: the worker count changes the flips.
    assert stamp(num_workers=2) != reference
    _shift_boxes(inputs["train_json"])  # same path, other content
    assert stamp() != reference


def test_a_changed_log_interval_resumes_and_changed_data_retrains(micro, micro_data, tmp_path):
    inputs = _training_inputs(micro_data, tmp_path)
    micro["train"].update(max_iters=2, checkpoint_interval=1)
    work_dir, out_model = tmp_path / "work", tmp_path / "model.pth"

    def train(**changes) -> dict:
        train_baseline(
            micro["model"],
            {**micro["train"], **changes},
            work_dir=work_dir,
            out_model=out_model,
            out_config=tmp_path / "config.py",
            seed=0,
            **inputs,
        )
        return read_checkpoint(out_model)[0]

    first = train()
    final = work_dir / "iter_2.pth"
    # The finished run keeps only its final checkpoint (each holds AdamW's moments too).
    assert sorted(path.name for path in work_dir.glob("*.pth")) == [final.name]
    written = final.stat().st_mtime_ns
    # Before: any config change wiped the work folder and trained again from iteration 0.
    resumed = train(log_interval=5, threads=1)
    assert final.stat().st_mtime_ns == written, "the finished run was trained again"
    assert all(torch.equal(first[key], resumed[key]) for key in first)

    # Before: the same paths with other content "resumed" the finished run's old model.
    _shift_boxes(inputs["train_json"])
    retrained = train()
    assert final.stat().st_mtime_ns != written
    assert any(not torch.equal(first[key], retrained[key]) for key in first)


def test_each_run_in_one_process_logs_into_its_own_work_folder(micro, micro_data, tmp_path):
    """mmengine reuses its visualiser by name: a second Runner in the process wrote its config
    into the first one's folder (deleted in between: the run failed)."""
    inputs = _training_inputs(micro_data, tmp_path)
    micro["train"].update(max_iters=1, checkpoint_interval=1, val_interval=0)
    for name in ("first", "second"):
        train_baseline(
            micro["model"],
            micro["train"],
            work_dir=tmp_path / name,
            out_model=tmp_path / f"{name}.pth",
            out_config=tmp_path / f"{name}.py",
            seed=0,
            **inputs,
        )
        assert list((tmp_path / name).glob("*/vis_data/config.py")), name
