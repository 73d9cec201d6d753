"""Which GPUs a job uses, when several jobs share one machine's GPUs.

Snakemake counts GPUs (``--resources gpu=N``, ``profiles/local-gpu``) but does not say which
GPU a job gets: without help every job of a local run would use the first GPU while the others
idle, and a timing would share its GPU with a training. :func:`claimed_gpus` gives a job the
GPUs it declared (its rule's ``gpu`` resource) for its lifetime: it takes an exclusive
``flock`` on one lock file per GPU (released by the kernel when the process ends, however it
ends) and sets ``CUDA_VISIBLE_DEVICES`` to those GPUs before CUDA starts; processes the job
starts (``torchrun`` ranks) inherit it.

Under SLURM the scheduler has already given the job its own GPUs (``SLURM_JOB_ID``), so nothing
is claimed. Locally the GPUs are those ``CUDA_VISIBLE_DEVICES`` lists when the run was started
with it, else the ones ``nvidia-smi`` lists (read without starting CUDA); without either there
are none, and a job runs where torch puts it (the CPU on a machine without a GPU).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# How often a job that finds every GPU taken tries again, and says that it waits.
_RETRY_S = 2.0
_REPORT_EVERY_S = 60.0


class GpuClaimError(RuntimeError):
    """A job that declares more GPUs than the machine shows it."""


def lock_dir() -> Path:
    """One folder of lock files per user and machine (the GPUs' index in each file name)."""
    return Path(tempfile.gettempdir()) / f"detrprune-gpus-{os.getuid()}"


def machine_gpus() -> list[str]:
    """The GPUs this process may claim: ``CUDA_VISIBLE_DEVICES``'s entries when it is set
    (empty when it hides every GPU), else ``nvidia-smi``'s indices, else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every GPU.
        return [] if entries[:1] == ["-1"] else entries
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of ``path``, or ``None`` when another holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@contextlib.contextmanager
def claimed_gpus(
    count: int,
    *,
    gpus: Sequence[str] | None = None,
    locks: Path | None = None,
) -> Iterator[list[str]]:
    """Hold ``count`` of the machine's GPUs (:func:`machine_gpus`, or ``gpus``) for the block,
    with ``CUDA_VISIBLE_DEVICES`` set to them; waits while other jobs hold them. Yields the
    GPUs held: none under SLURM, for ``count`` 0, or on a machine without GPUs."""
    if count <= 0 or os.environ.get("SLURM_JOB_ID"):
        yield []
        return
    available = list(machine_gpus() if gpus is None else gpus)
    if not available:
        yield []
        return
    if count > len(available):
        raise GpuClaimError(
            f"the job declares {count} GPUs, the machine shows {len(available)} "
            f"({','.join(available)}): lower train.gpus"
        )
    folder = locks or lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    held: dict[str, int] = {}
    started = reported = time.monotonic()
    try:
        while True:
            for gpu in available:
                if gpu not in held and len(held) < count:
                    descriptor = _try_lock(folder / f"gpu-{gpu}.lock")
                    if descriptor is not None:
                        held[gpu] = descriptor
            if len(held) == count:
                break
            # Never sit on some GPUs while waiting for more: two jobs could wait on each other.
            for descriptor in held.values():
                os.close(descriptor)
            held.clear()
            if time.monotonic() - reported >= _REPORT_EVERY_S:
                reported = time.monotonic()
                log.info(
                    "waiting %.0f s for %d free GPU(s) of %s (held by other jobs)",
                    reported - started,
                    count,
                    ",".join(available),
                )
            time.sleep(_RETRY_S)
        claimed = [gpu for gpu in available if gpu in held]
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
        log.info("GPU(s) %s claimed for this job", ",".join(claimed))
        try:
            yield claimed
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
    finally:
        for descriptor in held.values():
            os.close(descriptor)
