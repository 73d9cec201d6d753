"""The Runner's work folders: which run a folder belongs to, and which checkpoint to resume from.

mmengine's Runner keeps periodic checkpoints (weights, optimizer, scheduler, iteration) in a work
folder that is not a workflow output, so Snakemake does not delete it when a job dies; a rerun
resumes from the newest one. Those files hold pickled mmengine objects, which ``torch.load``
refuses since torch 2.6 (``weights_only=True``), so they are unpickled in full: a planted file
would run whatever it names. Each checkpoint the Runner saves therefore gets a sha256 sidecar
(:class:`CheckpointDigests`), and only a file whose digest matches is ever unpickled.

What is resumed is the newest ``iter_*.pth`` with a matching sidecar, not what mmengine's
``last_checkpoint`` pointer says: mmengine writes that pointer in place, so a kill or a full disk
can leave it empty or pointing at a file that is gone, and it is written before the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.data.download import sha256_file
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)

WORK_DIR_SCHEME = "detrprune-workdir://"
CONFIG_STAMP = "detrprune-config.sha256"
DIGEST_SUFFIX = ".sha256"
# mmengine's CheckpointHook names iteration-based checkpoints ``iter_{}.pth``.
_CHECKPOINT_NAME = re.compile(r"iter_(\d+)\.pth")


class ResumeError(RuntimeError):
    """A work folder's checkpoint that must not be loaded; the message is one line."""


def digest_path(checkpoint: Path) -> Path:
    """The sidecar holding the sha256 the Runner's checkpoint had when it was saved."""
    return checkpoint.with_name(checkpoint.name + DIGEST_SUFFIX)


def record_digest(checkpoint: Path) -> None:
    """Write ``checkpoint``'s sha256 to its sidecar, atomically."""
    with atomic_output(digest_path(checkpoint)) as (tmp,):
        tmp.write_text(sha256_file(checkpoint) + "\n")


def verify_digest(checkpoint: Path) -> None:
    """Raise :class:`ResumeError` unless ``checkpoint`` has the digest recorded at its save."""
    sidecar = digest_path(checkpoint)
    if not sidecar.is_file():
        raise ResumeError(f"{checkpoint}: no digest was recorded for it: refusing to load it")
    if sha256_file(checkpoint) != sidecar.read_text().strip():
        raise ResumeError(
            f"{checkpoint}: its sha256 differs from the one recorded when the Runner saved it: "
            f"refusing to load it (delete {checkpoint.parent} to start that run over)"
        )


class CheckpointDigests:
    """Hook: record the sha256 of every checkpoint the Runner saves, and of nothing else.

    mmengine's CheckpointHook (priority VERY_LOW) saves in ``after_train_iter``; this hook runs
    after it and records the digest of the file just saved (a file that appeared in the folder
    by other means gets none, so it is never resumed from). Before a save it removes the
    sidecar of the file about to be written, so that a kill in between leaves a checkpoint
    without a digest (skipped on resume) rather than one with a stale digest (refused).
    Sidecars of checkpoints mmengine deleted (``max_keep_ckpts``) go too.
    """

    priority = "LOWEST"

    def __init__(self) -> None:
        self._saving: Path | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        upcoming = runner.message_hub.get_info("last_ckpt")
        if upcoming:
            self._saving = Path(upcoming)
            digest_path(self._saving).unlink(missing_ok=True)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        from mmengine.dist import is_main_process

        saved, self._saving = self._saving, None
        if saved is None or not is_main_process():
            return
        record_digest(saved)
        for sidecar in Path(runner.work_dir).glob(f"iter_*.pth{DIGEST_SUFFIX}"):
            if not sidecar.with_suffix("").exists():
                sidecar.unlink()


