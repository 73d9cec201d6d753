"""Glue shared by the workflow's scripts: logging into the rule's log file, ratio conversion,
atomic outputs (and the removal of temporaries killed jobs left), provenance of results."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_SHOWN_NAMES = 5


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


def _alive_elsewhere(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine and is not this one."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):
        return False
    return True


def _size(path: Path) -> int:
    """Bytes in the regular files of ``path`` (a file or a folder; links are not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def remove_stale(folder: Path, pattern: re.Pattern[str], output: str | os.PathLike) -> int:
    """Remove the temporaries of ``output`` that a killed job left in ``folder``.

    A job killed by SIGKILL (or SIGTERM, whose default action runs no ``finally``) strands its
    temporaries; the next job writing the same output calls this before making its own. The
    entries of ``folder`` whose names fully match ``pattern`` are removed, except those whose
    ``pid`` group names a process that still runs on this machine: a concurrent writer outside
    Snakemake (which runs one job per output at a time). The check is local, so a temporary of
    a writer alive on another node of a shared file system counts as stale; a recycled pid only
    keeps a stale temporary one run longer. Failures to remove are logged, never raised.

    Returns:
        The bytes removed (file sizes), also logged as a warning with the names.
    """
    folder = Path(folder)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return 0
    removed: list[str] = []
    freed = 0
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = match.groupdict().get("pid")
        if pid is not None and _alive_elsewhere(int(pid)):
            log.info("%s: kept %s, a temporary of running process %s", output, entry.name, pid)
            continue
        path = Path(entry.path)
        try:
            size = _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as err:
            log.warning("%s: cannot remove the stale temporary %s (%s)", output, path, err)
            continue
        removed.append(entry.name)
        freed += size
    if removed:
        shown = ", ".join(removed[:_SHOWN_NAMES]) + (", ..." if len(removed) > _SHOWN_NAMES else "")
        log.warning(
            "%s: removed %d stale temporaries left by a killed job (%d bytes): %s",
            output,
            len(removed),
            freed,
            shown,
        )
    return freed


def _temporary_pattern(final: Path) -> re.Pattern[str]:
    """Names of the temporaries :func:`atomic_output` makes for ``final``, any process."""
    return re.compile(rf"\.{re.escape(final.name)}\.(?P<pid>\d+)\.tmp")


@contextlib.contextmanager
def atomic_output(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths``; move them all into place only if the block succeeds.

    Readers (and Snakemake) never see a half-written output, and on failure nothing is left.
    The temporaries sit in the same folder (so ``os.replace`` is atomic), carry the process id
    (so concurrent writers do not collide) and get the umask's normal mode (unlike mkstemp's
    0600, which would survive the rename). A kill runs no cleanup: the temporaries that killed
    writers left for these outputs are removed first (:func:`remove_stale`).
    """
    finals = [Path(p) for p in paths]
    temporaries = [f.with_name(f".{f.name}.{os.getpid()}.tmp") for f in finals]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent, _temporary_pattern(final), final)
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
