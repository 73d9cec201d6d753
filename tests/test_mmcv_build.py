"""The mmcv build decision (detrprune/mmcv_build.py) and the mmcv that is installed.

The decision is pure, so every combination of torch build and CUDA toolkit is tested here; the
real toolchain lookup runs against fake nvcc programs on PATH. The installed mmcv is checked
with the same `verify` that `make install` runs: a cached wheel of the wrong build fails it.
What only a GPU machine shows: that the CUDA kernel runs and matches the CPU path (`verify`
does that too where CUDA is available).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrprune import mmcv_build
from detrprune.mmcv_build import BuildError, Toolchain, plan_build

from .conftest import REPO

CPU_TORCH = "2.13.0+cpu"
CUDA_TORCH = "2.13.0+cu128"


def test_cpu_torch_with_nvcc_builds_cpu_ops_and_says_nvcc_is_ignored():
    plan = plan_build(Toolchain(CPU_TORCH, None, "/usr/local/bin/nvcc", "13.0"))
    assert not plan.cuda
    assert plan.reason == "mmcv 2.1.0: CPU ops (torch 2.13.0+cpu has no CUDA; nvcc 13.0 ignored)"
    assert plan.environment(2) == {"MMCV_WITH_OPS": "1", "FORCE_CUDA": "0", "MAX_JOBS": "2"}


def test_cpu_torch_without_nvcc_builds_cpu_ops():
    plan = plan_build(Toolchain(CPU_TORCH, None))
    assert not plan.cuda
    assert plan.reason == "mmcv 2.1.0: CPU ops (torch 2.13.0+cpu has no CUDA)"


def test_cuda_torch_with_matching_nvcc_builds_cuda_ops_against_that_toolkit(tmp_path):
    nvcc = tmp_path / "cuda-12.6" / "bin" / "nvcc"
    plan = plan_build(Toolchain(CUDA_TORCH, "12.8", str(nvcc), "12.6"))
    assert plan.cuda
    assert plan.reason.startswith(
        "mmcv 2.1.0: CUDA ops (torch 2.13.0+cu128 is built with CUDA 12.8"
    )
    environment = plan.environment(8)
    assert environment["FORCE_CUDA"] == "1"
    assert environment["CUDA_HOME"] == str((tmp_path / "cuda-12.6").resolve())


def test_cuda_torch_with_mismatched_nvcc_is_an_error_before_any_build():
    with pytest.raises(BuildError) as error:
        plan_build(Toolchain(CUDA_TORCH, "12.8", "/usr/local/bin/nvcc", "13.0"))
    message = str(error.value)
    assert "CUDA 12.8" in message and "nvcc 13.0 at /usr/local/bin/nvcc is CUDA 13.0" in message
    assert "MMCV_CUDA=no" in message and "\n" not in message


def test_cuda_torch_without_nvcc_builds_cpu_ops_and_warns_about_the_gpu():
    plan = plan_build(Toolchain(CUDA_TORCH, "12.8"))
    assert not plan.cuda
    assert "no nvcc was found" in plan.reason and "CUDA 12 toolkit" in plan.reason


@pytest.mark.parametrize(
    "toolchain",
    [Toolchain(CUDA_TORCH, "12.8", "/cuda/bin/nvcc", "12.8"), Toolchain(CPU_TORCH, None)],
)
def test_cuda_no_forces_cpu_ops(toolchain):
    assert not plan_build(toolchain, "no").cuda


@pytest.mark.parametrize(
    "toolchain, why",
    [
        (Toolchain(CPU_TORCH, None, "/usr/local/bin/nvcc", "13.0"), "has no CUDA"),
        (Toolchain(CUDA_TORCH, "12.8"), "no nvcc was found"),
    ],
)
def test_cuda_yes_that_cannot_be_built_is_an_error(toolchain, why):
    with pytest.raises(BuildError, match=why):
        plan_build(toolchain, "yes")


def test_an_unknown_choice_is_an_error():
    with pytest.raises(BuildError, match="expected auto, yes or no"):
        plan_build(Toolchain(CPU_TORCH, None), "maybe")


def fake_nvcc(folder: Path, release: str) -> Path:
    """A program that answers `--version` as nvcc does."""
    nvcc = folder / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
        f"echo 'Cuda compilation tools, release {release}, V{release}.88'\n"
    )
    nvcc.chmod(0o755)
    return nvcc


def test_nvcc_is_found_where_torch_looks_and_its_release_is_read(tmp_path):
    on_path = fake_nvcc(tmp_path / "path", "13.0")
    home = fake_nvcc(tmp_path / "home", "12.6")
    environ = {"PATH": str(on_path.parent)}
    assert mmcv_build.find_nvcc(environ) == str(on_path)
    assert mmcv_build.find_nvcc({**environ, "CUDA_HOME": str(tmp_path / "home")}) == str(home)
    # A CUDA_HOME without nvcc is not silently replaced by the one on PATH.
    assert mmcv_build.find_nvcc({**environ, "CUDA_HOME": str(tmp_path)}) is None
    assert mmcv_build.nvcc_release(str(on_path)) == "13.0"
    assert mmcv_build.nvcc_release(str(home)) == "12.6"


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """detrprune/mmcv_build.py run as `make install` runs it: as a file, not as the package."""
    return subprocess.run(
        [sys.executable, str(REPO / "detrprune" / "mmcv_build.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or dict(os.environ),
    )


def test_plan_for_this_torch_with_a_toolkit_of_another_major(tmp_path):
    """This machine's case: a CPU torch and nvcc on PATH give CPU ops; a CUDA torch would fail."""
    import torch

    nvcc = fake_nvcc(tmp_path, "11.8")
    run = run_module("plan", env={**os.environ, "PATH": f"{nvcc.parent}:{os.environ['PATH']}"})
    if torch.version.cuda is None:
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == (
            f"mmcv 2.1.0: CPU ops (torch {torch.__version__} has no CUDA; nvcc 11.8 ignored)"
        )
    else:
        assert run.returncode == 1 and "is CUDA 11.8" in run.stderr


