"""MMDetection config for the study's Deformable DETR, at the tiny CPU size or the full R50 size.

Both sizes are built from mmdet's own packaged recipe (``model.recipe``, by default
``deformable-detr-refine-twostage_r50_16xb2-50e_coco``, read through mmengine's ``_base_``
machinery), overriding only what the study sets: the 3 KITTI classes, the sizes in the ``model``
section (for the full study they are the recipe's own), KITTI-shaped scales (the recipe's
multi-scale set rescaled from COCO's 1333x800 to ``model.input_scale``), an iteration schedule,
and the learning rate scaled linearly from ``train.lr_base_batch`` (the recipe's 32) to the total
batch by mmengine's ``auto_scale_lr``. The detector is mmdet's own ``DeformableDETR``; nothing
here re-implements it.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from detrprune.constants import CLASSES
from detrprune.mmcv_build import compiled_cuda_version

log = logging.getLogger(__name__)

# ResNet stage widths for the stages Deformable DETR takes (out_indices 1..3, plus the extra
# level the neck makes by a stride-2 conv when num_levels == 4).
_RESNET_STAGE_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512]}
_RESNET_STAGE_CHANNELS.update({50: [256, 512, 1024, 2048], 101: [256, 512, 1024, 2048]})

IMAGE_SUBDIR = "training/image_2/"
# The scales mmdet's COCO recipes are written for: (long, short) edges of the test Resize.
RECIPE_SCALE = (1333, 800)


@functools.lru_cache(maxsize=4)
def _recipe(name: str) -> Config:
    from mmengine.hub import get_config

    return get_config(name)


def load_recipe(name: str) -> Config:
    """mmdet's packaged config ``name`` (``mmdet::<dir>/<file>.py``), ``_base_`` resolved."""
    return copy.deepcopy(_recipe(name))


def register_mmdet() -> None:
    """Register mmdet's modules (and ours) and make mmdet the default registry scope."""
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _register_any_width_detr()
    route_deformable_attention()
    contiguous_deformable_sampling()


def route_deformable_attention() -> bool:
    """Send CUDA tensors to mmcv's PyTorch deformable attention where mmcv has no CUDA kernel.

    mmcv 2.1.0 runs its compiled kernel for every CUDA tensor (``IS_CUDA_AVAILABLE and
    value.is_cuda``) whether or not that kernel was built, so an mmcv with CPU ops only (built
    with ``MMCV_CUDA=no``, or before a CUDA torch replaced the CPU one) fails on a GPU with
    "ms_deform_attn_impl_forward ... cuda ... not found". Its ``grid_sample`` path runs on any
    device: slower than the kernel, so ``evaluate`` records which one a GPU timing ran
    (``gpu_deformable_attention``). Returns whether CUDA tensors were re-routed.
    """
    import mmcv
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    if not deform_attn.IS_CUDA_AVAILABLE or compiled_cuda_version() is not None:
        return False
    deform_attn.IS_CUDA_AVAILABLE = False
    log.warning(
        "mmcv %s was built without CUDA ops: deformable attention runs its PyTorch grid_sample "
        "path on the GPU (reinstall with MMCV_CUDA=yes for the CUDA kernel)",
        mmcv.__version__,
    )
    return True


class ContiguousSamplingFunctional:
    """``torch.nn.functional`` as mmcv's deformable attention module sees it, but for
    ``grid_sample``, which gets its input and grid made contiguous first."""

    def __getattr__(self, name: str) -> Any:
        import torch.nn.functional

        return getattr(torch.nn.functional, name)

    @staticmethod
    def grid_sample(input, grid, *args, **kwargs):  # noqa: A002 (torch's own parameter name)
        import torch.nn.functional

        return torch.nn.functional.grid_sample(
            input.contiguous(), grid.contiguous(), *args, **kwargs
        )


def contiguous_deformable_sampling() -> None:
    """Hand ``grid_sample`` contiguous tensors in mmcv's PyTorch deformable attention.

    mmcv 2.1.0's ``multi_scale_deformable_attn_pytorch`` (the path on CPU, and on a GPU without
    mmcv's CUDA ops) slices each level out of one sampling grid, so ``grid_sample`` gets a
    non-contiguous grid (and value). PyTorch's CPU kernel then takes a strided path that is about
    3x slower for the demo's shapes and hardly faster with fewer sampling points per query
    (docs/findings.md#2026-12-04-sampling-points-and-contiguous-sampling). A contiguous copy
    gives bit-identical outputs. mmcv's module reaches ``grid_sample`` through its global ``F``,
    so only that name is replaced there; every other ``F.<name>`` is torch's.
    """
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    if not isinstance(deform_attn.F, ContiguousSamplingFunctional):
        deform_attn.F = ContiguousSamplingFunctional()


