"""The training loss's gradients a data-driven criterion ranks by (``taylor``).

:func:`training_images` draws, with the study's seed, a fixed number of images of the training
split (never the validation split: a criterion that saw those images would have been tuned on
the set it is judged on), loaded and resized to the model's input scale without random
augmentation, so the same config gives the same ranking. :func:`accumulated_gradients` sums
the detector's training loss gradients over them in every parameter's ``.grad`` (frozen ones
too: the ranking needs them) with dropout off and BatchNorm statistics untouched, and clears
them on exit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def training_images(
    train_json: Path, data_root: Path, input_scale: tuple[int, int], count: int, seed: int
) -> list[dict[str, Any]]:
    """``count`` images of the training split drawn with ``seed`` (all of them when it holds
    fewer), each a batch-1 input of ``detector.loss`` with its ground truth."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    from detrprune.train.model import dataset_config, register_mmdet

    register_mmdet()
    # The boxes are loaded before the resize, so that they are in the input's pixels.
    pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=tuple(input_scale), keep_ratio=True),
        dict(type="PackDetInputs"),
    ]
    dataset = DATASETS.build(dataset_config(train_json, data_root, pipeline, test_mode=False))
    if len(dataset) == 0:
        raise ValueError(f"{train_json}: the training split has no images")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    log.info(
        "gradients: %d of the %d training images of %s (seed %d)",
        len(order),
        len(dataset),
        train_json,
        seed,
    )
    return [pseudo_collate([dataset[i]]) for i in sorted(order)]


@contextlib.contextmanager
def accumulated_gradients(
    detector: nn.Module, batches: Sequence[dict[str, Any]]
) -> Iterator[float]:
    """Within the block every parameter's ``.grad`` holds the sum over ``batches`` of the
    gradient of the detector's training loss; yields the mean loss. Gradients are cleared and
    ``requires_grad`` and the train/eval mode restored afterwards."""
    flags = {name: p.requires_grad for name, p in detector.named_parameters()}
    was_training = detector.training
    # Training mode (mmdet's two-stage loss needs it), but no dropout and no BatchNorm statistics
    # update: the gradient of a fixed function, and weights left as they were.
    detector.train()
    for module in detector.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.Dropout):
            module.eval()
    for p in detector.parameters():
        p.requires_grad_(True)
        p.grad = None
    try:
        total = 0.0
        for batch in batches:
            data = detector.data_preprocessor(batch, True)
            losses = detector(**data, mode="loss")
            loss, _ = detector.parse_losses(losses)
            loss.backward()
            total += float(loss.detach())
        mean = total / max(len(batches), 1)
        log.info("gradients: mean training loss %.4f over %d images", mean, len(batches))
        yield mean
    finally:
        # Pruning inside the block replaces pruned parameters: restore them by name.
        for name, p in detector.named_parameters():
            p.grad = None
            p.requires_grad_(flags.get(name, p.requires_grad))
        detector.train(was_training)
