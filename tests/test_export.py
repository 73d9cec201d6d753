"""ONNX export of a real tiny mmdet Deformable DETR, checked by onnxruntime on real KITTI frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detrprune.evaluate.onnx_export import (
    OUTPUT_NAMES,
    ExportError,
    export_onnx,
    onnx_latency,
    onnx_parity,
)
from detrprune.prune.filters import filter_prune
from detrprune.train.model import inference_batch

from .test_pruning import H, W

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FRAMES = sorted(
    (Path(__file__).parent / "data" / "kitti_sample" / "training" / "image_2").glob("*.png")
)
# Both frame sizes in the sample (1242x375 and 1224x370) resize to 256x77; the recipe's data
# preprocessor pads to a multiple of 1 (none), so the graph's input is 256x77.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def kitti_batches() -> list[dict]:
    """The six real KITTI frames as batch-1 inputs, resized as evaluation does."""
    return [inference_batch([path], (W, H)) for path in FRAMES]


def _export_and_check(detector, batches, path: Path) -> dict:
    export_onnx(detector, batches[0], path)
    parity = onnx_parity(detector, path, batches)
    assert parity["onnx_parity_frames"] == len(batches)
    print(f"\n{path.name}: {parity}")
    assert parity["onnx_max_abs_diff"] < TOLERANCE
    assert parity["onnx_queries_off"] == 0 and parity["onnx_queries"] > 0
    return parity


def test_exported_graph_matches_pytorch_on_real_frames(tiny_detector, kitti_batches, tmp_path):
    detector, _ = tiny_detector
    path = tmp_path / "model.onnx"
    _export_and_check(detector, kitti_batches, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporaries left

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 3, 77, 256]
    assert tuple(o.name for o in model.graph.output) == OUTPUT_NAMES
    # Deformable attention went through mmcv's pure-PyTorch path: standard ONNX ops only.
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("", "GridSample") in ops and {d for d, _ in ops} <= {""}
    props = {p.key: p.value for p in model.metadata_props}
    assert props["detrprune.img_shape"] == "[77, 256]"
    assert props["detrprune.batch_input_shape"] == "[77, 256]"


def test_export_leaves_the_detector_in_eval_mode(tiny_detector, kitti_batches, tmp_path):
    """torch.onnx.export restores the mode of the module it was given: a fresh wrapper's is
    training, which used to leave the detector training (two-stage heads then fail)."""
    detector, _ = tiny_detector
    export_onnx(detector, kitti_batches[0], tmp_path / "model.onnx")
    assert not detector.training
    assert not any(module.training for module in detector.modules())


@pytest.mark.parametrize(
    ("scope", "transformer"),
    [
        ("backbone+residual+ffn", ("encoder", "decoder")),
        ("backbone+residual+ffn+attention", ("encoder", "decoder")),
        ("backbone+points", ("encoder",)),
    ],
)
def test_filter_pruned_detector_exports_and_matches(
    tiny_detector, kitti_batches, tmp_path, scope, transformer
):
    detector, _ = tiny_detector
    dense_path = tmp_path / "dense.onnx"
    export_onnx(detector, kitti_batches[0], dense_path)
    # The widest scopes: residual stream and FFN widths change too, not only inner convs; with
    # +attention deformable attention loses whole heads (fewer GridSample channels), with
    # +points the encoder's sampling points (fewer GridSample locations).
    stats = filter_prune(detector, 0.3, (H, W), scope=scope, transformer=transformer)
    assert stats["params_after"] < stats["params_before"]
    pruned_path = tmp_path / "pruned.onnx"
    _export_and_check(detector, kitti_batches, pruned_path)
    assert pruned_path.stat().st_size < 0.8 * dense_path.stat().st_size


def test_latency_of_onnxruntime_and_of_the_same_pytorch_forward(
    tiny_detector, kitti_batches, tmp_path
):
    detector, _ = tiny_detector
    path = export_onnx(detector, kitti_batches[0], tmp_path / "model.onnx")
    threads_before = torch.get_num_threads()
    result = onnx_latency(detector, path, kitti_batches[:2], warmup=1, runs=5, threads=1)
    print(f"\nlatency: {result}")
    assert 0 < result["onnx_latency_ms_median"] <= result["onnx_latency_ms_p90"]
    assert 0 < result["torch_forward_latency_ms_median"] <= result["torch_forward_latency_ms_p90"]
    assert result["onnx_latency_runs"] == 5
    assert "1 threads" in result["onnx_latency_device"]
    assert torch.get_num_threads() == threads_before


def test_frames_that_do_not_fit_the_graph_are_refused(tiny_detector, kitti_batches, tmp_path):
    detector, _ = tiny_detector
    path = export_onnx(detector, kitti_batches[0], tmp_path / "model.onnx")
    other_scale = inference_batch([FRAMES[1]], (W + 64, H + 32))
    with pytest.raises(ValueError, match=r"input shape \[1, 3, 97, 320\] differs"):
        onnx_parity(detector, path, [other_scale])
    # Same input size, another image size claimed for it: the baked padding mask would be wrong.
    other_image = inference_batch([FRAMES[1]], (W, H))
    other_image["data_samples"][0].set_metainfo({"img_shape": (78, 256)})
    with pytest.raises(ValueError, match=r"img_shape \[78, 256\] differs"):
        onnx_latency(detector, path, [other_image], warmup=0, runs=1, threads=1)


def test_opset_without_grid_sample_names_the_op(tiny_detector, kitti_batches, tmp_path):
    detector, _ = tiny_detector
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="grid_sampler"):
        export_onnx(detector, kitti_batches[0], path, opset=15)
    assert list(tmp_path.iterdir()) == []
