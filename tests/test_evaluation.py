"""Efficiency metrics on a real tiny Deformable DETR: fvcore GMACs, latency, sizes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from detrprune.constants import LATENCY_PARTS
from detrprune.evaluate.intervals import INTERVAL_METHOD
from detrprune.evaluate.latency import PartClock, Schedule, latency_columns, time_interleaved
from detrprune.evaluate.metrics import fvcore_gmacs, size_metrics
from detrprune.prune.counting import count_parameters
from detrprune.prune.filters import filter_prune
from detrprune.prune.weights import weight_prune
from detrprune.train.checkpoint import save_detector
from detrprune.train.model import inference_batch

from .test_pruning import H, W, random_batch

FRAMES = sorted(
    (Path(__file__).parent / "data" / "kitti_sample" / "training" / "image_2").glob("*.png")
)


def test_fvcore_counts_the_detector_and_filter_pruning_lowers_it(tiny_detector):
    detector, _ = tiny_detector
    dense = fvcore_gmacs(detector, [random_batch(0), random_batch(1)])
    assert dense["gmacs"] > 0 and dense["flops_images"] == 2
    # On CPU deformable attention runs through grid_sample, which fvcore counts.
    assert "aten::grid_sampler" not in dense["flops_unsupported_ops"]
    # What fvcore leaves out (softmax, mul, add, ...) is measured, and it is small.
    assert dense["flops_unsupported_ops"]
    assert 0 < dense["gops_elementwise"] < 0.1 * dense["gmacs"]
    filter_prune(detector, 0.5, (H, W))
    pruned = fvcore_gmacs(detector, [random_batch(0)])
    assert pruned["gmacs"] < 0.8 * dense["gmacs"]


def _smaller(batch: dict, height: int) -> dict:
    """The batch's image cut to ``height`` rows: another input shape, another trace."""
    from mmdet.structures import DetDataSample

    image = batch["inputs"][0][:, :height]
    shape = tuple(image.shape[1:])
    meta = dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0))
    return {"inputs": [image], "data_samples": [DetDataSample(metainfo=meta)]}