DETECTOR_TYPE = "DeformableDETRAnyWidth"


def _register_any_width_detr() -> None:
    """Register mmdet's DeformableDETR with its two-stage path fixed for embed_dims != 256.

    mmdet 3.3's ``pre_decoder`` calls ``get_proposal_pos_embed`` with its default of 128
    features per coordinate, which only fits 256-d embeddings; the tiny model's 128-d ones then
    fail with a shape error. Everything else is mmdet's class unchanged.
    """
    from mmdet.models.detectors import DeformableDETR
    from mmdet.registry import MODELS

    if DETECTOR_TYPE in MODELS.module_dict:
        return

    @MODELS.register_module(name=DETECTOR_TYPE)
    class DeformableDETRAnyWidth(DeformableDETR):
        def get_proposal_pos_embed(self, proposals, num_pos_feats=None, temperature=10000):
            num_pos_feats = num_pos_feats or self.embed_dims // 2
            return DeformableDETR.get_proposal_pos_embed(proposals, num_pos_feats, temperature)


def model_config(model: Mapping[str, Any], num_classes: int = len(CLASSES)) -> dict[str, Any]:
    """The mmdet ``model`` dict: the recipe's, with the ``model`` section's sizes and 3 classes.

    The recipe's backbone ``init_cfg`` (a torchvision download) is removed: pretrained starts
    are local files (``model.init``, :mod:`detrprune.train.pretrained`).
    """
    depth = int(model["depth"])
    embed_dims = int(model["embed_dims"])
    num_levels = int(model["num_levels"])
    if num_levels not in (3, 4):
        raise ValueError(f"model.num_levels: must be 3 or 4, got {num_levels}")
    norm_eval = bool(model["norm_eval"])
    attention = dict(
        embed_dims=embed_dims,
        num_heads=int(model["num_heads"]),
        num_levels=num_levels,
        num_points=int(model["num_points"]),
        dropout=float(model["dropout"]),  # mmcv's default is 0.1 whatever the config says
        batch_first=True,
    )
    ffn = dict(
        embed_dims=embed_dims,
        feedforward_channels=int(model["ffn_dims"]),
        ffn_drop=float(model["dropout"]),
    )
    overrides = dict(
        type=DETECTOR_TYPE,
        num_queries=int(model["num_queries"]),
        num_feature_levels=num_levels,
        with_box_refine=bool(model["box_refine"]),
        as_two_stage=bool(model["two_stage"]),
        backbone=dict(
            depth=depth,
            frozen_stages=int(model["frozen_stages"]),
            norm_cfg=dict(type="BN", requires_grad=not norm_eval),
            norm_eval=norm_eval,
            init_cfg=None,
        ),
        neck=dict(
            in_channels=_RESNET_STAGE_CHANNELS[depth][1:],
            out_channels=embed_dims,
            norm_cfg=dict(type="GN", num_groups=int(model["neck_gn_groups"])),
            num_outs=num_levels,
        ),
        encoder=dict(
            num_layers=int(model["encoder_layers"]),
            layer_cfg=dict(self_attn_cfg=attention, ffn_cfg=ffn),
        ),
        decoder=dict(
            num_layers=int(model["decoder_layers"]),
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=embed_dims,
                    num_heads=int(model["num_heads"]),
                    dropout=float(model["dropout"]),
                    batch_first=True,
                ),
                cross_attn_cfg=attention,
                ffn_cfg=ffn,
            ),
        ),
        positional_encoding=dict(num_feats=embed_dims // 2),
        bbox_head=dict(num_classes=num_classes, embed_dims=embed_dims),
        test_cfg=dict(max_per_img=int(model["max_per_img"])),
    )
    recipe = Config(dict(model=load_recipe(model["recipe"]).model.to_dict()))
    recipe.merge_from_dict(dict(model=overrides))
    return recipe.model.to_dict()


_META_KEYS = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")


