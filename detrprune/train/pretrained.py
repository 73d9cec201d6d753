"""Pretrained starts for the baseline: an ImageNet ResNet backbone, or a COCO Deformable DETR.

``model.init.backbone`` is a local ResNet checkpoint in torchvision's layout (``conv1.weight``,
``layer1.0.conv1.weight``, ..., ``fc.*``) or mmpretrain's (the same names under ``backbone.``,
a ``head.*`` classifier); ``model.init.detector`` a local mmdet Deformable DETR checkpoint such as
the model zoo's two-stage refine R50 file (``{"meta": ..., "state_dict": ...}``). A value given
as a URL is read from the copy the workflow downloaded beforehand
(:mod:`detrprune.train.pretrained_files`); nothing is downloaded here.

They are loaded by a Runner hook before the first iteration of a run that starts afresh: after
``init_weights`` (mmdet's ``DeformableDETR.init_weights`` re-initialises the transformer, so a
detector checkpoint must come after it) and never over a resumed run's weights. Files are read
with :func:`read_state_dict`, never by unpickling arbitrary code. Every tensor must fit the
model: the classifier of an ImageNet file is dropped, the class branches of a detector trained on
another class set keep their fresh initialisation (the log says so), and any other missing,
unexpected or mis-shaped tensor is an error naming the key and file (mmengine's own loaders only
warn about those).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detrprune.data.download import sha256_file
from detrprune.train.pretrained_files import local_path

log = logging.getLogger(__name__)

CLASS_BRANCHES = "bbox_head.cls_branches."


class PretrainedError(ValueError):
    """A pretrained file that cannot be used; the message is one line naming key and path."""


def _allowed_globals() -> list:
    """What model-zoo pickles hold besides tensors and plain containers: numpy values in meta."""
    import numpy

    allowed = [numpy.dtype, numpy.ndarray, numpy.core.multiarray.scalar]
    allowed += [type(numpy.dtype(name)) for name in ("float32", "float64", "int64", "bool")]
    reconstruct = getattr(numpy.core.multiarray, "_reconstruct", None)
    return allowed + ([reconstruct] if reconstruct else [])


def read_state_dict(path: Path, key: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, read without running pickled code from it.

    ``torch.load(weights_only=True)`` with a few numpy globals allowed. A file that needs more
    (pickled objects of some library) is refused unless its ``sha256`` is pinned in the config:
    a pinned, matching file is trusted and read in full. ``key`` names the config key in errors.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{key}: {path}: no such file")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise PretrainedError(f"{key}: {path} has sha256 {actual}, the config pins {sha256}")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if sha256 is None:
            reason = str(error).strip().splitlines()[0][:200]
            raise PretrainedError(
                f"{key}: {path} is not loadable weights-only ({reason}); pin its sha256 in "
                f"model.init.sha256 to trust it"
            ) from error
        log.warning("%s: %s holds pickled objects; read in full (sha256 pinned)", key, path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as error:
        raise PretrainedError(f"{key}: {path}: not a readable checkpoint ({error})") from error
    state = checkpoint
    if isinstance(state, Mapping):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, Mapping):
        raise PretrainedError(f"{key}: {path}: no state dict in it")
    tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise PretrainedError(f"{key}: {path}: its state dict holds no tensors")
    return tensors


def backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ResNet state dict in mmdet's names: mmpretrain's ``backbone.`` prefix removed, the
    ImageNet classifier (torchvision's ``fc``, mmpretrain's ``head``/``neck``) dropped."""
    prefix = "backbone."
    if any(name.startswith(prefix) for name in state):
        state = {n.removeprefix(prefix): v for n, v in state.items() if n.startswith(prefix)}
    kept = {n: v for n, v in state.items() if not n.startswith(("fc.", "head.", "neck."))}
    if len(kept) != len(state):
        log.info("backbone init: %d classifier tensors dropped", len(state) - len(kept))
    return kept


def fit_state(
    state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    key: str,
    path: Path,
    fresh_prefixes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """``state`` checked against ``model_state``: what may stay fresh (a class branch of another
    class set, tensors under ``fresh_prefixes`` absent from the file) is left out and logged;
    anything else that does not fit is a :class:`PretrainedError`."""
    mismatched = [n for n in state if n in model_state and state[n].shape != model_state[n].shape]
    fresh = [n for n in mismatched if n.startswith(CLASS_BRANCHES)]
    problems = {
        "of another shape": [n for n in mismatched if n not in fresh],
        "not in this model": [n for n in state if n not in model_state],
        "missing from the file": [
            n
            for n in model_state
            if n not in state
            and not n.startswith(fresh_prefixes)
            and not n.endswith("num_batches_tracked")
        ],
    }
    for what, names in problems.items():
        if names:
            example = names[0]
            shapes = (
                f" ({tuple(state[example].shape)} vs {tuple(model_state[example].shape)})"
                if what == "of another shape"
                else ""
            )
            raise PretrainedError(
                f"{key}: {path}: {len(names)} tensors {what}, e.g. {example}{shapes}"
            )
    if fresh:
        log.info(
            "%s: %d class-branch tensors re-initialised (%d classes in %s, %d here)",
            key,
            len(fresh),
            state[fresh[0]].shape[0],
            path,
            model_state[fresh[0]].shape[0],
        )
    return {n: v for n, v in state.items() if n not in fresh}


def load_pretrained(detector: torch.nn.Module, init: Mapping[str, Any]) -> None:
    """Load ``model.init``'s files into a freshly initialised detector (backbone, then
    detector: a detector file, when given, also sets the backbone)."""
    pinned = init.get("sha256") or {}
    if init.get("backbone"):
        key, path = "model.init.backbone", local_path(init["backbone"])
        state = backbone_state(read_state_dict(path, key, pinned.get("backbone")))
        target = detector.backbone.state_dict()
        detector.backbone.load_state_dict(fit_state(state, target, key, path), strict=False)
        log.info("%s: %d tensors loaded from %s", key, len(state), path)
    if init.get("detector"):
        key, path = "model.init.detector", local_path(init["detector"])
        state = read_state_dict(path, key, pinned.get("detector"))
        target = detector.state_dict()
        fitted = fit_state(state, target, key, path, fresh_prefixes=(CLASS_BRANCHES,))
        detector.load_state_dict(fitted, strict=False)
        log.info("%s: %d tensors loaded from %s", key, len(fitted), path)


class PretrainedStart:
    """Runner hook: :func:`load_pretrained` before the first iteration of a fresh run."""

    priority = "VERY_HIGH"

    def __init__(self, **init: Any) -> None:
        self.init = init

    def before_train(self, runner) -> None:
        if runner.iter == 0:
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            load_pretrained(model, self.init)
