"""mmcv's PyTorch deformable attention (the CPU path) hands ``grid_sample`` contiguous tensors.

What only a GPU can show: nothing here runs mmcv's CUDA kernel, which has no ``grid_sample``.
The speed this buys is measured by ``bench/deformable_sampling.py``, not asserted.
"""

from __future__ import annotations

import torch
import torch.nn.functional


def _attention_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like the demo encoder's: 8 heads of 16 channels, 3 levels, 4 points."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[20, 64], [10, 32], [5, 16]])
    tokens = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(1, tokens, 8, 16, generator=generator)
    locations = torch.rand(1, tokens, 8, 3, 4, 2, generator=generator)
    weights = torch.rand(1, tokens, 8, 3, 4, generator=generator).softmax(-1)
    return value, shapes, locations, weights


def test_grid_sample_gets_contiguous_tensors_and_the_same_result(monkeypatch):
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    from detrprune.train.model import register_mmdet

    register_mmdet()
    calls = []
    sample = torch.nn.functional.grid_sample

    def spy(input, grid, *args, **kwargs):  # noqa: A002 (torch's own parameter name)
        calls.append((input.is_contiguous(), grid.is_contiguous()))
        return sample(input, grid, *args, **kwargs)

    inputs = _attention_inputs()
    monkeypatch.setattr(torch.nn.functional, "grid_sample", spy)
    patched = deform_attn.multi_scale_deformable_attn_pytorch(*inputs)
    assert calls == [(True, True)] * 3  # one call per level
    monkeypatch.setattr(deform_attn, "F", torch.nn.functional)  # mmcv's own, strided tensors
    calls.clear()
    plain = deform_attn.multi_scale_deformable_attn_pytorch(*inputs)
    assert calls == [(False, False)] * 3  # what mmcv 2.1.0 passes
    assert torch.equal(patched, plain)


def test_every_other_functional_is_torchs():
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    from detrprune.train.model import register_mmdet

    register_mmdet()
    register_mmdet()  # idempotent: not wrapped twice
    assert deform_attn.F.relu is torch.nn.functional.relu
    assert deform_attn.F.grid_sample is not torch.nn.functional.grid_sample