def _test_pipeline(input_scale: tuple[int, int]) -> list[dict]:
    """The recipe's test pipeline at a KITTI-shaped (width, height) scale, not COCO's 1333x800."""
    return [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=tuple(input_scale), keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="PackDetInputs", meta_keys=_META_KEYS),
    ]


def rescale_recipe_pipeline(pipeline: list, input_scale: tuple[int, int]) -> list:
    """The recipe's train pipeline with its COCO scales rescaled to ``input_scale`` (w, h).

    Resize scales are (edge, edge) pairs read as (short, long) by mmcv's keep-ratio resize: the
    short edge scales by input_h / 800, the long one by input_w / 1333, so the recipe's 480-800
    short sides become 225-375 at 1242x375 (a COCO scale would make every KITTI frame ~1333x402).
    Crop sizes, in pixels of the image they crop, scale by the short-edge factor.
    """
    short = input_scale[1] / RECIPE_SCALE[1]
    long = input_scale[0] / RECIPE_SCALE[0]

    def scaled_pair(pair):
        low, high = sorted(pair)
        return (round(low * short), round(high * long))

    def rescale(step):
        if isinstance(step, list):
            return [rescale(item) for item in step]
        if not isinstance(step, Mapping):
            return step
        step = {key: rescale(value) for key, value in step.items()}
        if step.get("type") in ("RandomChoiceResize", "Resize", "RandomResize"):
            for key in ("scales", "scale"):
                if key in step and isinstance(step[key][0], list | tuple):
                    step[key] = [scaled_pair(pair) for pair in step[key]]
                elif key in step:
                    step[key] = scaled_pair(step[key])
        if step.get("type") == "RandomCrop":
            step["crop_size"] = tuple(round(edge * short) for edge in step["crop_size"])
        return step

    return [rescale(step) for step in pipeline]


def train_pipeline(recipe: Config, input_scale: tuple[int, int], augmentation: str) -> list[dict]:
    """``recipe``: the recipe's flips, multi-scale resizes and crops, rescaled to KITTI;
    ``flip``: one resize to ``input_scale`` and a random flip (the tiny default's, on CPU)."""
    if augmentation == "recipe":
        return rescale_recipe_pipeline(recipe.train_pipeline, input_scale)
    if augmentation != "flip":
        raise ValueError(f"train.augmentation: {augmentation!r}: expected recipe or flip")
    return [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=tuple(input_scale), keep_ratio=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackDetInputs"),
    ]


def inference_batch(image_paths: Sequence[Path], input_scale: tuple[int, int]) -> dict[str, Any]:
    """Images from files as one batch for ``model.test_step``, resized as evaluation does."""
    from mmengine.dataset import Compose, pseudo_collate

    register_mmdet()
    pipeline = Compose(
        [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=tuple(input_scale), keep_ratio=True),
            dict(type="PackDetInputs", meta_keys=_META_KEYS),
        ]
    )
    return pseudo_collate(
        [pipeline(dict(img_path=str(path), img_id=i)) for i, path in enumerate(image_paths)]
    )


def synthetic_batch(input_hw: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """A fixed random uint8 image of ``input_hw`` as a batch-1 ``test_step`` input.

    For checks that compare two models' outputs (reload equality, export parity) without data.
    """
    import torch
    from mmdet.structures import DetDataSample

    height, width = int(input_hw[0]), int(input_hw[1])
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
    sample = DetDataSample(
        metainfo=dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0))
    )
    return {"inputs": [image], "data_samples": [sample]}


def dataset_config(
    ann_file: Path, data_root: Path, pipeline: list[dict], test_mode: bool
) -> dict[str, Any]:
    """An mmdet ``CocoDataset`` over our converted KITTI JSON (paths made absolute)."""
    return dict(
        type="CocoDataset",
        metainfo=dict(classes=CLASSES),
        data_root=str(Path(data_root).resolve()),
        ann_file=str(Path(ann_file).resolve()),
        data_prefix=dict(img=IMAGE_SUBDIR),
        # Frames without objects are kept: KITTI has them and the model must learn "nothing".
        filter_cfg=dict(filter_empty_gt=False),
        test_mode=test_mode,
        pipeline=pipeline,
    )


