"""How mmcv 2.1.0 is built: CUDA ops only for a CUDA torch with a toolkit of the same CUDA major.

mmcv 2.1.0 has no wheel on PyPI, so every install builds it from source against the installed
torch (``--no-build-isolation``; without it the compiled ops are silently skipped). Whether its
CUDA kernels are built (``FORCE_CUDA=1``) must follow the torch that is installed, never the mere
presence of ``nvcc``: a CPU torch refuses a CUDA extension ("CUDA_HOME environment variable is
not set"), and a toolkit whose CUDA major differs from torch's fails after a long build.

One implementation for ``make install`` and the conda env's post-deploy script. It is run as a
file (``python detrprune/mmcv_build.py install``), before this package is installed, so it uses
the standard library and the installed torch only.

pip reuses a cached mmcv wheel whatever ``FORCE_CUDA`` says, so a cache can hand over the wrong
build: :func:`install` therefore checks the installed build against the plan and, on a mismatch,
rebuilds once without the cache.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MMCV_VERSION = "2.1.0"
# mmcv.ops.get_compiling_cuda_version() of a build without CUDA ops.
CPU_BUILD_MARK = "not available"


def compiled_cuda_version() -> str | None:
    """The CUDA version the installed mmcv's ops were compiled with; None for CPU ops only."""
    from mmcv.ops import get_compiling_cuda_version

    version = get_compiling_cuda_version()
    return None if version == CPU_BUILD_MARK else version


class BuildError(Exception):
    """The installed torch and CUDA toolkit cannot give the asked-for mmcv build."""


@dataclass(frozen=True)
class Toolchain:
    """What decides the build: the installed torch and the nvcc torch's builder would use."""

    torch_version: str
    torch_cuda: str | None  # torch.version.cuda: None for a CPU build
    nvcc_path: str | None = None
    nvcc_cuda: str | None = None  # the release nvcc reports, e.g. "13.0"


@dataclass(frozen=True)
class BuildPlan:
    cuda: bool
    reason: str  # the one line `make install` prints
    cuda_home: str | None = None

    def environment(self, cores: int) -> dict[str, str]:
        """The variables mmcv's setup.py reads for this build."""
        env = {
            "MMCV_WITH_OPS": "1",
            "FORCE_CUDA": "1" if self.cuda else "0",
            "MAX_JOBS": str(cores),
        }
        if self.cuda_home:
            env["CUDA_HOME"] = self.cuda_home
        return env


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def plan_build(toolchain: Toolchain, cuda: str = "auto") -> BuildPlan:
    """CUDA ops when torch has CUDA and nvcc's CUDA major equals torch's; otherwise CPU ops.

    ``cuda`` is ``auto`` (decide), ``no`` (CPU ops whatever is installed) or ``yes`` (CUDA ops,
    or a :class:`BuildError` saying why they cannot be built). A CUDA torch with an nvcc of
    another CUDA major is an error in ``auto`` too: that build would fail after many minutes.
    """
    if cuda not in ("auto", "yes", "no"):
        raise BuildError(f"MMCV_CUDA={cuda!r}: expected auto, yes or no")
    head = f"mmcv {MMCV_VERSION}:"
    torch = f"torch {toolchain.torch_version}"
    nvcc = f"nvcc {toolchain.nvcc_cuda} at {toolchain.nvcc_path}" if toolchain.nvcc_path else None
    if cuda == "no":
        ignored = f"; {nvcc} ignored" if nvcc else ""
        return BuildPlan(False, f"{head} CPU ops (asked for with MMCV_CUDA=no{ignored})")
    if toolchain.torch_cuda is None:
        if cuda == "yes":
            raise BuildError(
                f"{head} MMCV_CUDA=yes, but {torch} has no CUDA: install a CUDA build of torch "
                "(make install TORCH_INDEX=cu128, say) or leave MMCV_CUDA=auto"
            )
        ignored = f"; nvcc {toolchain.nvcc_cuda} ignored" if nvcc else ""
        return BuildPlan(False, f"{head} CPU ops ({torch} has no CUDA{ignored})")
    wanted = _major(toolchain.torch_cuda)
    if not nvcc:
        message = (
            f"{torch} is built with CUDA {toolchain.torch_cuda}, but no nvcc was found "
            f"(CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda)"
        )
        if cuda == "yes":
            raise BuildError(
                f"{head} MMCV_CUDA=yes, but {message}: install a CUDA {wanted} toolkit"
            )
        return BuildPlan(
            False,
            f"{head} CPU ops ({message}; on the GPU deformable attention runs its slower "
            f"PyTorch path until mmcv is rebuilt with a CUDA {wanted} toolkit)",
        )
    if toolchain.nvcc_cuda is None or _major(toolchain.nvcc_cuda) != wanted:
        raise BuildError(
            f"{head} {torch} is built with CUDA {toolchain.torch_cuda}, but {nvcc} is CUDA "
            f"{toolchain.nvcc_cuda or '(unknown release)'}: put a CUDA {wanted} toolkit first "
            "(CUDA_HOME or PATH), or build CPU ops with MMCV_CUDA=no"
        )
    cuda_home = str(Path(toolchain.nvcc_path).resolve().parent.parent)
    return BuildPlan(
        True,
        f"{head} CUDA ops ({torch} is built with CUDA {toolchain.torch_cuda}; {nvcc})",
        cuda_home=cuda_home,
    )


