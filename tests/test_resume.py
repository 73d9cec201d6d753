"""Training killed with SIGKILL resumes from its last checkpoint through a Snakemake rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.checkpoint import read_checkpoint

from .conftest import micro_config, snakemake_command

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

    process = subprocess.Popen(
        command(killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marker = killed / "work" / "train_baseline" / "last_checkpoint"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "training never wrote a checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
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
