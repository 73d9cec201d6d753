"""The full study's config (configs/kitti.yaml): the real-size model and its DAG."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.config import resolve_config, validate_config
from detrprune.train.model import (
    build_detector,
    build_training_config,
    inference_batch,
    load_recipe,
    model_config,
)
from detrprune.train.pretrained_files import local_path

from .conftest import REPO, default_config, planned_jobs, run_snakemake

SAMPLE_IMAGES = REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2"


FULL = REPO / "configs" / "kitti.yaml"


def full_config() -> dict:
    """config.yaml with configs/kitti.yaml over it, resolved as the Snakefile resolves
    `--configfile configs/kitti.yaml` (:func:`detrprune.config.resolve_config`)."""
    return resolve_config(REPO / "config.yaml", [FULL])


COCO_CLASSES = 80


def save_model_zoo_detector(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised full-size 80-class detector in the model zoo's file layout
    (``{"meta", "state_dict"}``), as mmdet publishes the recipe's COCO checkpoint; returns its
    state dict."""
    torch.manual_seed(seed)
    coco = build_detector(model_config(full_config()["model"], num_classes=COCO_CLASSES))
    coco.init_weights()
    state = coco.state_dict()
    meta = {"mmengine_version": "0.10.7", "epoch": 50, "dataset_meta": {"classes": ["x"] * 80}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": state}, path)
    return state


def place_init_files(workdir: Path) -> list[Path]:
    """Stand-ins for the pretrained files the full config names, where download_weights would
    put them (a dry run does not read them; the real files are the model zoo's, which cannot
    be downloaded here)."""
    init = full_config()["model"]["init"]
    paths = [workdir / local_path(init[key]) for key in ("backbone", "detector") if init[key]]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return paths


def test_full_config_is_valid(tmp_path, monkeypatch):
    config = full_config()
    monkeypatch.chdir(tmp_path)
    place_init_files(tmp_path)
    validate_config(config)
    assert config["dataset"]["source"] == "kitti" and config["kitti"]["split"] == "standard"


@pytest.mark.slow
def test_full_model_runs_on_a_real_kitti_frame():
    config = full_config()["model"]
    torch.manual_seed(0)
    detector = build_detector(model_config(config))
    detector.init_weights()
    detector.eval()
    params = sum(p.numel() for p in detector.parameters())
    assert 39e6 < params < 42e6  # ResNet-50 Deformable DETR, two-stage with box refinement
    batch = inference_batch([SAMPLE_IMAGES / "000001.png"], tuple(config["input_scale"]))
    assert tuple(batch["inputs"][0].shape) == (3, 375, 1242)
    with torch.no_grad():
        result = detector.test_step(batch)[0]
    assert result.ori_shape == (375, 1242)
    boxes = result.pred_instances.bboxes
    assert boxes.shape == (config["max_per_img"], 4) and torch.isfinite(boxes).all()


def _dry_run(
    workdir: Path, *extra: str, init_files: bool = True, default: dict | None = None
) -> subprocess.CompletedProcess:
    """A dry run of the full study in ``workdir``, on config.yaml or ``default`` in its place."""
    if default is None:
        shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    else:
        (workdir / "config.yaml").write_text(yaml.safe_dump(default))
    if init_files:
        place_init_files(workdir)
    # The target goes before --configfile/--config: both take several values.
    return run_snakemake(
        workdir,
        "results/report.pdf",
        "-n",
        "--configfile",
        str(REPO / "configs" / "kitti.yaml"),
        *extra,
        timeout=300,
    )


def cost_table_jobs() -> dict[str, int]:
    """{rule: jobs} of docs/real-study.md's cost table ("`a`, `b` | 1 + 1" gives both), and
    its total under "total"."""
    text = (REPO / "docs" / "real-study.md").read_text()
    section = text.split("## What it costs", 1)[1].split("\n## ", 1)[0]
    jobs = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"\d+( \+ \d+)*", cells[1]):
            continue
        rules = re.findall(r"`(\w+)`", cells[0]) or ["total"]
        counts = [int(n) for n in cells[1].split(" + ")]
        assert len(rules) == len(counts), line
        jobs.update(zip(rules, counts, strict=True))
    return jobs


