"""2:4 semi-structured sparsity: finding N:M Linears, magnitude 2:4, and the GPU timing's
contract where it cannot run.

On this CPU the N:M detection, the magnitude rule (against a brute-force reference), the shape
limits, the skip record (every timing key None, the reason naming CUDA), its way into
``evaluate_checkpoint`` and the summary CSV, and the bench command are checked for real.

What only a GPU with sparse tensor cores (compute capability >= 8.0) can show, in the ``gpu``
tests (``make gpu-smoke``; they skip without CUDA unless ``DETRPRUNE_REQUIRE_GPU=1``): that
torch's compressed 2:4 weight gives the dense fp16 product within fp16 rounding, that the
detector runs end to end with sparse weights under autocast (mmcv's CUDA deformable attention
in fp16 included), and that the timings are real positive numbers. Whether 2:4 is *faster*
is a measurement (bench/semi_structured.py), not asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from detrprune.evaluate.semi_structured import (
    TIMING_KEYS,
    follows_nm,
    group_layer_speedups,
    layer_kind,
    nm_sparse_linears,
    semi_structured_unsupported_reason,
    shape_unsupported_reason,
    time_semi_structured,
)
from detrprune.prune.weights import nm_prune, weight_prune
from detrprune.train.model import synthetic_batch

from .conftest import REPO
from .test_evaluation import evaluate_on_the_sample_frames

H, W = 96, 256  # the micro model's input (tests/conftest.py micro_config)
UNSUPPORTED = semi_structured_unsupported_reason()
REQUIRE_GPU = os.environ.get("DETRPRUNE_REQUIRE_GPU") == "1"


@pytest.fixture
def gpu():
    """Skip without 2:4 kernels; without any CUDA device fail when a GPU run is required."""
    if UNSUPPORTED is not None:
        if REQUIRE_GPU and not torch.cuda.is_available():
            pytest.fail("DETRPRUNE_REQUIRE_GPU=1 but torch sees no CUDA device")
        pytest.skip(f"2:4 kernels cannot run here ({UNSUPPORTED}): make gpu-smoke on a GPU")


def apply_nm_magnitude(linear: nn.Linear, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M by magnitude on one Linear (the workflow's pruning); returns what it kept."""
    nm_prune(linear, ["weight"], n, m)
    return linear.weight != 0