def test_installed_mmcv_is_the_build_this_torch_asks_for():
    """mmcv.ops imports, deformable attention runs on CPU and the build type is the planned one."""
    plan = plan_build(mmcv_build.installed_toolchain())
    run = run_module("verify", "--expect", "cuda" if plan.cuda else "cpu")
    assert run.returncode == 0, run.stderr
    assert "MultiScaleDeformableAttention forward on CPU" in run.stdout


def test_verify_refuses_the_other_build():
    """The check a cached wheel of the wrong build cannot pass."""
    plan = plan_build(mmcv_build.installed_toolchain())
    run = run_module("verify", "--expect", "cpu" if plan.cuda else "cuda")
    assert run.returncode == 1
    assert run.stderr.startswith("error: mmcv 2.1.0 is a ") and "were planned" in run.stderr


def test_make_install_leaves_the_cuda_decision_to_the_installed_torch(tmp_path):
    """A toolkit on PATH alone must not turn on FORCE_CUDA (what broke fresh CPU installs)."""
    nvcc = fake_nvcc(tmp_path, "13.0")
    run = subprocess.run(
        ["make", "-n", "-B", "-C", str(REPO), "install"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{nvcc.parent}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stderr
    assert "FORCE_CUDA=1" not in run.stdout
    assert "detrprune/mmcv_build.py install --cuda auto" in run.stdout


def test_conda_post_deploy_runs_the_same_build_code(tmp_path):
    """envs/detrprune.post-deploy.sh calls mmcv_build.py (not a copy of its logic) from the repo."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("python", "pip"):
        recorder = bin_dir / program
        recorder.write_text(f'#!/bin/sh\necho "{program} $*" >> {calls}\n')
        recorder.chmod(0o755)
    script = REPO / "envs" / "detrprune.post-deploy.sh"
    run = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines() == [
        f"python {REPO}/detrprune/mmcv_build.py install --cuda auto",
        f"pip install --no-deps -e {REPO}",
    ]


def test_cuda_tensors_reach_a_deformable_attention_this_mmcv_has(monkeypatch):
    """mmcv 2.1.0 sends every CUDA tensor to its compiled kernel, built or not: with CPU ops
    only, a GPU run failed ("ms_deform_attn_impl_forward ... not found"). Building a model
    (register_mmdet) re-routes them to the PyTorch path. The flag mmcv sets at import on a CUDA
    machine is set here by hand; only a GPU shows the re-routed forward run (make gpu-smoke)."""
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    from detrprune.train.model import register_mmdet

    monkeypatch.setattr(deform_attn, "IS_CUDA_AVAILABLE", True)
    register_mmdet()
    has_cuda_kernel = mmcv_build.compiled_cuda_version() is not None
    assert deform_attn.IS_CUDA_AVAILABLE is has_cuda_kernel
