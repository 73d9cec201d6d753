"""The full study's config (configs/kitti.yaml) run through the real DAG at full size.

Deformable DETR R50 (mmdet's two-stage refine recipe, 6+6 layers, 300 queries) on the six real
KITTI frames in tests/data, packed into the official archives' layout, starting from a model-zoo
layout detector file (downloaded by URL from a server on 127.0.0.1 and checked against the sha256
prefix in its name, as the model zoo's is) with the recipe's frozen stem and layer1: 1-2
iterations per training step, every filter and weight scope pruned and reloaded, a filter- and a
weight-pruned model fine-tuned, two evaluations, a 2-step iterative loop and one ONNX export.

On a CUDA machine (``make gpu-smoke``) the same study runs on the GPU and the ``gpu`` tests check
what only a GPU can show: mmcv's CUDA deformable-attention kernel ran (its PyTorch path, where
mmcv was built without CUDA ops), a weight-pruned model fine-tuned on the GPU kept its zeros,
and GPU latency was recorded. Without a GPU they skip,
unless ``DETRPRUNE_REQUIRE_GPU=1`` (set by ``make gpu-smoke``) turns the skip into a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from detrprune.prune.weights import layer_role, prunable_weights, weight_part
from detrprune.train.checkpoint import load_detector, read_checkpoint

from .conftest import REPO, run_snakemake
from .http_server import serve
from .test_evaluation import expected_gpu_deformable_attention
from .test_full_config import save_model_zoo_detector
from .test_kitti_source import kitti_archives

pytestmark = [pytest.mark.slow, pytest.mark.fullsize]

FILTER_SCOPES = {
    "filter": "backbone",
    "filter_ffn": "backbone+ffn",
    "filter_all": "backbone+residual+ffn",
    "filter_attention": "backbone+ffn+attention:encoder",
    "filter_points": "backbone+points:encoder:points50",
}
WEIGHT_METHODS = {
    "weight": 90,
    "weight_global": 50,
    "weight_backbone": 50,
    "weight_2to4": 50,
    "weight_2to4_transformer": 50,
}
# The Linears each 2:4 method prunes in the R50 model's 6 + 6 layers: the encoder's FFNs (2 a
# layer); every Linear of both stacks but the sampling offsets (the decoder self-attention's
# in_proj is a bare parameter, no Linear).
NM_LINEARS = {"weight_2to4": 12, "weight_2to4_transformer": 6 * 5 + 6 * 6}
# The +attention target fine-tunes and exports a model pruned in backbone, FFNs and heads; the
# iterative loop fine-tunes the residual stream's pruning.
FINETUNED = ["finetune/filter_attention/r50", "finetune/weight/r90"]
EVALUATED = ["baseline", "finetune/weight/r90"]
EXPORTED = "finetune/filter_attention/r50"


def micro_overrides(workdir: Path, detector_url: str) -> dict:
    """configs/kitti.yaml cut to minutes on 2 CPU cores: what a user would pass as a second
    ``--configfile`` for a smoke run. Sizes and the recipe stay; schedules and repeats shrink."""
    return {
        # Two of the six frames for validation: every validation pass costs one full-size
        # inference per frame, and the loop validates before and after each step.
        "dataset": {"val_fraction": 0.34},
        "kitti": {"archives_dir": str(workdir / "archives"), "split": "random"},
        "model": {"init": {"detector": detector_url}},
        "train": {
            "max_iters": 2,
            "warmup_iters": 1,
            "checkpoint_interval": 1,
            "log_interval": 1,
            "num_workers": 0,
            "threads": 2,
        },
        "pruning": {
            "methods": {
                **{name: {"ratios": [50]} for name in FILTER_SCOPES},
                **{name: {"ratios": [ratio]} for name, ratio in WEIGHT_METHODS.items()},
            },
            "finetune": {"iters": 2, "warmup_iters": 1},
            "iterative": {"steps": 2, "finetune_iters": 1, "max_map_drop": 1.0},
        },
        "evaluate": {
            "threads": 2,
            "latency": {"warmup": 1, "runs": 5, "rounds": 2, "images": 1},
            "flops_images": 1,
            "onnx": {"frames": 1},
        },
    }


def targets() -> list[str]:
    pruned = [f"prune/{m}/r50" for m in FILTER_SCOPES] + [
        f"prune/{m}/r{r}" for m, r in WEIGHT_METHODS.items()
    ]
    return [
        *(f"results/{v}/model.pth" for v in pruned + FINETUNED),
        *(f"results/eval/{v}/metrics.json" for v in EVALUATED),
        "results/iterative/model.pth",
        f"results/onnx/{EXPORTED}/onnx.json",
    ]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("full_study")
    (workdir / "archives").mkdir()
    for name, content in kitti_archives().items():
        (workdir / "archives" / name.lstrip("/")).write_bytes(content)
    save_model_zoo_detector(workdir / "zoo.pth")
    content = (workdir / "zoo.pth").read_bytes()
    name = f"deformable-detr-zoo-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    with serve({f"/{name}": content}) as server:
        overrides = micro_overrides(workdir, server.url(f"/{name}"))
        (workdir / "micro.yaml").write_text(yaml.safe_dump(overrides))
        run = run_snakemake(
            workdir,
            *targets(),
            "--cores",
            "2",
            "--configfile",
            str(REPO / "configs" / "kitti.yaml"),
            str(workdir / "micro.yaml"),
            timeout=2400,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert (workdir / "checkpoints" / name).read_bytes() == content
    return workdir


def metrics(study: Path, variant: str) -> dict:
    return json.loads((study / "results" / "eval" / variant / "metrics.json").read_text())


def test_baseline_starts_from_the_zoo_file_and_keeps_the_frozen_stages(study):
    trained, model_cfg, meta = read_checkpoint(study / "results" / "baseline" / "model.pth")
    zoo = torch.load(study / "zoo.pth", weights_only=True)["state_dict"]
    assert model_cfg["backbone"]["depth"] == 50 and model_cfg["bbox_head"]["num_classes"] == 3
    assert meta["iterations"] == 2
    # frozen_stages 1: the stem and layer1 are the zoo file's; later stages trained.
    frozen = [
        k for k in zoo if k.startswith(("backbone.conv1.", "backbone.bn1.", "backbone.layer1."))
    ]
    assert frozen and all(torch.equal(trained[k], zoo[k]) for k in frozen)
    # (Bottlenecks start with zero residual gammas, so in a random file the downsample path is
    # what trains in the backbone.)
    later = [
        k for k in zoo if k.startswith(("backbone.layer2.", "backbone.layer3.", "backbone.layer4."))
    ]
    assert any(not torch.equal(trained[k], zoo[k]) for k in later)
    # The resolved mmengine config beside it is the recipe's, rescaled to KITTI.
    from mmengine.config import Config

    resolved = Config.fromfile(study / "results" / "baseline" / "config.py")
    assert tuple(resolved.test_pipeline[1]["scale"]) == (1242, 375)
    assert "RandomChoice" in [step["type"] for step in resolved.train_pipeline]
    assert resolved.auto_scale_lr == {"enable": True, "base_batch_size": 32}


def test_every_scope_is_pruned_and_reloads(study):
    baseline, _, _ = load_detector(study / "results" / "baseline" / "model.pth")
    baseline_params = sum(p.numel() for p in baseline.parameters())
    for method, scope in FILTER_SCOPES.items():
        model, _, meta = load_detector(study / "results" / "prune" / method / "r50" / "model.pth")
        assert meta["scope"] == scope and meta["kind"] == "filter"
        assert sum(p.numel() for p in model.parameters()) < 0.85 * baseline_params, method
    for method, ratio in WEIGHT_METHODS.items():
        model, _, meta = load_detector(
            study / "results" / "prune" / method / f"r{ratio}" / "model.pth"
        )
        assert meta["kind"] == "weight"
        if method in NM_LINEARS:
            # Every chosen Linear keeps at most 2 of every 4 inputs.
            linears = [
                module
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear)
                and weight_part(f"{name}.weight") in meta["pruning"]["modules"]
                and layer_role(name) in meta["pruning"]["layers"]
            ]
            assert len(linears) == meta["pruning"]["nm_layers"] == NM_LINEARS[method], method
            for linear in linears:
                kept = (linear.weight != 0).reshape(linear.out_features, -1, 4).sum(-1)
                assert int(kept.max()) <= 2
            assert meta["pruning"]["sparsity"] >= 0.5
            continue
        assert meta["pruning"]["sparsity"] == pytest.approx(ratio / 100, abs=0.01), method


def test_weight_pruned_finetune_keeps_every_zero_frozen_stages_included(study):
    """The crash of the first full-size run: frozen pruned weights got a gradient hook."""
    pruned, _, _ = load_detector(study / "results" / "prune" / "weight" / "r90" / "model.pth")
    tuned, _, meta = load_detector(study / "results" / "finetune" / "weight" / "r90" / "model.pth")
    assert meta["finetuned"] is True
    moved = []
    for (name, module, param), (_, tuned_module, _) in zip(
        prunable_weights(pruned), prunable_weights(tuned), strict=True
    ):
        zeros = getattr(module, param) == 0
        if bool((getattr(tuned_module, param)[zeros] != 0).any()):
            moved.append(name)
    assert moved == []
    stem = pruned.backbone.conv1.weight
    assert bool((stem == 0).any()) and torch.equal(tuned.backbone.conv1.weight, stem)


def test_evaluations_measure_the_full_size_model(study):
    baseline, weight90 = (metrics(study, v) for v in EVALUATED)
    # R50 two-stage refine at 1242x375: ~96 GMACs, ~41 M parameters (DESIGN.md §6).
    assert 90 < baseline["gmacs"] < 100 and 39e6 < baseline["params_total"] < 42e6
    assert baseline["gmacs_encoder"] > baseline["gmacs_backbone"]
    assert weight90["params_total"] == baseline["params_total"]
    assert weight90["params_nonzero"] < 0.2 * baseline["params_nonzero"]
    assert weight90["sparse_mb"] < 0.4 * weight90["checkpoint_mb"]
    for record in (baseline, weight90):
        assert 0 <= record["mAP"] <= 1


@pytest.fixture(scope="module")
def timed(study) -> dict:
    """The time_models job on the evaluated full-size models (the full config's rule would
    time all 60): one untimed run each, then two rounds of one run."""
    from detrprune.evaluate.latency import Schedule, time_models

    return time_models(
        {variant: study / "results" / variant / "model.pth" for variant in EVALUATED},
        val_json=study / "data" / "coco" / "val.json",
        data_root=study / "data" / "kitti",
        input_scale=(1242, 375),
        threads=2,
        schedule=Schedule(rounds=2, runs_per_round=1, warmup=1, switch_warmup=0),
        images=1,
        baseline=EVALUATED[0],
    )


def test_the_full_size_models_are_timed_interleaved(timed):
    assert set(timed["models"]) == set(EVALUATED)
    for variant, entry in timed["models"].items():
        assert entry["latency_ms_median"] > 0 and len(entry["round_medians_ms"]) == 2, variant
        assert ("gpu_latency_ms_median" in entry) == torch.cuda.is_available()
    assert timed["models"][EVALUATED[0]]["speedup"] == 1.0


def test_iterative_loop_runs_two_steps(study):
    steps = pd.read_csv(study / "results" / "iterative" / "steps.csv")
    assert list(steps["step"]) == [1, 2]
    assert steps["gmacs"].iloc[1] < steps["gmacs"].iloc[0] < 96.5
    _, _, meta = load_detector(study / "results" / "iterative" / "model.pth")
    assert meta["iterative_step"] == 2 and meta["scope"] == "backbone+residual+ffn"


def test_onnx_export_matches_pytorch(study):
    record = json.loads((study / "results" / "onnx" / EXPORTED / "onnx.json").read_text())
    assert record["variant"] == EXPORTED
    assert record["onnx_parity_frames"] == 1 and record["onnx_queries"] == 300
    # This barely trained model scores many proposals alike: a near-tie at the top-300 boundary
    # can make onnxruntime's TopK pick another proposal than torch's, and that query and those
    # attending to it differ. How many depends on the CPU's float kernels: 2 off by 0.08 on one
    # machine, 4 off by 0.19 on another (the same count before and after the safety fixes of
    # issue 35). A graph that computes otherwise is off throughout, hundreds of queries.
    assert record["onnx_queries_off"] <= 0.05 * record["onnx_queries"], record


# --- What only a GPU shows (make gpu-smoke) ------------------------------------------------

REQUIRE_GPU = os.environ.get("DETRPRUNE_REQUIRE_GPU") == "1"


@pytest.fixture
def gpu():
    if not torch.cuda.is_available():
        if REQUIRE_GPU:
            pytest.fail("DETRPRUNE_REQUIRE_GPU=1 but torch sees no CUDA device")
        pytest.skip("no CUDA device: the GPU checks run with `make gpu-smoke` on a GPU machine")


@pytest.mark.gpu
def test_gpu_timing_ran_the_deformable_attention_mmcv_was_built_with(timed, gpu):
    for variant in EVALUATED:
        entry = timed["models"][variant]
        assert entry["gpu_latency_ms_median"] > 0
        assert entry["gpu_deformable_attention"] == expected_gpu_deformable_attention(), variant


@pytest.mark.gpu
def test_gpu_finetune_ran_on_cuda(study, gpu):
    for variant in ["baseline", *FINETUNED]:
        _, _, meta = read_checkpoint(study / "results" / variant / "model.pth")
        assert meta["train_device"].startswith("cuda"), variant


def test_the_gpu_smoke_target_runs_this_module():
    """`make gpu-smoke` is this module on a CUDA machine, the GPU checks required."""
    dry = subprocess.run(
        ["make", "-n", "-B", "gpu-smoke"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "DETRPRUNE_REQUIRE_GPU=1" in dry.stdout and "tests/test_full_study.py" in dry.stdout
