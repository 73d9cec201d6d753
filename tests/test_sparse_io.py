"""The compact sparse checkpoint: bit-exact round trips, size targets, no pickle, bad files."""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from detrprune.prune.sparse_io import (
    HEADER,
    SparseFormatError,
    load_sparse,
    save_sparse,
    size_bound_bytes,
)
from detrprune.prune.weights import weight_prune

_INT_VIEWS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns, so that -0.0 differs from 0.0 and NaN equals itself."""
    return tensor.contiguous().view(_INT_VIEWS[tensor.element_size()])


def _assert_bit_exact(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        got = actual[name]
        assert got.dtype == tensor.dtype, name
        assert got.shape == tensor.shape, name
        assert got.device.type == "cpu" and got.is_contiguous(), name
        assert torch.equal(_bits(got), _bits(tensor)), name


def _pruned_state(detector, ratio: float) -> dict[str, torch.Tensor]:
    weight_prune(detector, ratio, scope="layerwise")
    return {name: tensor.detach().clone() for name, tensor in detector.state_dict().items()}


def _header(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(HEADER))


def _rewrite(path: Path, edit_header=None, drop: str | None = None) -> None:
    """Rewrite the zip at ``path`` with an edited header and/or one member left out."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    header = json.loads(members.pop(HEADER))
    if edit_header is not None:
        edit_header(header)
    members.pop(drop, None)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(HEADER, json.dumps(header))


def test_pruned_detector_round_trips_bit_exactly_and_loads_strictly(tiny_detector, tmp_path):
    detector, _ = tiny_detector
    state = _pruned_state(detector, 0.9)
    path = tmp_path / "pruned.sparse"

    stats = save_sparse(state, path, meta={"method": "weight", "ratio": "90"})
    loaded, meta = load_sparse(path)

    _assert_bit_exact(state, loaded)
    assert meta == {"method": "weight", "ratio": "90"}
    assert stats["tensors"] == len(state) == stats["mask_tensors"] + stats["dense_tensors"]
    assert stats["elements"] == sum(t.numel() for t in state.values())
    assert stats["nonzero"] == sum(int(torch.count_nonzero(_bits(t))) for t in state.values())
    assert stats["bytes"] == path.stat().st_size
    assert stats["mask_tensors"] > 0
    detector.load_state_dict(loaded, strict=True)


def test_every_dtype_and_special_value_round_trips(tmp_path):
    sparse32 = torch.zeros(10, 20)
    sparse32[0, :6] = torch.tensor([-0.0, float("nan"), float("inf"), -float("inf"), 1e-45, -2.5])
    sparse_bf16 = torch.zeros(64, dtype=torch.bfloat16)
    sparse_bf16[[1, 5, 9]] = torch.tensor([-0.0, float("nan"), 3.0], dtype=torch.bfloat16)
    sparse_f16 = torch.zeros(4, 16, dtype=torch.float16)
    sparse_f16[2, 3] = -0.0
    sparse_f16[3, 15] = 65504.0
    sparse_i64 = torch.zeros(50, dtype=torch.int64)
    sparse_i64[[0, 49]] = torch.tensor([-(2**63), 2**63 - 1])
    state = {
        "float32.sparse": sparse32,
        "float16.sparse": sparse_f16,
        "bfloat16.sparse": sparse_bf16,
        "float64.dense": torch.tensor(
            [[-0.0, float("nan")], [float("inf"), 1e-300]], dtype=torch.float64
        ),
        "int64.sparse": sparse_i64,
        "num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "int32.dense": torch.arange(-5, 5, dtype=torch.int32) | 1,
        "uint8.dense": torch.arange(256, dtype=torch.uint8).reshape(16, 16),
        "bool.sparse": torch.arange(100) == 42,
        "bool.dense": torch.tensor([True, False, True]),
        "scalar.negative_zero": torch.tensor(-0.0),
        "scalar.zero": torch.tensor(0.0),
        "empty": torch.zeros(0, 3),
        "all_zero": torch.zeros(3, 5, 7),
        "fully_dense": torch.randn(8, 8),
        "non_contiguous": torch.randn(6, 4).t(),
        "odd/name with../dots\u00e9": torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]),
    }
    path = tmp_path / "all.sparse"

    stats = save_sparse(state, path)
    loaded, meta = load_sparse(path)

    _assert_bit_exact(state, loaded)
    assert meta == {}
    encodings = {entry["name"]: entry["encoding"] for entry in _header(path)["tensors"]}
    expected_mask = {
        "float32.sparse",
        "float16.sparse",
        "bfloat16.sparse",
        "int64.sparse",
        "bool.sparse",
        "scalar.zero",
        "all_zero",
        "odd/name with../dots\u00e9",
    }
    assert {name for name, enc in encodings.items() if enc == "mask"} == expected_mask
    assert encodings["fully_dense"] == "dense"
    assert stats["mask_tensors"] == len(expected_mask)
    assert size_bound_bytes(state) == sum(
        math.ceil(t.numel() / 8) + int(torch.count_nonzero(_bits(t))) * t.element_size()
        if name in expected_mask
        else t.numel() * t.element_size()
        for name, t in state.items()
    )


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_size_is_near_the_bound_and_far_below_torch_save(tiny_detector, tmp_path, ratio):
    detector, _ = tiny_detector
    state = _pruned_state(detector, ratio)
    dense_path, sparse_path = tmp_path / "dense.pth", tmp_path / "model.sparse"
    torch.save(state, dense_path)

    stats = save_sparse(state, sparse_path)
    dense, sparse, bound = dense_path.stat().st_size, stats["bytes"], size_bound_bytes(state)

    print(
        f"\nsparsity {ratio:.0%}: torch.save {dense} B, sparse {sparse} B, bound {bound} B, "
        f"sparse/bound {sparse / bound:.3f}, torch.save/sparse {dense / sparse:.2f}x"
    )
    assert sparse <= 1.1 * bound
    if ratio >= 0.9:
        assert dense >= 6 * sparse