def find_nvcc(environ: dict[str, str] | None = None) -> str | None:
    """The nvcc that torch's extension builder would use (its own search order)."""
    environ = os.environ if environ is None else environ
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(variable):
            candidate = Path(environ[variable], "bin", "nvcc")
            return str(candidate) if candidate.exists() else None
    found = shutil.which("nvcc", path=environ.get("PATH"))
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def nvcc_release(nvcc: str) -> str | None:
    """The CUDA release nvcc reports (``release 13.0, V13.0.88`` -> ``13.0``)."""
    try:
        run = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    match = re.search(r"release (\d+\.\d+)", run.stdout)
    return match.group(1) if match else None


def installed_toolchain() -> Toolchain:
    import torch

    nvcc = find_nvcc()
    return Toolchain(
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        nvcc_path=nvcc,
        nvcc_cuda=nvcc_release(nvcc) if nvcc else None,
    )


def verify(expect_cuda: bool) -> str:
    """Check the installed mmcv: its ops import, deformable attention runs, the build is right.

    Returns the one-line result; raises :class:`BuildError` naming what is wrong.
    """
    import torch

    try:
        import mmcv
        from mmcv.ops import MultiScaleDeformableAttention
    except ImportError as error:  # mmcv-lite, or a build without its compiled _ext
        raise BuildError(f"mmcv: `import mmcv.ops` failed ({error})") from error
    if mmcv.__version__ != MMCV_VERSION:
        raise BuildError(f"mmcv {mmcv.__version__} is installed, expected {MMCV_VERSION}")
    compiled_cuda = compiled_cuda_version()
    is_cuda_build = compiled_cuda is not None
    if is_cuda_build != expect_cuda:
        raise BuildError(
            f"mmcv {MMCV_VERSION} is a {'CUDA ' + compiled_cuda if is_cuda_build else 'CPU'} "
            f"build, but {'CUDA' if expect_cuda else 'CPU'} ops were planned (a cached wheel of "
            "the other build? `pip cache remove mmcv` and reinstall)"
        )
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[8, 8], [4, 4]])
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    queries, dims = 5, 32
    attention = MultiScaleDeformableAttention(
        embed_dims=dims, num_heads=4, num_levels=2, num_points=2, batch_first=True
    ).eval()
    inputs = {
        "query": torch.randn(1, queries, dims, generator=generator),
        "value": torch.randn(1, int(shapes.prod(1).sum()), dims, generator=generator),
        "reference_points": torch.rand(1, queries, 2, 2, generator=generator),
        "spatial_shapes": shapes,
        "level_start_index": start,
    }
    with torch.no_grad():
        output = attention(**inputs)
    if output.shape != (1, queries, dims) or not torch.isfinite(output).all():
        raise BuildError(f"MultiScaleDeformableAttention forward on CPU gave {tuple(output.shape)}")
    checks = ["mmcv.ops imports", "MultiScaleDeformableAttention forward on CPU"]
    if is_cuda_build:
        from mmcv.utils import ext_loader

        ext_loader.load_ext("_ext", ["ms_deform_attn_forward", "ms_deform_attn_backward"])
        checks.append(f"CUDA {compiled_cuda} kernel importable")
        if torch.cuda.is_available():
            with torch.no_grad():
                on_gpu = attention.cuda()(**{k: v.cuda() for k, v in inputs.items()})
            difference = (on_gpu.cpu() - output).abs().max().item()
            if difference > 1e-4:
                raise BuildError(f"CUDA deformable attention differs from CPU by {difference:.2e}")
            checks.append(f"CUDA kernel matches CPU on {torch.cuda.get_device_name()}")
    return f"mmcv {MMCV_VERSION} ok: " + ", ".join(checks)


def _verify_in_subprocess(python: str, expect_cuda: bool) -> subprocess.CompletedProcess:
    expect = "cuda" if expect_cuda else "cpu"
    return subprocess.run(
        [python, __file__, "verify", "--expect", expect], capture_output=True, text=True
    )


def _last_line(run: subprocess.CompletedProcess) -> str:
    lines = (run.stderr or run.stdout).strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else f"exited with {run.returncode}"


def install(cuda: str = "auto", python: str = sys.executable, cores: int | None = None) -> None:
    """Decide, print the one line, build and install mmcv, then verify the installed build."""
    plan = plan_build(installed_toolchain(), cuda)
    print(plan.reason, flush=True)
    environment = {**os.environ, **plan.environment(cores or os.cpu_count() or 1)}
    pip = [python, "-m", "pip", "install", "--no-build-isolation", f"mmcv=={MMCV_VERSION}"]
    subprocess.run(pip, env=environment, check=True)
    check = _verify_in_subprocess(python, plan.cuda)
    if check.returncode != 0:
        print(_last_line(check), flush=True)
        print(f"mmcv {MMCV_VERSION}: rebuilding without pip's cache", flush=True)
        rebuild = [*pip, "--no-cache-dir", "--force-reinstall", "--no-deps"]
        subprocess.run(rebuild, env=environment, check=True)
        check = _verify_in_subprocess(python, plan.cuda)
        if check.returncode != 0:
            raise BuildError(_last_line(check))
    print(check.stdout.strip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", help="print the build decision for the installed torch")
    install_command = commands.add_parser("install", help="decide, build, install and verify")
    for command in (install_command, commands.choices["plan"]):
        command.add_argument("--cuda", default=os.environ.get("MMCV_CUDA") or "auto")
    install_command.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    verify_command = commands.add_parser("verify", help="check the installed mmcv build")
    verify_command.add_argument("--expect", choices=("cpu", "cuda"), required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            print(plan_build(installed_toolchain(), args.cuda).reason)
        elif args.command == "install":
            install(args.cuda, cores=args.jobs)
        else:
            print(verify(args.expect == "cuda"))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"error: `{' '.join(error.cmd)}` exited with {error.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