def test_full_study_dag_lists_every_job(tmp_path):
    """What a fresh clone's dry run plans, with no file in place: the downloads too; and what
    the cost table in docs/real-study.md counts."""
    run = _dry_run(tmp_path, init_files=False)
    assert run.returncode == 0, run.stderr[-3000:]
    planned = planned_jobs(run)
    assert cost_table_jobs() == {**planned, "total": sum(planned.values())}
    assert planned == {
        "download_kitti": 2,
        "download_weights": 1,  # the model zoo's COCO detector (model.init.detector)
        "extract_kitti": 1,
        "kitti_to_coco": 1,
        "train_baseline": 1,
        # filter 5 + filter_random 2 + filter_taylor 5 + filter_ffn 5 + filter_all 1
        # + filter_attention 1 + filter_points 1 + weight 9 + weight_global 1
        # + weight_backbone 1 + weight_2to4 1 + weight_2to4_transformer 1 ratios
        "prune": 33,
        "finetune": 33,
        "iterative": 1,
        # The controls of equal training: the baseline fine-tuned as the fine-tunes and as
        # the iterative loop were.
        "finetune_baseline": 1,
        "iterative_control": 1,
        "evaluate": 70,  # baseline + 2 controls + 33 zero-shot + 33 fine-tuned + iterative
        "time_models": 1,  # the same 70 models, timed in one process
        "export_onnx": 13,  # the final model of each of the 12 methods + iterative
        "aggregate": 1,
        "report": 1,
    }


def test_the_full_study_runs_exactly_the_methods_kitti_yaml_lists():
    """kitti.yaml's methods, whole: no method of config.yaml's, nor a key of one, merges in."""
    listed = yaml.safe_load(FULL.read_text())["pruning"]["methods"]
    assert full_config()["pruning"]["methods"] == listed
    demo = default_config()["pruning"]["methods"]
    # The demo's filter_points removes 3 of 4 points and says which stacks; the full study
    # states its own.
    assert listed["filter_points"]["part_ratios"] != demo["filter_points"]["part_ratios"]
    assert listed["filter_points"]["transformer"] == ["encoder"]


def test_a_demo_only_method_does_not_reach_the_full_study(tmp_path):
    default = default_config()
    default["pruning"]["methods"]["demo_only"] = {
        "kind": "filter",
        "scope": "backbone",
        "ratios": [30],
    }
    default["pruning"]["methods"]["filter"]["round_to"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default))
    methods = resolve_config(tmp_path / "config.yaml", [FULL])["pruning"]["methods"]
    assert "demo_only" not in methods and "round_to" not in methods["filter"]
    # Through Snakemake: the same 33 targets as on the shipped config.yaml.
    run = _dry_run(tmp_path, default=default)
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run)["prune"] == 33
    assert "prune/demo_only/" not in run.stdout + run.stderr


