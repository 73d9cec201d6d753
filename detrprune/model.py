"""MMDetection config for the study's Deformable DETR, at the tiny CPU size or the full R50 size.

Everything the DAG needs to rebuild a model is derived here from the ``model``, ``train`` and
``evaluate`` sections of the workflow config, so the same function serves training, pruning and
evaluation. The detector is mmdet's own ``DeformableDETR``; nothing here re-implements it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from detrprune import CLASSES

# ResNet stage widths for the stages Deformable DETR takes (out_indices 1..3, plus the extra
# level the neck makes by a stride-2 conv when num_levels == 4).
_RESNET_STAGE_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512]}
_RESNET_STAGE_CHANNELS.update({50: [256, 512, 1024, 2048], 101: [256, 512, 1024, 2048]})

IMAGE_SUBDIR = "training/image_2/"


def register_mmdet() -> None:
    """Register mmdet's modules (and ours) and make mmdet the default registry scope."""
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    _register_any_width_detr()


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
    """The mmdet ``model`` dict of a Deformable DETR described by the config's ``model`` section."""
    depth = int(model["depth"])
    embed_dims = int(model["embed_dims"])
    num_levels = int(model["num_levels"])
    if num_levels not in (3, 4):
        raise ValueError(f"model.num_levels: must be 3 or 4, got {num_levels}")
    in_channels = _RESNET_STAGE_CHANNELS[depth][1:]
    pretrained = model.get("pretrained")
    backbone_init = dict(type="Pretrained", checkpoint=str(pretrained)) if pretrained else None
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
    return dict(
        type=DETECTOR_TYPE,
        num_queries=int(model["num_queries"]),
        num_feature_levels=num_levels,
        with_box_refine=bool(model["box_refine"]),
        as_two_stage=bool(model["two_stage"]),
        data_preprocessor=dict(
            type="DetDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32,
        ),
        backbone=dict(
            type="ResNet",
            depth=depth,
            num_stages=4,
            out_indices=(1, 2, 3),
            frozen_stages=int(model["frozen_stages"]),
            norm_cfg=dict(type="BN", requires_grad=not norm_eval),
            norm_eval=norm_eval,
            style="pytorch",
            init_cfg=backbone_init,
        ),
        neck=dict(
            type="ChannelMapper",
            in_channels=in_channels,
            kernel_size=1,
            out_channels=embed_dims,
            act_cfg=None,
            norm_cfg=dict(type="GN", num_groups=int(model["neck_gn_groups"])),
            num_outs=num_levels,
        ),
        encoder=dict(
            num_layers=int(model["encoder_layers"]),
            layer_cfg=dict(self_attn_cfg=attention, ffn_cfg=ffn),
        ),
        decoder=dict(
            num_layers=int(model["decoder_layers"]),
            return_intermediate=True,
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
            post_norm_cfg=None,
        ),
        positional_encoding=dict(num_feats=embed_dims // 2, normalize=True, offset=-0.5),
        bbox_head=dict(
            type="DeformableDETRHead",
            num_classes=num_classes,
            embed_dims=embed_dims,
            sync_cls_avg_factor=True,
            loss_cls=dict(
                type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0
            ),
            loss_bbox=dict(type="L1Loss", loss_weight=5.0),
            loss_iou=dict(type="GIoULoss", loss_weight=2.0),
        ),
        train_cfg=dict(
            assigner=dict(
                type="HungarianAssigner",
                match_costs=[
                    dict(type="FocalLossCost", weight=2.0),
                    dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
                    dict(type="IoUCost", iou_mode="giou", weight=2.0),
                ],
            )
        ),
        test_cfg=dict(max_per_img=int(model["max_per_img"])),
    )


_META_KEYS = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")


def _pipelines(input_scale: tuple[int, int]) -> tuple[list[dict], list[dict]]:
    """Train and test pipelines at a KITTI-shaped (width, height) scale, not COCO's 1333x800."""
    train = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="Resize", scale=input_scale, keep_ratio=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackDetInputs"),
    ]
    test = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=input_scale, keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True),
        dict(type="PackDetInputs", meta_keys=_META_KEYS),
    ]
    return train, test


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
    _, test_pipeline = _pipelines(input_scale)
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
    """The full mmengine Config for ``Runner.from_cfg``: iteration-based training, eval at end."""
    input_scale = (int(model["input_scale"][0]), int(model["input_scale"][1]))
    train_pipeline, _ = _pipelines(input_scale)
    max_iters = int(train["max_iters"])
    warmup = min(int(train["warmup_iters"]), max(1, max_iters // 2))
    checkpoint_interval = int(train["checkpoint_interval"])
    num_workers = int(train["num_workers"])
    cfg = dict(
        default_scope="mmdet",
        model=model_config(model),
        train_dataloader=dict(
            batch_size=int(train["batch_size"]),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=dict(type="InfiniteSampler", shuffle=True, seed=seed),
            dataset=dataset_config(train_json, data_root, train_pipeline, test_mode=False),
        ),
        val_dataloader=test_dataloader_config(val_json, data_root, input_scale, num_workers),
        val_evaluator=coco_evaluator_config(val_json),
        # Validation at the end, and every ``val_interval`` iterations when that is > 0.
        train_cfg=dict(
            type="IterBasedTrainLoop",
            max_iters=max_iters,
            val_interval=int(train["val_interval"]) or max_iters,
        ),
        val_cfg=dict(type="ValLoop"),
        optim_wrapper=dict(
            type="OptimWrapper",
            optimizer=dict(
                type="AdamW", lr=float(train["lr"]), weight_decay=float(train["weight_decay"])
            ),
            clip_grad=dict(max_norm=float(train["grad_clip"]), norm_type=2),
            paramwise_cfg=dict(
                custom_keys={
                    "backbone": dict(lr_mult=float(train["backbone_lr_mult"])),
                    "sampling_offsets": dict(lr_mult=0.1),
                    "reference_points": dict(lr_mult=0.1),
                }
            ),
        ),
        param_scheduler=[
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
        ],
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=int(train["log_interval"])),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(
                type="CheckpointHook",
                by_epoch=False,
                interval=checkpoint_interval,
                max_keep_ckpts=2,
                save_last=True,
            ),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl"),
        ),
        log_processor=dict(type="LogProcessor", window_size=20, by_epoch=False),
        log_level="INFO",
        load_from=None,
        resume=False,
        randomness=dict(seed=seed, deterministic=False),
        work_dir=str(work_dir),
        launcher="none",
    )
    return Config(copy.deepcopy(cfg))


def build_detector(model_cfg: Mapping[str, Any]):
    """A freshly built mmdet detector from an mmdet ``model`` dict, weights not initialised.

    Callers either load a checkpoint into it or hand it to the Runner, which initialises it.
    """
    from mmdet.registry import MODELS

    register_mmdet()
    return MODELS.build(copy.deepcopy(dict(model_cfg)))
