"""Data-parallel training on several devices through mmengine's own launcher and torchrun.

``train.gpus: N > 1`` makes :func:`detrprune.train.runner.train_baseline` and
:func:`detrprune.train.runner.finetune_checkpoint` (and so the iterative loop's fine-tunes) run as N
processes started by ``torchrun`` on this node, inside the one Snakemake job (on SLURM: one task
holding N GPUs). Each process runs the same function with ``launcher="pytorch"``, so mmengine's
Runner initialises the process group, wraps the model in its DistributedDataParallel and gives
each rank its share of every batch (the total batch is N x ``train.batch_size``, and the learning
rate is scaled to it). Rank 0 writes the outputs. The work folder is prepared (resumed or wiped)
by the launching process before the workers start, so no two processes touch it at once.

On CUDA the backend is NCCL, one GPU per process; without CUDA it is gloo on the CPU, which is
how the tests exercise this path (what only GPUs show: NCCL and one device per rank).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKER_ENV = "DETRPRUNE_DATA_PARALLEL_WORKER"


def in_worker() -> bool:
    """Whether this process is one of the workers :func:`launch` started."""
    return os.environ.get(WORKER_ENV) == "1"


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes outputs."""
    return int(os.environ.get("RANK", "0")) == 0


def launch(function: str, processes: int, kwargs: dict[str, Any]) -> Any:
    """Run ``module:function(**kwargs)`` in ``processes`` torchrun processes on this node and
    return what rank 0 returned (JSON: paths become strings)."""
    with tempfile.TemporaryDirectory(prefix="detrprune-ddp-") as folder:
        call, result = Path(folder) / "call.json", Path(folder) / "result.json"
        call.write_text(
            json.dumps({"function": function, "kwargs": kwargs, "result": str(result)}, default=str)
        )
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "detrprune.train.distributed",
            str(call),
        ]
        log.info("data-parallel %s on %d processes: %s", function, processes, " ".join(command))
        run = subprocess.run(
            command, env={**os.environ, WORKER_ENV: "1"}, preexec_fn=_die_with_parent
        )
        if run.returncode != 0:
            raise RuntimeError(
                f"data-parallel {function} on {processes} processes exited with "
                f"{run.returncode} (the workers' output is above)"
            )
        return json.loads(result.read_text())


def _die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere a no-op).

    torchrun starts its workers in sessions of their own, so killing the job's process group
    (a killed Snakemake, Ctrl-C) would leave them training and writing checkpoints into the
    work folder that a rerun resumes from. torchrun itself dies with the launching script, and
    each worker with torchrun.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def configure_runner(cfg) -> None:
    """In a worker: mmengine's ``pytorch`` launcher and the DDP wrapper for this device."""
    import torch

    cuda = torch.cuda.is_available()
    cfg.launcher = "pytorch"
    cfg.env_cfg = {**cfg.get("env_cfg", {}), "dist_cfg": dict(backend="nccl" if cuda else "gloo")}
    if not cuda and not torch.distributed.is_initialized():
        # mmengine's pytorch launcher calls torch.cuda.set_device() unconditionally, which a CPU
        # build of torch refuses; the Runner uses a process group that is already set up.
        torch.distributed.init_process_group(backend="gloo")
    # Parts of Deformable DETR get no gradient in some steps (two-stage proposal heads).
    wrapper = dict(type="MMDistributedDataParallel", find_unused_parameters=True)
    if not cuda:
        wrapper["device_ids"] = None  # a CPU module takes no device ids
    cfg.model_wrapper_cfg = wrapper


def _worker(call_path: str) -> None:
    _die_with_parent()
    call = json.loads(Path(call_path).read_text())
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s rank{os.environ.get('RANK', '?')} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    module, name = call["function"].split(":")
    value = getattr(importlib.import_module(module), name)(**call["kwargs"])
    if is_main_process():
        Path(call["result"]).write_text(json.dumps(value, default=str))


if __name__ == "__main__":
    _worker(sys.argv[1])