def test_a_changed_val_fraction_under_the_standard_split_is_refused(tmp_path):
    """The standard split ignores dataset.val_fraction: changing it would do nothing, so a
    config file that changes it stops the run with one line naming the file and key."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"dataset": {"val_fraction": 0.3}}))
    run = _dry_run(tmp_path, str(override))
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "Invalid configuration" in line]
    assert lines == [
        # The file as named relative to the working directory (-d), where it is.
        "Invalid configuration: override.yaml: dataset.val_fraction: 0.3 has no effect with "
        "kitti.split standard (the standard frame lists decide the split): remove it, or set "
        "kitti.split: random"
    ]
    # With the random split it is what decides the split.
    override.write_text(
        yaml.safe_dump({"dataset": {"val_fraction": 0.3}, "kitti": {"split": "random"}})
    )
    run = _dry_run(tmp_path, str(override))
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_missing_local_pretrained_file_stops_the_run_at_start_up(tmp_path):
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"model": {"init": {"detector": "zoo/missing.pth"}}}))
    run = _dry_run(tmp_path, str(override), init_files=False)
    assert run.returncode != 0
    assert (
        "Invalid configuration: config: model.init.detector: zoo/missing.pth: no such file"
        in run.stderr
    ), run.stderr[-2000:]


def test_the_pretrained_files_are_inputs_of_the_baseline(tmp_path):
    for placed in (False, True):
        paths = place_init_files(tmp_path) if placed else []
        run = _dry_run(tmp_path, init_files=False)
        assert run.returncode == 0, run.stderr[-3000:]
        jobs = run.stdout.split("\nrule ")
        baseline_job = next(j for j in jobs if j.startswith("train_baseline:"))
        detector = local_path(full_config()["model"]["init"]["detector"])
        assert str(detector) in baseline_job.split("output:", 1)[0]
        # Downloaded only when it is not there yet.
        assert any(j.startswith("download_weights:") for j in jobs) != placed, paths


def test_archives_dir_skips_the_download(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    for name in ("data_object_image_2.zip", "data_object_label_2.zip"):
        (archives / name).write_bytes(b"PK")
    run = _dry_run(tmp_path, "--config", f"kitti={{archives_dir: {archives}}}")
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = planned_jobs(run)
    assert "download_kitti" not in jobs and jobs["extract_kitti"] == 1
    assert str(archives / "data_object_image_2.zip") in run.stdout


def test_rules_declare_memory_and_time_from_config(tmp_path):
    run = _dry_run(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = run.stdout.split("\nrule ")
    full = yaml.safe_load((REPO / "configs" / "kitti.yaml").read_text())["resources"]
    for rule in ("train_baseline", "prune", "finetune", "iterative", "evaluate", "export_onnx"):
        job = next(j for j in jobs if j.startswith(f"{rule}:"))
        resources = job.split("resources:", 1)[1].splitlines()[0]
        assert f"mem_mb={full[rule]['mem_mb']}" in resources, (rule, resources)
        assert f"runtime={full[rule]['runtime']}" in resources, (rule, resources)
        # The rules that use CUDA declare it, so a GPU profile can schedule and place them.
        uses_cuda = rule in ("train_baseline", "finetune", "iterative", "evaluate")
        assert ("gpu=1" in resources.split(", ")) == uses_cuda, (rule, resources)


def _differences(recipe, ours, path=""):
    """(path, recipe value, our value) wherever two nested config dicts differ."""
    if isinstance(recipe, dict) and isinstance(ours, dict):
        for key in sorted(set(recipe) | set(ours)):
            yield from _differences(
                recipe.get(key, "<absent>"), ours.get(key, "<absent>"), f"{path}.{key}"
            )
    elif recipe != ours and not (
        isinstance(recipe, list | tuple)
        and isinstance(ours, list | tuple)
        and list(recipe) == list(ours)
    ):
        yield path.lstrip("."), recipe, ours


def test_full_model_is_mmdets_recipe_with_three_classes():
    """Built from mmdet's packaged file, not a transcription: what differs is the class count,
    our registered subclass (one two-stage call fixed for other widths), no torchvision download,
    and values the recipe leaves at their defaults, spelled out."""
    import inspect

    from mmcv.ops import MultiScaleDeformableAttention
    from mmdet.models.dense_heads import DETRHead  # DeformableDETRHead's base takes embed_dims

    model = full_config()["model"]
    recipe = load_recipe(model["recipe"]).model.to_dict()
    differences = {
        path: (theirs, ours) for path, theirs, ours in _differences(recipe, model_config(model))
    }
    assert differences.pop("bbox_head.num_classes") == (80, 3)
    assert differences.pop("type") == ("DeformableDETR", "DeformableDETRAnyWidth")
    assert differences.pop("backbone.init_cfg")[1] is None
    attention = inspect.signature(MultiScaleDeformableAttention).parameters
    head = inspect.signature(DETRHead).parameters
    for path, (theirs, ours) in differences.items():
        assert theirs == "<absent>", (path, theirs, ours)
        name = path.rsplit(".", 1)[1]
        default = (head if path.startswith("bbox_head") else attention)[name].default
        assert ours == default, (path, ours, default)


def test_full_training_config_rescales_the_recipe_to_kitti(tmp_path):
    config = full_config()
    cfg = build_training_config(
        config["model"],
        config["train"],
        train_json=tmp_path / "train.json",
        val_json=tmp_path / "val.json",
        data_root=tmp_path,
        work_dir=tmp_path / "work",
        seed=0,
    )
    steps = {step["type"]: step for step in cfg.train_dataloader.dataset.pipeline}
    assert steps["RandomFlip"]["prob"] == 0.5
    single, cropped = steps["RandomChoice"]["transforms"]
    # The recipe's (480..800, 1333) at 1333x800 become (225..375, 1242) at 1242x375.
    assert single[0]["scales"][0] == (225, 1242) and single[0]["scales"][-1] == (375, 1242)
    assert cropped[1]["type"] == "RandomCrop" and cropped[1]["crop_size"] == (180, 281)
    test_resize = cfg.val_dataloader.dataset.pipeline[1]
    assert test_resize == {"type": "Resize", "scale": (1242, 375), "keep_ratio": True}
    # The recipe's optimizer, lr given at its total batch of 32 and scaled by mmengine.
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    assert cfg.optim_wrapper.optimizer.lr == 2e-4
    assert cfg.auto_scale_lr == {"enable": True, "base_batch_size": 32}
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys["sampling_offsets"] == {"lr_mult": 0.1}
    assert cfg.train_cfg == {
        "type": "IterBasedTrainLoop",
        "max_iters": 50000,
        "val_interval": 5000,
    }
