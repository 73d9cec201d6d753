"""A named pruning method applied to a checkpoint: dispatch by kind, the scope as the summary
spells it, the prune job, and the reload check every pruned checkpoint passes.

The methods themselves: :mod:`detrprune.prune.filters` (structured: channels, FFN widths,
attention heads, sampling points) and :mod:`detrprune.prune.weights` (unstructured magnitude
and N:M weight pruning).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detrprune.jobs import percent_to_fraction
from detrprune.prune.filters import filter_prune
from detrprune.prune.gradients import accumulated_gradients, training_images
from detrprune.prune.spec import MethodSpec
from detrprune.prune.weights import weight_prune


def apply_pruning(
    detector: nn.Module,
    spec: MethodSpec,
    ratio: float,
    input_hw: tuple[int, int],
    seed: int = 0,
    targets: Mapping[str, Mapping[str, int]] | None = None,
    gradient_batches: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Prune ``detector`` in place as the method ``spec`` says.

    ``ratio`` is a fraction; for weight pruning it is the sparsity to reach over the selected
    weights (zeros already there count), for filter pruning the fraction of the current channels
    to remove (the parts in the method's ``part_ratios`` take their own, in percent). A filter
    method given ``targets`` (:func:`~detrprune.prune.filters.filter_shapes`) prunes to those
    shapes instead. A criterion that ranks by gradients needs ``gradient_batches``
    (:func:`~detrprune.prune.gradients.training_images`): the training loss's gradients over
    them are accumulated first.
    """
    if not spec.needs_gradients:
        return _prune(detector, spec, ratio, input_hw, seed, targets)
    if not gradient_batches:
        raise ValueError(f"criterion {spec.criterion} ranks by gradients: give training images")
    with accumulated_gradients(detector, gradient_batches):
        return _prune(detector, spec, ratio, input_hw, seed, targets)


def _prune(
    detector: nn.Module,
    spec: MethodSpec,
    ratio: float,
    input_hw: tuple[int, int],
    seed: int,
    targets: Mapping[str, Mapping[str, int]] | None,
) -> dict[str, Any]:
    if spec.kind == "filter":
        part_ratios = {part: percent_to_fraction(p) for part, p in spec.part_ratios.items()}
        return filter_prune(
            detector,
            ratio,
            input_hw,
            spec.scope,
            spec.criterion,
            seed,
            spec.round_to,
            spec.transformer,
            part_ratios,
            targets,
        )
    return weight_prune(detector, ratio, spec.scope, spec.modules, spec.layers)


def prune_checkpoint(
    baseline: Path,
    out_model: Path,
    method: str,
    spec: Mapping[str, Any],
    ratio_percent: int,
    input_hw: tuple[int, int],
    seed: int = 0,
    train_json: Path | None = None,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Prune the baseline checkpoint with the named ``method`` (its ``spec``, the config's
    mapping less the ratios, parsed here once) at ``ratio_percent`` and save it.

    ``seed`` draws the channels of a random-criterion method (the study's seed) and the
    training images (``train_json`` under ``data_root``) of one that ranks by gradients.

    The saved file is reloaded into a freshly built model and must give the pruned model's
    outputs, so a checkpoint that cannot be rebuilt fails here rather than in evaluation.
    """
    from detrprune.train.checkpoint import load_detector, save_detector

    parsed = MethodSpec.from_config(spec)
    ratio = percent_to_fraction(ratio_percent)
    detector, model_cfg, meta = load_detector(baseline)
    batches = None
    if parsed.needs_gradients:
        if train_json is None or data_root is None:
            raise ValueError(f"method {method}: criterion {parsed.criterion} needs training images")
        scale = (input_hw[1], input_hw[0])
        batches = training_images(train_json, data_root, scale, parsed.gradient_images, seed)
    stats = apply_pruning(detector, parsed, ratio, input_hw, seed, gradient_batches=batches)
    meta = {
        **meta,
        "variant": f"prune/{method}/r{ratio_percent}",
        "method": method,
        "kind": parsed.kind,
        "scope": parsed.describe(),
        "ratio": int(ratio_percent),
        "finetuned": False,
        "pruning": stats,
    }
    save_detector(detector, out_model, model_cfg, meta)
    verify_reload(detector, out_model, input_hw)
    return meta


def verify_reload(detector: nn.Module, path: Path, input_hw: tuple[int, int]) -> None:
    """Reload ``path`` into a freshly built model; it must equal ``detector`` in every output.

    Compares the raw head outputs (``_forward``) on a fixed random image; raises on any
    difference in shape or value.
    """
    from detrprune.train.checkpoint import load_detector
    from detrprune.train.model import synthetic_batch

    reloaded, _, _ = load_detector(path)
    detector.eval()
    batch = synthetic_batch(input_hw)
    with torch.no_grad():
        expected = _raw_outputs(detector, batch)
        actual = _raw_outputs(reloaded, batch)
    for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
        if a.shape != b.shape or not torch.equal(a, b):
            raise RuntimeError(f"{path}: reloaded model differs from the saved one (output {i})")


def _raw_outputs(detector: nn.Module, batch: Mapping[str, Any]) -> list[torch.Tensor]:
    data = detector.data_preprocessor(batch, False)
    outputs = detector._forward(data["inputs"], data["data_samples"])
    return list(_tensors(outputs))


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, Mapping):
        for key in sorted(value):
            yield from _tensors(value[key])
