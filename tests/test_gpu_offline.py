"""bench/gpu_offline.sh: the GPU checks on a CUDA machine without a package index.

Its wheelhouse must hold the stack this checkout is tested with, else the GPU machine would
measure other versions than CI tests; these tests read its pins against the installed stack.
What only that machine shows (mmcv built there, the GPU tests and the 2:4 bench run) is its
`run`; `fetch` needs a package index, and neither runs here.
"""

from __future__ import annotations

import re
import subprocess
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement

from .conftest import REPO

SCRIPT = REPO / "bench" / "gpu_offline.sh"


def pinned(array: str) -> list[str]:
    """The requirement strings of one bash array of the script (``NAME=( ... )``)."""
    body = re.search(rf"^{array}=\((.*?)\)", SCRIPT.read_text(), re.S | re.M)
    assert body, f"{SCRIPT}: no {array}=( ... )"
    lines = [line.split("#", 1)[0] for line in body.group(1).splitlines()]
    return [item.strip('"') for item in " ".join(lines).split()]


def requirements() -> list[str]:
    mmcv = re.search(r"^MMCV=(\S+)", SCRIPT.read_text(), re.M)
    return [*pinned("WHEELS"), *pinned("SOURCE_ONLY"), mmcv.group(1)]


@pytest.mark.parametrize("spec", requirements())
def test_the_wheelhouse_pins_the_installed_stack(spec):
    requirement = Requirement(spec)
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.fail(f"{SCRIPT.name} fetches {requirement.name}, which the stack does not install")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{SCRIPT.name} pins {spec}, the stack has {requirement.name} {installed}"
    )


def test_what_the_package_imports_is_fetched():
    names = {Requirement(spec).name.lower() for spec in requirements()}
    for needed in ("mmcv", "mmdet", "mmengine", "torch-pruning", "fvcore", "pycocotools"):
        assert needed in names


def test_without_a_command_it_prints_its_usage_and_exits_2():
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert "bench/gpu_offline.sh fetch" in run.stderr and "bench/gpu_offline.sh run" in run.stderr


def test_fetch_without_the_stacks_venv_says_what_to_do(tmp_path):
    run = subprocess.run(
        ["bash", str(SCRIPT), "fetch", str(tmp_path / "wheels")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == "fetch needs the stack's venv: make install"
    assert not (tmp_path / "wheels").exists()