def test_images_of_one_shape_are_traced_once_and_count_as_each_would_alone(tiny_detector):
    detector, _ = tiny_detector
    alone = [fvcore_gmacs(detector, [random_batch(i)]) for i in range(3)]
    # Other pixels, same shapes: the count is the same (what tracing once per shape rests on).
    assert alone[0]["gmacs"] == alone[1]["gmacs"] == alone[2]["gmacs"]
    small = fvcore_gmacs(detector, [_smaller(random_batch(3), H // 2)])
    assert small["gmacs"] < alone[0]["gmacs"]
    mixed = fvcore_gmacs(
        detector, [random_batch(0), _smaller(random_batch(3), H // 2), random_batch(1)]
    )
    assert (mixed["flops_images"], mixed["flops_traced"]) == (3, 2)
    for key in ("gmacs", "gops_elementwise", "gmacs_backbone", "gmacs_encoder", "gmacs_other"):
        assert mixed[key] == pytest.approx((2 * alone[0][key] + small[key]) / 3, rel=1e-9), key
    assert mixed["flops_unsupported_ops"] == {
        op: 2 * n + small["flops_unsupported_ops"][op]
        for op, n in alone[0]["flops_unsupported_ops"].items()
    }


def test_weight_pruning_does_not_change_the_dense_flop_count(tiny_detector):
    detector, _ = tiny_detector
    dense = fvcore_gmacs(detector, [random_batch(0)])["gmacs"]
    weight_prune(detector, 0.9)
    assert fvcore_gmacs(detector, [random_batch(0)])["gmacs"] == pytest.approx(dense)


class _Sleeper(nn.Module):
    """A model part that takes ``seconds``, calling ``inner`` (another part) half-way."""

    def __init__(self, seconds: float, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds / 2)
        if self.inner is not None:
            x = self.inner(x)
        time.sleep(self.seconds / 2)
        return x + 1


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_branches = nn.ModuleList([_Sleeper(0.004), _Sleeper(0.006)])
        self.reg_branches = nn.ModuleList([_Sleeper(0.020), _Sleeper(0.006)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_branches[0](x) + self.reg_branches[0](x)


class _ToyDetector(nn.Module):
    """The call pattern of mmdet's two-stage refine Deformable DETR, with known times: the
    decoder calls a head branch (box refinement), the detector calls the head's last branches
    directly (two-stage proposals), and some time is spent outside every part."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Sleeper(0.010)
        self.neck = _Sleeper(0.002)
        self.encoder = _Sleeper(0.008)
        self.bbox_head = _Head()
        self.decoder = _Sleeper(0.006, inner=self.bbox_head.reg_branches[0])

    def test_step(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.003)  # pre-processing
        memory = self.encoder(self.neck(self.backbone(x)))
        proposals = self.bbox_head.cls_branches[1](memory) + self.bbox_head.reg_branches[1](memory)
        time.sleep(0.003)  # proposal selection
        out = self.bbox_head(self.decoder(proposals))
        time.sleep(0.003)  # post-processing
        return out


def _hooks(model: nn.Module) -> int:
    """How many forward (pre-)hooks the model's modules hold."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _clocked_call(model: nn.Module, batch: object) -> tuple[object, float, dict[str, float]]:
    """One ``test_step`` under a :class:`PartClock`, as ``time_interleaved`` runs it: its
    outputs, its wall time (ms) and that time split by part."""
    clock = PartClock()
    with clock.hooked(model):
        start = time.perf_counter()
        clock.start(start)
        outputs = model.test_step(batch)
        end = time.perf_counter()
        parts = clock.stop(end)
    return outputs, 1000.0 * (end - start), parts


def test_latency_parts_are_exclusive_times_that_add_up_to_the_call():
    toy = _ToyDetector()
    outputs, total, split = _clocked_call(toy, torch.zeros(1))
    assert sum(split.values()) == pytest.approx(total, rel=1e-9)
    # Sleeps are at least as long as asked; the slack is for a loaded machine's scheduling.
    expected = {
        "backbone": 10,
        "neck": 2,
        "encoder": 8,
        "decoder": 6,  # without the 20 ms refine branch it calls: that is head time
        "head": 6 + 6 + 20 + 4 + 20,  # branches called by the detector, the decoder and the head
        "rest": 9,
    }
    for part, ms in expected.items():
        assert ms <= split[part] < ms + 10, (part, split)
    # The hooks are gone and changed nothing.
    assert torch.equal(outputs, toy.test_step(torch.zeros(1)))
    assert _hooks(toy) == 0


@pytest.fixture(scope="module")
def kitti_batches() -> list[dict]:
    """The six real KITTI frames as batch-1 inputs, resized as evaluation does."""
    return [inference_batch([path], (W, H)) for path in FRAMES]


def test_latency_by_part_of_a_two_stage_refine_detector(tiny_detector, kitti_batches, caplog):
    detector, _ = tiny_detector
    assert detector.as_two_stage and detector.with_box_refine
    hooks_before = _hooks(detector)
    with torch.no_grad():
        plain = [detector.test_step(batch)[0].pred_instances for batch in kitti_batches[:2]]
        clocked = [_clocked_call(detector, batch) for batch in kitti_batches[:2]]
    # The hooks change no detection, and each call's parts add up to its time.
    for old, (outputs, total, split) in zip(plain, clocked, strict=True):
        for key in ("bboxes", "scores", "labels"):
            assert torch.equal(old[key], outputs[0].pred_instances[key]), key
        assert sum(split.values()) == pytest.approx(total, rel=1e-9)
    timings = time_interleaved(
        {"baseline": detector}, kitti_batches, Schedule(rounds=3, runs_per_round=5, warmup=2)
    )
    result = latency_columns(timings, "baseline")["baseline"]
    print({k: round(v, 3) for k, v in result.items() if k.startswith("latency_ms")})
    for part in LATENCY_PARTS:
        assert result[f"latency_ms_{part}"] > 0, part
    median, parts_sum = result["latency_ms_median"], result["latency_ms_parts_sum"]
    assert parts_sum == pytest.approx(sum(result[f"latency_ms_{p}"] for p in LATENCY_PARTS))
    # Medians of parts need not add up to the median call; on a quiet machine they come close.
    assert 0.5 * median <= parts_sum <= 1.5 * median
    # The hooks are gone.
    assert _hooks(detector) == hooks_before


def test_size_metrics_credit_zeroed_weights(tiny_detector, tmp_path):
    detector, cfg = tiny_detector
    total = count_parameters(detector)
    weight_prune(detector, 0.5)
    path = tmp_path / "model.pth"
    save_detector(detector, path, cfg, {})
    sizes = size_metrics(detector, path, baseline_nonzero_params=total)
    assert sizes["params_total"] == total
    assert sizes["params_nonzero"] < total
    assert sizes["compression_ratio"] == pytest.approx(total / sizes["params_nonzero"])
    assert sizes["checkpoint_mb"] == pytest.approx(path.stat().st_size / 2**20)


def _layer_shape_macs(detector, batch) -> float:
    """Multiply-adds of every Conv2d, Linear and MultiheadAttention, from their shapes alone."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    def attention_hook(module, args, kwargs, output):
        # nn.MultiheadAttention projects q, k, v and the output functionally: no Linear hook
        # fires for them. Attention scores (bmm) are left out, as in fvcore's conv+linear count.
        nonlocal total
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs["key"]
        embed = module.embed_dim
        total += (query.shape[0] * query.shape[1] * 2 + key.shape[0] * key.shape[1] * 2) * embed**2

    handles = []
    for module in detector.modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.MultiheadAttention):
            handles.append(module.register_forward_hook(attention_hook, with_kwargs=True))
        elif isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    with torch.no_grad():
        detector.test_step(batch)
    for handle in handles:
        handle.remove()
    return total / 1e9


def test_fvcore_agrees_with_a_count_from_layer_shapes(tiny_detector):
    detector, _ = tiny_detector
    counted = fvcore_gmacs(detector, [random_batch(0)])
    by_operator = counted["gmacs_by_operator"]
    fvcore_conv_linear = by_operator["conv"] + by_operator.get("linear", 0.0)
    derived = _layer_shape_macs(detector, random_batch(0))
    assert derived == pytest.approx(fvcore_conv_linear, rel=0.05)
    # Convs and linears are almost all of the work; norms, grid_sample and bmm are the rest.
    assert fvcore_conv_linear > 0.95 * counted["gmacs"]
    parts = [
        counted[f"gmacs_{p}"] for p in ("backbone", "neck", "encoder", "decoder", "head", "other")
    ]
    assert sum(parts) == pytest.approx(counted["gmacs"], rel=1e-6)
    assert counted["gmacs_backbone"] == max(parts)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device on this machine: GPU latency is timed where one is (GPU sessions)",
)
def test_gpu_latency_is_timed_interleaved_with_the_kernels_synchronised(tiny_detector):
    detector, _ = tiny_detector
    batches = [random_batch(0), random_batch(1)]
    timings = time_interleaved(
        {"baseline": detector},
        batches,
        Schedule(rounds=2, runs_per_round=3, warmup=2),
        device="cuda",
    )
    result = latency_columns(timings, "baseline", prefix="gpu_")["baseline"]
    assert 0 < result["gpu_latency_ms_median"] <= result["gpu_latency_ms_p90"]
    assert result["gpu_speedup"] == 1.0
    # Only a GPU shows this: mmcv's CUDA kernel ran where it was built, and without it the
    # grid_sample path did (register_mmdet's re-routing) instead of an error.
    from detrprune.evaluate.metrics import deformable_attention_path

    assert deformable_attention_path(detector, batches[0]) == expected_gpu_deformable_attention()


def expected_gpu_deformable_attention() -> str:
    """What a GPU run of deformable attention is: mmcv's kernel where this mmcv has CUDA ops."""
    from detrprune.mmcv_build import compiled_cuda_version

    return "pytorch" if compiled_cuda_version() is None else "mmcv_cuda"


def test_deformable_attention_path_on_cpu_is_the_pytorch_fallback(tiny_detector):
    """The profiler sees mmcv's grid_sample path on CPU; its CUDA kernel is read off the same
    profile on a GPU (test above, and make gpu-smoke)."""
    from detrprune.evaluate.metrics import deformable_attention_path

    assert deformable_attention_path(tiny_detector[0], random_batch(0)) == "pytorch"


def evaluate_on_the_sample_frames(checkpoint: Path, baseline: Path, tmp_path: Path) -> dict:
    """``evaluate_checkpoint`` at the micro size on the 6 real KITTI frames (half of them as
    the validation split), with 10 bootstrap resamples."""
    from detrprune.data.coco import kitti_to_coco
    from detrprune.evaluate.metrics import evaluate_checkpoint

    sample = Path(__file__).parent / "data" / "kitti_sample"
    val_json = tmp_path / "val.json"
    kitti_to_coco(sample, tmp_path / "train.json", val_json, val_fraction=0.5, seed=0)
    return evaluate_checkpoint(
        checkpoint,
        baseline,
        val_json=val_json,
        data_root=sample,
        input_scale=(W, H),
        classes=("Car", "Pedestrian", "Cyclist"),
        threads=1,
        flops_images=1,
        latency={"warmup": 1, "runs": 2, "rounds": 2, "images": 1},
        bootstrap_resamples=10,
    )


def test_the_evaluate_record_times_nothing(tiny_detector, tmp_path):
    """Latency is the time_models rule's: an evaluation records accuracy, GMACs and sizes, and
    the device its inference ran on, but no latency of its own."""
    detector, cfg = tiny_detector
    checkpoint = tmp_path / "model.pth"
    meta = {"variant": "baseline", "method": "baseline", "ratio": 0}
    save_detector(detector, checkpoint, cfg, meta)
    record = evaluate_on_the_sample_frames(checkpoint, checkpoint, tmp_path)
    assert record["inference_device"] == "cpu" and record["gmacs"] > 0
    assert not [key for key in record if "latency" in key]
    assert record["kept_channel_fraction"] == record["params_fraction"] == 1.0
    # metrics.json names how its accuracy intervals were made.
    assert record["accuracy_interval_method"] == INTERVAL_METHOD
    assert record["mAP_ci95_low"] <= record["mAP_ci95_high"]


def test_the_evaluate_record_says_what_pruning_reached(tiny_detector, tmp_path):
    """Beside the ratio asked for: the channels kept in the layers pruning narrowed, and the
    parameters kept, both against the baseline checkpoint."""
    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    meta = {"variant": "baseline", "method": "baseline", "ratio": 0}
    save_detector(detector, baseline, cfg, meta)
    total = count_parameters(detector)
    filter_prune(detector, 0.5, (H, W))
    pruned = tmp_path / "pruned.pth"
    meta = {"variant": "prune/filter/r50", "method": "filter", "kind": "filter", "ratio": 50}
    save_detector(detector, pruned, cfg, meta)
    record = evaluate_on_the_sample_frames(pruned, baseline, tmp_path)
    assert record["kept_channel_fraction"] == pytest.approx(0.5, abs=0.02)
    assert record["params_fraction"] == pytest.approx(count_parameters(detector) / total)
    assert record["params_fraction"] < 1.0
