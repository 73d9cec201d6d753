"""Each job of a local run gets GPUs of its own (detrprune.gpus): exclusive while it runs, set in
CUDA_VISIBLE_DEVICES before CUDA starts, released when it ends however it ends.

This machine has no GPU: the GPUs here are names handed to the claim, or listed by a stand-in
``nvidia-smi``; the jobs then run on the CPU. That a claimed GPU is the one torch uses is
CUDA's own rule for CUDA_VISIBLE_DEVICES, which only a multi-GPU machine can show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detrprune import gpus
from detrprune.gpus import GpuClaimError, claimed_gpus, machine_gpus

from .conftest import REPO, planned_jobs


@pytest.fixture(autouse=True)
def _local_machine(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_two_jobs_get_different_gpus_and_the_environment_says_which(tmp_path):
    with claimed_gpus(1, gpus=["0", "1"], locks=tmp_path) as first:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == first[0]
        with claimed_gpus(1, gpus=["0", "1"], locks=tmp_path) as second:
            assert first != second and sorted(first + second) == ["0", "1"]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == second[0]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == first[0]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_job_waits_for_a_gpu_and_takes_it_when_released(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_RETRY_S", 0.05)
    got: list[list[str]] = []

    def waiter() -> None:
        with claimed_gpus(2, gpus=["0", "1"], locks=tmp_path) as claimed:
            got.append(claimed)

    with claimed_gpus(1, gpus=["0", "1"], locks=tmp_path):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.5)
        assert got == []  # one GPU free, two wanted: it waits, holding neither
    thread.join(timeout=10)
    assert got == [["0", "1"]]


def test_a_killed_job_releases_its_gpu(tmp_path):
    """The kernel drops a flock with its process: a job killed by a signal holds nothing."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from detrprune.gpus import claimed_gpus\n"
            f"with claimed_gpus(1, gpus=['0'], locks=Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout.readline().strip() == "held"
    assert gpus._try_lock(tmp_path / "gpu-0.lock") is None
    holder.kill()
    holder.wait()
    with claimed_gpus(1, gpus=["0"], locks=tmp_path) as claimed:
        assert claimed == ["0"]


def test_under_slurm_or_without_gpus_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with claimed_gpus(1, gpus=["0"], locks=tmp_path) as claimed:
        assert claimed == [] and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("SLURM_JOB_ID")
    with claimed_gpus(1, gpus=[], locks=tmp_path) as claimed:
        assert claimed == []
    with claimed_gpus(0, gpus=["0"], locks=tmp_path) as claimed:
        assert claimed == []
    assert list(tmp_path.iterdir()) == []


def test_more_gpus_than_the_machine_has_is_an_error(tmp_path):
    with pytest.raises(GpuClaimError, match="declares 4 GPUs, the machine shows 2"):
        with claimed_gpus(4, gpus=["0", "1"], locks=tmp_path):
            pass


def test_the_machines_gpus_come_from_the_environment_then_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert machine_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert machine_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(_fake_nvidia_smi(tmp_path)))
    assert machine_gpus() == ["0", "1"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert machine_gpus() == []


def _fake_nvidia_smi(folder: Path) -> Path:
    """A folder holding an ``nvidia-smi`` that lists two GPUs, as the real one does."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    script.chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_a_gpu_rules_job_claims_its_gpu_and_a_cpu_rules_job_none(tmp_path):
    """A real local run on a machine whose nvidia-smi lists two GPUs: the baseline's training
    and its evaluation (GPU rules) each claim one; the data rules claim none."""
    import yaml

    from .conftest import micro_config, run_snakemake

    config = micro_config()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PATH"] = f"{_fake_nvidia_smi(tmp_path)}{os.pathsep}{env['PATH']}"
    env["TMPDIR"] = str(tmp_path / "tmp")  # the lock files of this run only
    (tmp_path / "tmp").mkdir()
    run = run_snakemake(
        tmp_path,
        "results/eval/baseline/metrics.json",
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    for log in ("train_baseline.log", "evaluate/baseline.log"):
        text = (tmp_path / "logs" / log).read_text()
        assert "GPU(s) 0 claimed for this job" in text or "GPU(s) 1 claimed" in text, log
    assert "claimed" not in (tmp_path / "logs" / "kitti_to_coco.log").read_text()
    assert planned_jobs(run_snakemake(tmp_path, "results/eval/baseline/metrics.json", "-n")) == {}
