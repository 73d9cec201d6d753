"""Checkpoints that every rule passes along: a plain state dict plus the model's mmdet config.

The file holds only tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)``
(no pickled classes, unlike mmengine's own Runner checkpoints). A structurally pruned model no
longer matches its mmdet config; :func:`load_detector` therefore builds the model from the config
and then shrinks every layer whose saved tensors are smaller, using Torch-Pruning's own
channel-removal functions (and removing the attention heads a pruned model lacks), before
loading the weights strictly.

The config in the file names the classes to build, and mmengine's registries import any dotted
name they do not know (``"os.system"`` would run a command): :func:`check_model_types` accepts
only names registered in the registries the detector is built from, at every depth, before
anything is built.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from detrprune.jobs import atomic_output
from detrprune.prune.attention import (
    deformable_attentions,
    multihead_attentions,
    remove_deformable_heads,
    remove_deformable_points,
    without_heads,
)
from detrprune.train.model import build_detector, register_mmdet

FORMAT = "detrprune-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that is not ours, or does not fit the model it describes."""


def shrink_attention_to_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], where: str
) -> None:
    """Give a freshly built model the head counts of the saved pruned one in ``state``.

    Counts follow from the saved shapes: a deformable attention's heads from its
    ``value_proj`` rows (``head_dim`` per head), its points per head and level from its
    ``sampling_offsets`` rows (``2 * num_levels`` per point and head); a multi-head attention's
    heads from its ``in_proj_weight`` rows (``3 * head_dim`` per head). The trailing heads and
    points are removed, as only the shapes matter before the weights are loaded.
    """
    for name, module in list(deformable_attentions(model)):
        value = state.get(f"{name}.value_proj.weight")
        offsets = state.get(f"{name}.sampling_offsets.weight")
        if value is None or offsets is None:
            continue
        head_dim = module.value_proj.out_features // module.num_heads
        heads, rest = divmod(value.shape[0], head_dim)
        if rest or not 0 < heads <= module.num_heads:
            raise CheckpointError(
                f"{where}: {name}.value_proj has {value.shape[0]} rows, not a whole number "
                f"of heads (<= {module.num_heads}) of {head_dim} rows"
            )
        per_point = 2 * module.num_levels * heads
        points, rest = divmod(offsets.shape[0], per_point)
        if rest or not 0 < points <= module.num_points:
            raise CheckpointError(
                f"{where}: {name}.sampling_offsets has {offsets.shape[0]} rows, not a whole "
                f"number of points (<= {module.num_points}) for {heads} heads of "
                f"{module.num_levels} levels"
            )
        remove_deformable_heads(module, list(range(heads, module.num_heads)))
        trailing = list(range(points, module.num_points))
        remove_deformable_points(
            module, [[trailing] * module.num_levels for _ in range(module.num_heads)]
        )
    for name, owner, attention in list(multihead_attentions(model)):
        saved = state.get(f"{name}.in_proj_weight")
        if saved is None or saved.shape[0] == attention.in_proj_weight.shape[0]:
            continue
        heads, rest = divmod(saved.shape[0], 3 * attention.head_dim)
        if rest or not 0 < heads < attention.num_heads:
            raise CheckpointError(
                f"{where}: {name}.in_proj_weight has {saved.shape[0]} rows, not a whole number "
                f"of heads (< {attention.num_heads}) of {3 * attention.head_dim}"
            )
        owner.attn = without_heads(attention, list(range(heads, attention.num_heads)))
        owner.num_heads = heads