def resumable_checkpoint(work_dir: Path) -> Path | None:
    """The newest checkpoint of ``work_dir`` whose recorded digest it still has, or None.

    A checkpoint without a digest (a kill between saving and recording it) is passed over with
    a warning; one whose digest differs raises :class:`ResumeError`. An empty or dangling
    ``last_checkpoint`` pointer is reported and otherwise ignored. The path is absolute, as
    mmengine's own pointer is.
    """
    work_dir = Path(work_dir).resolve()
    _report_broken_pointer(work_dir)
    candidates = []
    for path in work_dir.glob("iter_*.pth"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink():
            candidates.append((int(match.group(1)), path))
    for _, checkpoint in sorted(candidates, reverse=True):
        if not digest_path(checkpoint).exists():
            log.warning("%s has no recorded digest (its save was cut short): skipped", checkpoint)
            continue
        verify_digest(checkpoint)
        return checkpoint
    return None


def _report_broken_pointer(work_dir: Path) -> None:
    pointer = work_dir / "last_checkpoint"
    if not pointer.exists():
        return
    target = pointer.read_text().strip()
    if not target:
        log.warning("%s is empty (a save was cut short): ignored", pointer)
    elif not Path(target).is_file():
        log.warning("%s names %s, which does not exist: ignored", pointer, target)
    elif Path(target).resolve().parent != work_dir.resolve():
        log.warning("%s names %s, outside the work folder: ignored", pointer, target)


def register_work_dir_loader() -> None:
    """Let the Runner resume from its own checkpoints, each checked against its digest."""
    from mmengine.runner import CheckpointLoader

    if WORK_DIR_SCHEME in CheckpointLoader._schemes:
        return

    @CheckpointLoader.register_scheme(prefixes=WORK_DIR_SCHEME)
    def load_own_checkpoint(filename: str, map_location=None):
        checkpoint = Path(filename[len(WORK_DIR_SCHEME) :])
        verify_digest(checkpoint)
        return torch.load(checkpoint, map_location=map_location, weights_only=False)


# The mmengine config entries of RUN_ONLY_TRAIN_KEYS (detrprune.config): a change of these
# resumes the work folder instead of wiping it (days of checkpoints at full size).
_RESUME_NEUTRAL_CFG = (
    ("default_hooks", "logger", "interval"),
    ("default_hooks", "checkpoint", "interval"),
    ("val_dataloader", "num_workers"),
    ("val_dataloader", "persistent_workers"),
    ("test_dataloader", "num_workers"),
    ("test_dataloader", "persistent_workers"),
    ("work_dir",),
    ("log_level",),
)
# Config values naming a file whose content, not its path, decides the result (the train/val
# JSON, a fine-tuned input model, the pretrained starts of model.init).
_CONTENT_KEYS = ("ann_file", "checkpoint", "backbone", "detector")


def resume_stamp(settings: Mapping[str, Any], files: Any = ()) -> str:
    """A digest of what decides a run's result, so that a work folder is resumed only by the
    run it belongs to: ``settings`` (JSON), the content of every file in ``files`` and of every
    file a :data:`_CONTENT_KEYS` value in ``settings`` names (its path does not count), and this
    package's version."""
    from detrprune import __version__

    def content(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                key: (
                    _file_digest(item)
                    if key in _CONTENT_KEYS and isinstance(item, str | Path)
                    else content(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [content(item) for item in value]
        return value

    digest = hashlib.sha256(__version__.encode())
    digest.update(json.dumps(content(settings), sort_keys=True, default=str).encode())
    for path in files:
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


def _file_digest(value: str | Path) -> str:
    """sha256 of the file a config value names (a checkpoint scheme prefix removed), or the
    value itself where it names no file."""
    path = Path(str(value).split("://", 1)[-1])
    return f"sha256:{sha256_file(path)}" if str(value) and path.is_file() else str(value)


def training_stamp(cfg, processes: int = 1) -> str:
    """:func:`resume_stamp` of an mmengine training config, resume-neutral values removed;
    ``processes`` (data-parallel ranks) sets the total batch, so it is part of it."""
    settings = {**cfg.to_dict(), "data_parallel_processes": processes}
    for path in _RESUME_NEUTRAL_CFG:
        parent = settings
        for key in path[:-1]:
            parent = parent.get(key) or {}
        parent.pop(path[-1], None)
    return resume_stamp(settings)


def prepare_work_dir(work_dir: Path, stamp: str) -> Path | None:
    """The checkpoint to resume from (:func:`resumable_checkpoint`), or None; a work dir of
    another run is wiped."""
    stamp_file = work_dir / CONFIG_STAMP
    if work_dir.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        log.info(
            "%s holds checkpoints of another configuration or input: starting afresh", work_dir
        )
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    return resumable_checkpoint(work_dir)


def keep_final_checkpoint(work_dir: Path) -> int:
    """Delete a finished run's earlier Runner checkpoints from ``work_dir``; returns bytes freed.

    Each holds the weights and AdamW's two moments (three times the model: about 490 MB for
    the full R50 model) and served only to resume a killed run. The final one stays: a rerun
    whose settings changed only in what :func:`training_stamp` ignores resumes from it
    instead of training again.
    """
    final = resumable_checkpoint(Path(work_dir))
    if final is None:
        return 0
    freed = 0
    for earlier in sorted(final.parent.glob("iter_*.pth")):
        if earlier != final:
            freed += earlier.stat().st_size
            earlier.unlink()
            digest_path(earlier).unlink(missing_ok=True)
    if freed:
        log.info("%s: removed the earlier resume checkpoints (%.0f MB)", work_dir, freed / 1e6)
    return freed
