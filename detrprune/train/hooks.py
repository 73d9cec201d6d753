"""The mmengine hooks the study's training runs add, and the training curve they record.

Plain classes: :func:`register_hook` makes each an mmengine ``Hook`` when the Runner is built,
so importing this module does not import mmengine.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from detrprune.constants import VALIDATION_COLUMNS
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)


class RngStateKeeper:
    """Hook: save torch's RNG state with each checkpoint and restore it when training resumes.

    mmengine's resume re-seeds every generator and replays the data loader up to the resumed
    iteration, which brings numpy's and Python's generators (used by the data pipeline) back to
    where they were. Torch's generator is also drawn by the model's forward (dropout), which the
    replay does not run; it is restored just before the first resumed iteration so that a
    resumed run computes exactly what an uninterrupted one does.

    A validation during training draws from that generator too (each DataLoader iterator takes
    a seed from it), after the checkpoint of its iteration was saved: a run resumed from that
    checkpoint would skip the draw. Validations therefore leave the generator as they found it.
    """

    priority = "VERY_LOW"
    KEY = "detrprune_torch_rng_state"

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None
        self._before_val: torch.Tensor | None = None

    def before_val_epoch(self, runner) -> None:
        self._before_val = torch.get_rng_state()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._before_val is not None:
            torch.set_rng_state(self._before_val)
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = torch.get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            torch.set_rng_state(self._pending)
            self._pending = None


class ValRecorder:
    """Hook: validate before the first iteration and after the last; keep every validation.

    mmengine's loop validates only after iterations; the "before" number shows what the Runner
    starts from, so a model reset by the Runner (see the module docstring) shows up at once.
    The records travel with the Runner's checkpoints, so a run killed mid-way still reports the
    validation before its first iteration; and a run resumed at its last iteration (killed
    during the final validation, after the last checkpoint) validates once more at the end,
    which mmengine's loop does not do when no iteration is left.
    """

    priority = "LOW"
    KEY = "detrprune_validations"

    def __init__(self) -> None:
        self.records: list[dict] = []

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.records = list(checkpoint.get(self.KEY, []))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = list(self.records)

    def before_train(self, runner) -> None:
        if runner.iter == 0:
            runner.val_loop.run()

    def after_train(self, runner) -> None:
        if not self.records or self.records[-1]["iter"] != runner.iter:
            runner.val_loop.run()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.records.append({"iter": int(runner.iter), **dict(metrics or {})})


def register_hook(name: str, behaviour: type) -> str:
    """Register ``behaviour`` (a plain class) as an mmengine Hook named ``name``, once."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    if name not in HOOKS.module_dict:
        HOOKS.register_module(name=name, module=type(name, (behaviour, Hook), {}))
    return name


# The curve's AP columns -> the Runner's validation keys.
RUNNER_KEYS = {"mAP": "coco/bbox_mAP", "mAP50": "coco/bbox_mAP_50"}


def write_validations(records: Sequence[Mapping[str, Any]], out: Path) -> None:
    """The Runner's validations as a CSV of :data:`~detrprune.constants.VALIDATION_COLUMNS`
    (``iter``, ``mAP``, ``mAP50``), written atomically."""
    with atomic_output(out) as (tmp,):
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(VALIDATION_COLUMNS)
            for record in records:
                values = [f"{float(record[RUNNER_KEYS[c]]):.6g}" for c in VALIDATION_COLUMNS[1:]]
                writer.writerow([int(record["iter"]), *values])
    log.info("%d validations written to %s", len(records), out)