def save_detector(
    model: nn.Module, path: Path, model_cfg: Mapping[str, Any], meta: Mapping[str, Any]
) -> None:
    """Write ``model``'s weights, its mmdet model config and ``meta`` (JSON-able) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "model_cfg": json.dumps(_jsonable(model_cfg), sort_keys=True),
        "meta": json.dumps(_jsonable(meta), sort_keys=True),
        "state_dict": state,
    }
    with atomic_output(path) as (tmp,), open(tmp, "wb") as handle:
        # Saved through a handle, the zip records are named "archive/...": saved by path they
        # would take the (random) temporary file's name, and identical models differ in bytes.
        torch.save(payload, handle)


StateDict = dict[str, torch.Tensor]


def read_checkpoint(path: Path) -> tuple[StateDict, dict[str, Any], dict[str, Any]]:
    """(state_dict, model_cfg, meta) of a checkpoint, loaded without unpickling any class; its
    model config names only registered types (:func:`check_model_types`)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        # torch's message for a truncated file does not say which file; this one does.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    try:
        model_cfg, meta = json.loads(payload["model_cfg"]), json.loads(payload["meta"])
        state = payload["state_dict"]
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: malformed {FORMAT} file ({error})") from error
    if not isinstance(model_cfg, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: malformed {FORMAT} file (model_cfg or meta not a dict)")
    check_model_types(model_cfg, where=str(path))
    return state, model_cfg, meta


# A registered name is a plain identifier: anything else (a dotted path, "mod:func") would be
# imported by mmengine's Registry.get.
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Registered for fine-tuning and scratch training only (detrprune.train.runner, .scratch); a
# saved model config never names them.
_NEVER_IN_A_FILE = frozenset({"DetrpruneCheckpointModel", "DetrpruneScratchTwin"})


def registered_model_types() -> frozenset[str]:
    """Every type name a detector's config may use: mmdet's MODELS and TASK_UTILS registries
    (with mmcv's and mmengine's, their parents) and mmengine's weight initialisers."""
    from mmdet.registry import MODELS, TASK_UTILS
    from mmengine.registry import WEIGHT_INITIALIZERS

    register_mmdet()
    names: set[str] = set()
    for registry in (MODELS, TASK_UTILS, WEIGHT_INITIALIZERS):
        while registry is not None:
            names.update(name for name in registry.module_dict if isinstance(name, str))
            registry = registry.parent
    return frozenset(names - _NEVER_IN_A_FILE)


def check_model_types(model_cfg: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CheckpointError` unless every ``type`` in ``model_cfg``, at any depth, is a
    registered name (:func:`registered_model_types`) and no ``_scope_`` switches registries."""
    allowed = registered_model_types()

    def visit(value: Any, key_path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                inner = f"{key_path}.{key}"
                if key == "_scope_":
                    raise CheckpointError(f"{where}: {inner}: a registry scope is not allowed")
                if key == "type" and not (
                    isinstance(item, str) and _TYPE_NAME.fullmatch(item) and item in allowed
                ):
                    raise CheckpointError(
                        f"{where}: {inner}: {item!r} is not a registered mmdet/mmcv/mmengine "
                        "type: refusing to build the model"
                    )
                visit(item, inner)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                visit(item, f"{key_path}[{index}]")

    visit(model_cfg, "model_cfg")


def load_detector(path: Path) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild the (possibly pruned) detector saved at ``path``: (model, model_cfg, meta)."""
    state, model_cfg, meta = read_checkpoint(path)
    model = build_detector(model_cfg)
    shrink_attention_to_state_dict(model, state, where=str(path))
    shrink_to_state_dict(model, state, where=str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, model_cfg, meta


def shrink_to_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Remove trailing channels from layers whose saved weights are narrower than the built ones.

    Only the shapes matter here (the values are loaded afterwards), so dropping the trailing
    indices is as good as dropping the ones the pruner chose.
    """
    for name, module in model.named_modules():
        weight = state.get(f"{name}.weight" if name else "weight")
        current = getattr(module, "weight", None)
        if weight is None or not isinstance(current, torch.Tensor):
            continue
        if tuple(weight.shape) == tuple(current.shape):
            continue
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                raise CheckpointError(f"{where}: grouped conv {name} cannot be rebuilt pruned")
            _drop_trailing(tp.prune_conv_out_channels, module, current.shape[0], weight.shape[0])
            _drop_trailing(tp.prune_conv_in_channels, module, current.shape[1], weight.shape[1])
        elif isinstance(module, nn.Linear):
            _drop_trailing(tp.prune_linear_out_channels, module, current.shape[0], weight.shape[0])
            _drop_trailing(tp.prune_linear_in_channels, module, current.shape[1], weight.shape[1])
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            _drop_trailing(tp.prune_batchnorm_out_channels, module, current.numel(), weight.numel())
        elif isinstance(module, nn.GroupNorm):
            _drop_trailing(tp.prune_groupnorm_out_channels, module, current.numel(), weight.numel())
        else:
            raise CheckpointError(
                f"{where}: {name} ({type(module).__name__}) has weight {tuple(weight.shape)} "
                f"but the config builds {tuple(current.shape)}; no rule to rebuild it"
            )
        if tuple(module.weight.shape) != tuple(weight.shape):
            raise CheckpointError(
                f"{where}: {name} could not be shrunk to {tuple(weight.shape)} "
                f"(got {tuple(module.weight.shape)})"
            )


def _drop_trailing(prune_fn, module: nn.Module, built: int, saved: int) -> None:
    if saved > built:
        raise CheckpointError(f"saved layer is wider ({saved}) than the built one ({built})")
    if saved < built:
        prune_fn(module, list(range(saved, built)))


def _jsonable(value: Any) -> Any:
    """Turn mmengine ConfigDicts, tuples and paths into plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