def test_file_is_a_plain_zip_and_loading_never_unpickles(tmp_path, monkeypatch):
    state = {"w": torch.tensor([0.0, -0.0, 1.0, 0.0] * 8), "b": torch.randn(3)}
    path = tmp_path / "plain.sparse"
    save_sparse(state, path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert HEADER in names
    blobs = [name for name in names if name != HEADER]
    assert all(
        name.startswith("t/") and name.endswith((".mask", ".values", ".dense")) for name in blobs
    )
    referenced = {m for entry in _header(path)["tensors"] for m in entry["members"].values()}
    assert referenced == set(blobs)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a sparse checkpoint")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    dense_path = tmp_path / "dense.pth"
    torch.save(state, dense_path)
    with pytest.raises(AssertionError, match="pickle used"):  # the trap does catch torch.load
        torch.load(dense_path, weights_only=False)

    loaded, _ = load_sparse(path)
    _assert_bit_exact(state, loaded)


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "victim.sparse"
    save_sparse({"layer.weight": torch.tensor([0.0] * 30 + [1.5, -2.0]), "x": torch.ones(2)}, path)
    return path


def _corrupt_nnz(header: dict) -> None:
    header["tensors"][0]["nnz"] -= 1


def _corrupt_dtype(header: dict) -> None:
    header["tensors"][0]["dtype"] = "complex64"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        ("truncate", "corrupt zip|not a zip"),
        ("nnz", "'layer.weight'.*2 bits set, header nnz 1"),
        ("dtype", "'layer.weight'.*unknown dtype 'complex64'"),
        ("missing", "'layer.weight'.*missing member 't/000000.values'"),
    ],
)
def test_corrupted_files_raise_sparse_format_error_naming_the_file(tmp_path, corrupt, message):
    path = _saved(tmp_path)
    if corrupt == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif corrupt == "nnz":
        _rewrite(path, edit_header=_corrupt_nnz)
    elif corrupt == "dtype":
        _rewrite(path, edit_header=_corrupt_dtype)
    else:
        _rewrite(path, drop="t/000000.values")

    with pytest.raises(SparseFormatError, match=message) as caught:
        load_sparse(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


def test_failed_save_leaves_neither_file_nor_tmp(tmp_path):
    path = tmp_path / "out.sparse"
    state = {
        "ok": torch.zeros(100),
        "bad": torch.zeros(4, dtype=torch.complex64),
        "after": torch.ones(3),
    }

    with pytest.raises(SparseFormatError, match="'bad'.*unsupported dtype"):
        save_sparse(state, path)
    assert list(tmp_path.iterdir()) == []

    # An existing checkpoint survives a failed overwrite untouched.
    save_sparse({"ok": torch.zeros(100)}, path)
    before = path.read_bytes()
    with pytest.raises(SparseFormatError):
        save_sparse(state, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sparse"]
