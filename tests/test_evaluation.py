"""Efficiency metrics on a real tiny Deformable DETR: fvcore GMACs, latency, sizes."""

from __future__ import annotations

import pytest
import torch

from detrprune.evaluate.metrics import cpu_latency, fvcore_gmacs, size_metrics
from detrprune.prune.methods import count_parameters, filter_prune, weight_prune
from detrprune.train.checkpoint import save_detector

from .test_pruning import H, W, random_batch


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


def test_latency_statistics(tiny_detector):
    detector, _ = tiny_detector
    result = cpu_latency(detector, [random_batch(0), random_batch(1)], warmup=1, runs=20, threads=1)
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["latency_runs"] == 20
    assert result["latency_device"].startswith("cpu (") and "1 threads" in result["latency_device"]
    assert torch.get_num_threads() >= 1


def test_latency_reuses_the_accuracy_pass_and_times_only_the_missing_runs(tiny_detector):
    detector, _ = tiny_detector
    calls = []
    detector.test_step = lambda batch: calls.append(batch)
    try:
        # 2 warm-up calls dropped, 3 reused, 2 more timed here; no new warm-up (the model ran).
        pass_times = [900.0, 800.0, 10.0, 11.0, 12.0]
        topped = cpu_latency(detector, [random_batch(0)], 2, 5, 1, timed_ms=pass_times)
        assert len(calls) == 2 and topped["latency_runs_from_accuracy_pass"] == 3
        assert topped["latency_ms_p90"] == 12.0 and topped["latency_ms_median"] < 12.0
        # A long enough pass needs no run of its own; without one, all are timed here.
        calls.clear()
        enough = cpu_latency(detector, [random_batch(0)], 1, 3, 1, timed_ms=pass_times)
        assert not calls and enough["latency_ms_median"] == 11.0
        alone = cpu_latency(detector, [random_batch(0)], 2, 4, 1)
        assert len(calls) == 6 and alone["latency_runs_from_accuracy_pass"] == 0
    finally:
        del detector.test_step


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
    reason="no CUDA device on this machine: gpu_latency is run where one is (GPU sessions)",
)
def test_gpu_latency_with_cuda_events(tiny_detector):
    from detrprune.evaluate.metrics import gpu_latency

    detector, _ = tiny_detector
    result = gpu_latency(detector, [random_batch(0), random_batch(1)], warmup=2, runs=5)
    assert 0 < result["gpu_latency_ms_median"] <= result["gpu_latency_ms_p90"]
    assert result["gpu_latency_device"].startswith("cuda (")
    # Only a GPU shows this: the CUDA kernel, not mmcv's grid_sample fallback, ran.
    assert result["gpu_deformable_attention"] == "mmcv_cuda"


def test_deformable_attention_path_on_cpu_is_the_pytorch_fallback(tiny_detector):
    """The profiler sees mmcv's grid_sample path on CPU; its CUDA kernel is read off the same
    profile on a GPU (test above, and make gpu-smoke)."""
    from detrprune.evaluate.metrics import deformable_attention_path

    assert deformable_attention_path(tiny_detector[0], random_batch(0)) == "pytorch"


def test_gpu_latency_refuses_to_run_without_cuda(tiny_detector, monkeypatch):
    from detrprune.evaluate.metrics import gpu_latency

    # The one place a CUDA-less machine is simulated: it checks the guard, not a measurement.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        gpu_latency(tiny_detector[0], [random_batch(0)], warmup=0, runs=1)