def test_apply_nm_magnitude_zeroes_in_place_what_the_mask_drops():
    """The choice itself is tested against a brute force in test_nm_sparsity.py."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    original = linear.weight.detach().clone()
    mask = apply_nm_magnitude(linear)
    assert torch.equal(linear.weight, original * mask)
    assert follows_nm(linear.weight) and not follows_nm(original)


def test_apply_nm_magnitude_refuses_a_width_that_is_not_a_multiple_of_m():
    with pytest.raises(ValueError, match="not a whole number of groups of 4"):
        apply_nm_magnitude(nn.Linear(6, 8))
    with pytest.raises(ValueError, match="0 < N < M"):
        apply_nm_magnitude(nn.Linear(8, 8), 5, 4)


def test_nm_sparse_linears_finds_exactly_the_2to4_layers():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "pruned": nn.Linear(16, 32),
            "dense": nn.Linear(32, 32),
            # At most 2 nonzeros in every 4 of its first inputs, but 6 inputs are no 4-groups.
            "odd_width": nn.Linear(6, 8),
            "all_zero": nn.Linear(16, 16),
            "three_of_four": nn.Linear(16, 16),
            "block": nn.Sequential(nn.ReLU(), nn.Linear(32, 8), nn.Conv2d(4, 4, 1)),
        }
    )
    with torch.no_grad():
        apply_nm_magnitude(model["pruned"])
        model["odd_width"].weight[:, :4] = 0
        model["all_zero"].weight.zero_()
        apply_nm_magnitude(model["three_of_four"], 3, 4)
        apply_nm_magnitude(model["block"][1], 1, 4)  # 1:4 is at most 2 of 4 as well
    found = [name for name, _ in nm_sparse_linears(model)]
    assert found == ["pruned", "block.1"]
    assert [name for name, _ in nm_sparse_linears(model, 1, 4)] == ["block.1"]
    assert [name for name, _ in nm_sparse_linears(model, 3, 4)] == [
        "pruned",
        "three_of_four",
        "block.1",
    ]


def test_nm_sparse_linears_on_the_detector(tiny_detector):
    """A freshly initialised detector has no 2:4 layer (mmcv's all-zero sampling_offsets and
    attention_weights do not count); after 2:4 on the encoder, exactly those layers are."""
    detector, _ = tiny_detector
    assert nm_sparse_linears(detector) == []
    expected = []
    for name, module in detector.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder.") and module.weight.any():
            apply_nm_magnitude(module)
            expected.append(name)
    assert expected and [name for name, _ in nm_sparse_linears(detector)] == expected
    assert {layer_kind(name) for name in expected} == {"encoder attention", "encoder ffn"}


def test_the_per_layer_inputs_are_captured_from_a_real_forward(tiny_detector):
    """The per-layer timing's input shapes come from one test_step: the encoder's Linears see
    every token, the decoder's FFN only the queries; nn.MultiheadAttention uses its out_proj's
    weight without calling the module, so that layer has no input of its own."""
    from detrprune.evaluate.semi_structured import _capture_inputs

    detector, _ = tiny_detector
    names = [n for n, module in detector.named_modules() if isinstance(module, nn.Linear)]
    with torch.no_grad():
        captured = _capture_inputs(
            detector, names, lambda: detector.test_step(synthetic_batch((H, W)))
        )
    encoder_ffn = captured["encoder.layers.0.ffn.layers.0.0"].shape
    decoder_ffn = captured["decoder.layers.0.ffn.layers.0.0"].shape
    assert encoder_ffn[-1] == decoder_ffn[-1] == 32  # embed_dims of the micro model
    assert decoder_ffn[1] == 10 < encoder_ffn[1]  # 10 queries, many more tokens
    assert "decoder.layers.0.self_attn.attn.out_proj" not in captured
    assert set(captured) == set(names) - {"decoder.layers.0.self_attn.attn.out_proj"}


def test_layer_kinds_and_grouped_speedups():
    speedups = {
        "encoder.layers.0.self_attn.value_proj": 1.2,
        "encoder.layers.1.self_attn.sampling_offsets": 1.0,
        "encoder.layers.0.ffn.layers.0.0": 1.5,
        "decoder.layers.0.self_attn.attn.out_proj": 0.9,
        "decoder.layers.0.ffn.layers.1": 1.1,
        "bbox_head.reg_branches.0.0": 0.8,
        "memory_trans_fc": 1.3,
    }
    assert group_layer_speedups(speedups) == {
        "decoder attention": {"layers": 1, "median": 0.9, "min": 0.9, "max": 0.9},
        "decoder ffn": {"layers": 1, "median": 1.1, "min": 1.1, "max": 1.1},
        "encoder attention": {"layers": 2, "median": 1.1, "min": 1.0, "max": 1.2},
        "encoder ffn": {"layers": 1, "median": 1.5, "min": 1.5, "max": 1.5},
        "head": {"layers": 1, "median": 0.8, "min": 0.8, "max": 0.8},
        "other": {"layers": 1, "median": 1.3, "min": 1.3, "max": 1.3},
    }


def test_shape_limits_of_both_backends():
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    for backend in (SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS):
        assert shape_unsupported_reason((128, 128), backend) is None
        # The 3-class head's weight is too narrow for either kernel.
        assert "not a nonzero multiple" in shape_unsupported_reason((3, 128), backend)
    assert shape_unsupported_reason((16, 48), SparseSemiStructuredTensorCUSPARSELT) is None
    assert "(32, 64) (cutlass fp16)" in shape_unsupported_reason(
        (32, 48), SparseSemiStructuredTensorCUTLASS
    )


@pytest.mark.skipif(UNSUPPORTED is None, reason="this machine runs 2:4 kernels")
def test_without_2to4_kernels_the_timing_keys_are_none_with_a_one_line_reason(
    tiny_detector, caplog
):
    detector, _ = tiny_detector
    for name, module in detector.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder.") and module.weight.any():
            apply_nm_magnitude(module)
    assert isinstance(UNSUPPORTED, str) and "\n" not in UNSUPPORTED
    if not torch.cuda.is_available():
        assert "CUDA" in UNSUPPORTED
    with caplog.at_level("INFO", logger="detrprune.evaluate.semi_structured"):
        result = time_semi_structured(detector, [synthetic_batch((H, W))], warmup=1, runs=2)
    assert set(result) == {*TIMING_KEYS, "gpu_2to4_skipped_reason"}
    assert all(result[key] is None for key in TIMING_KEYS)
    assert result["gpu_2to4_skipped_reason"] == UNSUPPORTED
    logged = [r.getMessage() for r in caplog.records if r.name.endswith("semi_structured")]
    assert logged == [f"2:4 GPU timing skipped: {UNSUPPORTED}"]


def test_evaluate_checkpoint_records_2to4_and_the_summary_reads_it(tiny_detector, tmp_path):
    """A model with 2:4 Linears gets the 2:4 keys in metrics.json (timings None and the reason
    without the kernels), and results/summary.csv gets the scalar ones."""
    from detrprune.report.summary import aggregate
    from detrprune.train.checkpoint import save_detector

    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(
        detector, baseline, cfg, {"variant": "baseline", "method": "baseline", "ratio": 0}
    )
    stats = weight_prune(detector, 0.5, "2:4")  # as the prune rule does: the meta says 2:4
    checkpoint = tmp_path / "model.pth"
    meta = {"variant": "prune/nm/r50", "method": "nm", "kind": "weight", "ratio": 50}
    meta["pruning"] = stats
    # mmcv initialises attention_weights to zero: an all-zero layer is not counted as 2:4.
    empty = sum(
        1
        for name, module in detector.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith(("encoder.", "decoder."))
        and "sampling_offsets" not in name
        and not module.weight.any()
    )
    pruned = stats["nm_layers"] - empty
    save_detector(detector, checkpoint, cfg, meta)
    record = evaluate_on_the_sample_frames(checkpoint, baseline, tmp_path)
    assert record["linears_2to4"] == pruned
    assert {*TIMING_KEYS, "gpu_2to4_skipped_reason"} <= set(record)
    if UNSUPPORTED is not None:
        assert record["gpu_speedup_2to4"] is None
        assert record["gpu_2to4_skipped_reason"] == UNSUPPORTED
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(record))
    # Latency comes from the time_models rule's record, not from the evaluation.
    latency = tmp_path / "latency.json"
    timed = {"latency_ms_median": 50.0, "latency_ms_p90": 55.0, "latency_device": "cpu"}
    latency.write_text(json.dumps({"models": {record["variant"]: timed}}))
    summary = aggregate([metrics], tmp_path / "summary.csv", latency_path=latency).iloc[0]
    assert summary["linears_2to4"] == pruned
    assert "gpu_layer_speedup_2to4" not in summary  # a dict: metrics.json only
    if UNSUPPORTED is not None:
        assert math.isnan(summary["gpu_speedup_2to4"])
        assert summary["gpu_2to4_skipped_reason"] == UNSUPPORTED
    else:
        assert summary["gpu_speedup_2to4"] > 0


@pytest.mark.parametrize(
    ("choice", "linears"),
    [
        # 2 encoder + 2 decoder layers: 6 + 7 Linears each (the decoder's self-attention
        # out_proj), less the 4 sampling_offsets, which the 2:4 scope leaves dense.
        ([], 22),
        # The demo's weight_2to4: the encoder's FFNs, two Linears a layer.
        (["--modules", "encoder", "--layers", "ffn"], 4),
    ],
)
def test_the_bench_writes_its_record(tmp_path, choice, linears):
    """bench/semi_structured.py end to end at the demo size (~10 s on 2 cores without a GPU,
    most of it importing mmdet and building the detector)."""
    out = tmp_path / "semi_structured.json"
    env = {k: v for k, v in os.environ.items() if k != "DETRPRUNE_REQUIRE_GPU"}
    run = subprocess.run(
        [sys.executable, "bench/semi_structured.py", "--out", str(out), *choice]
        + ["--warmup", "1", "--runs", "2", "--layer-runs", "2", "--layer-repeats", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["linears_2to4"] == len(record["pruned_2to4"]) == linears
    assert not any("sampling_offsets" in name for name in record["pruned_2to4"])
    assert "| model |" in run.stdout
    if UNSUPPORTED is not None:
        assert record["gpu_2to4_skipped_reason"] == UNSUPPORTED
        assert f"2:4 GPU timing skipped: {UNSUPPORTED}" in run.stdout
        assert record["gpu_speedup_2to4"] is None
    else:
        assert record["gpu_speedup_2to4"] > 0 and record["gpu_layer_speedup_2to4"]


# --- What only a GPU shows (make gpu-smoke) ------------------------------------------------


@pytest.mark.gpu
def test_gpu_sparse_linear_matches_dense_fp16(gpu):
    from detrprune.evaluate.semi_structured import to_semi_structured

    torch.manual_seed(0)
    linear = nn.Linear(256, 512).half().cuda()
    apply_nm_magnitude(linear)
    x = torch.randn(4, 300, 256, dtype=torch.float16, device="cuda")
    with torch.no_grad():
        dense = linear(x)
        linear.weight = nn.Parameter(to_semi_structured(linear.weight), requires_grad=False)
        sparse = linear(x)
    assert sparse.shape == dense.shape
    torch.testing.assert_close(sparse, dense, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
def test_gpu_time_semi_structured_measures_the_detector(tiny_detector, gpu):
    detector, _ = tiny_detector
    for name, module in detector.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(("encoder.", "decoder.")):
            with torch.no_grad():
                module.weight.add_(0.01)
            apply_nm_magnitude(module)
    batches = [synthetic_batch((H, W), seed=i) for i in range(2)]
    result = time_semi_structured(detector, batches, warmup=2, runs=5, layer_runs=3)
    assert result["gpu_2to4_skipped_reason"] is None, result["gpu_2to4_skipped_reason"]
    assert result["gpu_latency_ms_median_2to4"] > 0
    assert result["gpu_latency_ms_median_dense_fp16"] > 0
    assert result["gpu_speedup_2to4"] > 0
    assert result["gpu_2to4_layers_converted"] > 0
    # Every converted Linear called as a module has its own speedup and its exact product.
    assert result["gpu_layer_speedup_2to4"]
    assert all(v > 0 for v in result["gpu_layer_speedup_2to4"].values())
    assert result["gpu_2to4_max_rel_err"] < 1e-2
    assert next(detector.parameters()).dtype == torch.float32  # the model itself is untouched
