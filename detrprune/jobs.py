"""Glue shared by the workflow's scripts: logging into the rule's log file, ratio conversion,
provenance of results."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def log_to(path: str | os.PathLike) -> Iterator[None]:
    """Send everything the step prints (Python logging, mmengine, tqdm, C++ warnings) to ``path``.

    File descriptors 1 and 2 are redirected, so output from compiled extensions lands there too.
    An exception is logged with its traceback before it propagates (Snakemake then fails the job
    and names the log).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
            force=True,
        )
        try:
            yield
        except BaseException:
            logging.getLogger("detrprune").exception("step failed")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def percent_to_fraction(percent: int | str) -> float:
    """Ratios travel through paths as integer percents (``r30``); the pruners take fractions."""
    value = int(percent)
    if not 0 < value < 100:
        raise ValueError(f"pruning ratio must be an integer percent in 1..99, got {percent}")
    return value / 100.0


@contextlib.contextmanager
def atomic_output(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths``; move them all into place only if the block succeeds.

    Readers (and Snakemake) never see a half-written output, and on failure nothing is left.
    The temporaries sit in the same folder (so ``os.replace`` is atomic), carry the process id
    (so concurrent writers do not collide) and get the umask's normal mode (unlike mkstemp's
    0600, which would survive the rename).
    """
    finals = [Path(p) for p in paths]
    temporaries = [f.with_name(f".{f.name}.{os.getpid()}.tmp") for f in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporaries
        for tmp, final in zip(temporaries, finals, strict=True):
            os.replace(tmp, final)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def write_json(record: Any, path: str | os.PathLike) -> None:
    """Write ``record`` as stable, indented JSON; atomic, so no half-written file is left."""
    with atomic_output(path) as (tmp,):
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


PROVENANCE_PACKAGES = (
    "torch",
    "mmdet",
    "mmcv",
    "mmengine",
    "torch-pruning",
    "fvcore",
    "pycocotools",
    "numpy",
    "snakemake",
)


def git_commit(path: str | os.PathLike = Path(__file__).parent) -> str | None:
    """The checkout's commit (with ``-dirty`` when files are modified), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def provenance(settings: Any, device: str, threads: int) -> dict[str, Any]:
    """What produced a result: its config subsection, package versions, commit, device, threads."""
    versions = {}
    for package in PROVENANCE_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "settings": settings,
        "packages": versions,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "device": device,
        "threads": threads,
    }