def test_dataloader_config(
    ann_file: Path, data_root: Path, input_scale: tuple[int, int], num_workers: int = 0
) -> dict[str, Any]:
    """Batch-1, ordered loader over the validation split."""
    test_pipeline = _test_pipeline(input_scale)
    return dict(
        batch_size=1,
        num_workers=num_workers,
        persistent_workers=False,
        drop_last=False,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=dataset_config(ann_file, data_root, test_pipeline, test_mode=True),
    )


def coco_evaluator_config(ann_file: Path) -> dict[str, Any]:
    """mmdet's CocoMetric (pycocotools underneath) with per-class AP."""
    return dict(
        type="CocoMetric",
        ann_file=str(Path(ann_file).resolve()),
        metric="bbox",
        classwise=True,
        format_only=False,
    )


def build_training_config(
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    *,
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    seed: int,
) -> Config:
    """The mmengine Config for ``Runner.from_cfg``: mmdet's recipe (``model.recipe``) with what
    the study sets replaced, iteration-based training, validation at the end.

    What the recipe keeps: its optimizer (AdamW, 0.1x lr on the backbone, sampling offsets and
    reference points; lr, weight decay, clip and the backbone multiplier from ``train``), its
    default hooks, environment and visualiser. ``train.lr`` is the rate at a total batch of
    ``train.lr_base_batch``; mmengine scales it to the real total batch (GPUs x batch size).
    """
    recipe = load_recipe(model["recipe"])
    input_scale = (int(model["input_scale"][0]), int(model["input_scale"][1]))
    max_iters = int(train["max_iters"])
    warmup = min(int(train["warmup_iters"]), max(1, max_iters // 2))
    num_workers = int(train["num_workers"])
    pipeline = train_pipeline(recipe, input_scale, str(train["augmentation"]))
    cfg = recipe
    cfg.model = model_config(model)
    cfg.train_dataloader = dict(
        batch_size=int(train["batch_size"]),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed),
        dataset=dataset_config(train_json, data_root, pipeline, test_mode=False),
    )
    cfg.train_pipeline = pipeline
    cfg.test_pipeline = _test_pipeline(input_scale)
    cfg.val_dataloader = test_dataloader_config(val_json, data_root, input_scale, num_workers)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = coco_evaluator_config(val_json)
    # Validation at the end, and every ``val_interval`` iterations when that is > 0.
    cfg.train_cfg = dict(
        type="IterBasedTrainLoop",
        max_iters=max_iters,
        val_interval=int(train["val_interval"]) or max_iters,
    )
    cfg.merge_from_dict(
        dict(
            optim_wrapper=dict(
                optimizer=dict(lr=float(train["lr"]), weight_decay=float(train["weight_decay"])),
                clip_grad=dict(max_norm=float(train["grad_clip"])),
                paramwise_cfg=dict(
                    custom_keys=dict(backbone=dict(lr_mult=float(train["backbone_lr_mult"])))
                ),
            ),
            default_hooks=dict(
                logger=dict(interval=int(train["log_interval"])),
                checkpoint=dict(
                    by_epoch=False,
                    interval=int(train["checkpoint_interval"]),
                    max_keep_ckpts=2,
                    save_last=True,
                ),
            ),
            log_processor=dict(by_epoch=False, window_size=20),
        )
    )
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=int(train["lr_base_batch"]))
    cfg.param_scheduler = [
        # No warm-up scheduler for warmup_iters 0 (LinearLR refuses an empty range).
        *(
            [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup)]
            if warmup > 0
            else []
        ),
        dict(
            type="MultiStepLR",
            by_epoch=False,
            begin=0,
            end=max_iters,
            milestones=[max(warmup + 1, int(max_iters * float(train["lr_drop_at"])))],
            gamma=0.1,
        ),
    ]
    for unused in ("max_epochs", "data_root", "dataset_type"):  # the recipe's COCO epochs/paths
        cfg.pop(unused, None)
    cfg.update(
        default_scope="mmdet",
        log_level="INFO",
        load_from=None,
        resume=False,
        randomness=dict(seed=seed, deterministic=False),
        work_dir=str(work_dir),
        launcher="none",
    )
    return cfg


def build_detector(model_cfg: Mapping[str, Any]):
    """A freshly built mmdet detector from an mmdet ``model`` dict, weights not initialised.

    Callers either load a checkpoint into it or hand it to the Runner, which initialises it.
    """
    from mmdet.registry import MODELS

    register_mmdet()
    return MODELS.build(copy.deepcopy(dict(model_cfg)))
