"""Efficiency metrics on a real tiny Deformable DETR: fvcore GMACs, latency, sizes."""

from __future__ import annotations

import pytest
import torch

from detrprune.checkpoint import save_detector
from detrprune.evaluation import cpu_latency, fvcore_gmacs, size_metrics
from detrprune.pruning import count_parameters, filter_prune, weight_prune

from .test_pruning import H, W, _batch


def test_fvcore_counts_the_detector_and_filter_pruning_lowers_it(tiny_detector):
    detector, _ = tiny_detector
    dense = fvcore_gmacs(detector, [_batch(0), _batch(1)])
    assert dense["gmacs"] > 0 and dense["flops_images"] == 2
    # On CPU deformable attention runs through grid_sample, which fvcore counts.
    assert "aten::grid_sampler" not in dense["flops_unsupported_ops"]
    filter_prune(detector, 0.5, (H, W))
    pruned = fvcore_gmacs(detector, [_batch(0)])
    assert pruned["gmacs"] < 0.8 * dense["gmacs"]


def test_weight_pruning_does_not_change_the_dense_flop_count(tiny_detector):
    detector, _ = tiny_detector
    dense = fvcore_gmacs(detector, [_batch(0)])["gmacs"]
    weight_prune(detector, 0.9)
    assert fvcore_gmacs(detector, [_batch(0)])["gmacs"] == pytest.approx(dense)


def test_latency_statistics(tiny_detector):
    detector, _ = tiny_detector
    result = cpu_latency(detector, [_batch(0), _batch(1)], warmup=1, runs=20, threads=1)
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["latency_runs"] == 20
    assert result["latency_device"].startswith("cpu (") and "1 threads" in result["latency_device"]
    assert torch.get_num_threads() >= 1


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
