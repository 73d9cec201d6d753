"""The iterative prune / fine-tune loop: per-step ratio arithmetic, early stop, resume."""

from __future__ import annotations

import csv

import pytest

from detrprune.constants import ITERATIVE_STEP_COLUMNS
from detrprune.prune.iterative import (
    cumulative_ratio,
    iterative_prune,
    per_step_ratio,
    select_step,
    step_plan,
)
from detrprune.prune.spec import MethodSpec
from detrprune.train.checkpoint import load_detector, save_detector


@pytest.mark.parametrize(("target", "steps"), [(0.5, 1), (0.5, 3), (0.9, 5), (0.1, 2)])
def test_equal_steps_reach_the_target(target, steps):
    ratio = per_step_ratio(target, steps)
    assert (1 - ratio) ** steps == pytest.approx(1 - target, rel=1e-12)
    assert cumulative_ratio(ratio, steps) == pytest.approx(target, rel=1e-12)
    assert ratio <= target


def test_step_plan_numbers():
    plan = step_plan(50, 3)
    assert [row["step"] for row in plan] == [1, 2, 3]
    # 1 - 0.5 ** (1/3) = 0.2062994740...
    assert plan[0]["step_ratio"] == pytest.approx(0.2062994740159002, rel=1e-12)
    assert [round(row["cumulative_ratio"], 6) for row in plan] == [0.206299, 0.370039, 0.5]


@pytest.mark.parametrize(("target", "steps"), [(0.0, 3), (1.0, 3), (0.5, 0)])
def test_bad_plans_are_refused(target, steps):
    with pytest.raises(ValueError):
        per_step_ratio(target, steps)


def test_kept_step_is_the_last_within_budget_else_the_first():
    rows = [{"within_budget": flag} for flag in (True, True, False)]
    assert select_step(rows) == 1
    assert select_step([{"within_budget": False}]) == 0


ITERATIVE = {
    "enabled": True,
    "method": "x",
    "target_ratio": 50,
    "steps": 3,
    "finetune_iters": 1,
    "max_map_drop": 0.1,
}
FINETUNE = {"enabled": True, "iters": 1, "lr": 1e-4, "warmup_iters": 0}


def _iterate(baseline, spec, micro, micro_data, folder, flops_images=1, iterative=ITERATIVE):
    """The loop on the micro data, outputs and work folder under ``folder``."""
    return iterative_prune(
        baseline,
        # An untrained model scores ~0: against a baseline mAP of 1.0 the first step is
        # already over budget, so the loop must stop after it.
        1.0,
        spec,
        iterative,
        model=micro["model"],
        train=micro["train"],
        finetune=FINETUNE,
        train_json=micro_data["train_json"],
        val_json=micro_data["val_json"],
        data_root=micro_data["data_root"],
        work_dir=folder / "work",
        out_model=folder / "iterative.pth",
        out_steps=folder / "steps.csv",
        seed=0,
        flops_images=flops_images,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["filter", "weight"])
def test_loop_stops_early_and_a_rerun_resumes(tiny_detector, micro, micro_data, tmp_path, kind):
    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(
        detector, baseline, cfg, {"variant": "baseline", "method": "baseline", "ratio": 0}
    )
    spec = {"kind": kind, "scope": "backbone+ffn" if kind == "filter" else "layerwise"}

    def run():
        return _iterate(baseline, spec, micro, micro_data, tmp_path)

    rows = run()
    assert [row["step"] for row in rows] == [1]
    assert rows[0]["within_budget"] is False and rows[0]["selected"] is True
    assert rows[0]["map_drop"] == pytest.approx(1.0 - rows[0]["mAP_after_finetune"])
    with open(tmp_path / "steps.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 1 and table[0]["selected"] == "true"
    model, _, meta = load_detector(tmp_path / "iterative.pth")
    assert meta["variant"] == "iterative" and meta["iterative_step"] == 1
    assert meta["ratio"] == round(100 * per_step_ratio(0.5, 3))
    if kind == "weight":
        weights = [
            m.weight for m in model.modules() if hasattr(m, "weight") and m.weight is not None
        ]
        matrices = [w for w in weights if w.dim() >= 2]
        zeros = sum(int((w == 0).sum()) for w in matrices) / sum(w.numel() for w in matrices)
        assert zeros > 0.15

    # A rerun with the same settings finds the finished step and does not redo it.
    stamp = (tmp_path / "work" / "step1" / "step.json").stat().st_mtime_ns
    assert [row["step"] for row in run()] == [1]
    assert (tmp_path / "work" / "step1" / "step.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_rerun_for_another_flops_images_recounts_gmacs_and_trains_nothing(
    tiny_detector, micro, micro_data, tmp_path, monkeypatch
):
    """flops_images is a param of the rule but not in the work folder's stamp: a rerun caused
    by it reuses the finished steps, and must not reuse their GMACs, counted over other images."""
    import detrprune.evaluate.metrics as metrics

    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(detector, baseline, cfg, {"variant": "baseline", "method": "baseline"})
    spec = {"kind": "filter", "scope": "backbone"}
    # The synthetic frames share one size, so a real count would not tell one image from two.
    monkeypatch.setattr(metrics, "fvcore_gmacs", lambda model, batches: {"gmacs": len(batches)})
    assert [row["gmacs"] for row in _iterate(baseline, spec, micro, micro_data, tmp_path)] == [1]
    finetuned = tmp_path / "work" / "step1" / "finetuned.pth"
    trained = finetuned.stat().st_mtime_ns
    rows = _iterate(baseline, spec, micro, micro_data, tmp_path, flops_images=2)
    assert [row["gmacs"] for row in rows] == [2]
    assert finetuned.stat().st_mtime_ns == trained
    with open(tmp_path / "steps.csv") as handle:
        assert [row["gmacs"] for row in csv.DictReader(handle)] == ["2"]


class _Killed(Exception):
    """Stands in for SIGKILL: the run stops where it is, its work folder stays."""


@pytest.mark.slow
def test_loop_resumes_after_a_kill_during_a_final_validation(
    tiny_detector, micro, micro_data, tmp_path
):
    """Killed after a step's last fine-tune checkpoint, during its final validation: the rerun
    validates again instead of failing (an IndexError at every retry before)."""
    from mmengine.runner import ValLoop

    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(detector, baseline, cfg, {"variant": "baseline", "method": "baseline"})
    spec = {"kind": "weight", "scope": "layerwise"}

    def run(folder):
        return _iterate(baseline, spec, micro, micro_data, folder)

    expected = run(tmp_path / "uninterrupted")
    run_val = ValLoop.run

    def final_validation_killed(loop):
        if loop.runner.iter == ITERATIVE["finetune_iters"]:
            raise _Killed
        return run_val(loop)

    ValLoop.run = final_validation_killed
    try:
        with pytest.raises(_Killed):
            run(tmp_path / "killed")
    finally:
        ValLoop.run = run_val
    assert run(tmp_path / "killed") == expected


def test_the_control_reads_the_step_the_loop_kept(tmp_path):
    from detrprune.prune.iterative import kept_step, write_steps_csv

    rows = [
        {"step": s, "selected": s == 2, **dict.fromkeys(ITERATIVE_STEP_COLUMNS[1:-1], 0.0)}
        for s in (1, 2, 3)
    ]
    steps = tmp_path / "steps.csv"
    write_steps_csv(rows, steps)
    assert kept_step(steps) == 2
    write_steps_csv([{**row, "selected": False} for row in rows], steps)
    with pytest.raises(ValueError, match=r"steps\.csv: expected one selected step, found 0"):
        kept_step(steps)


def _shapes(path):
    model, _, _ = load_detector(path)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("round_to", [8, 1])
def test_the_last_step_lands_on_the_one_shot_shapes(
    tiny_detector, micro, micro_data, tmp_path, monkeypatch, round_to
):
    """Issue 36: removing the step ratio of the current widths rounds down at every step, and
    three steps towards 50 % ended below the one-shot model of 50 % (stem 24 instead of 32 at
    round_to 8). Each step now lands on the one-shot shapes of its cumulative ratio."""
    import copy
    import shutil

    import detrprune.evaluate.metrics as metrics
    import detrprune.train.runner as runner
    from detrprune.prune.counting import count_parameters
    from detrprune.prune.methods import apply_pruning, prune_checkpoint

    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(detector, baseline, cfg, {"variant": "baseline", "method": "baseline"})
    spec = {"kind": "filter", "scope": "backbone+residual+ffn", "round_to": round_to}
    input_hw = (micro["model"]["input_scale"][1], micro["model"]["input_scale"][0])

    # Only the shapes matter here: no training, no MAC count.
    def finetune(pruned, *args, out_model, **kwargs):
        shutil.copyfile(pruned, out_model)
        scores = {"coco/bbox_mAP": 0.5, "coco/bbox_mAP_50": 0.5}
        return {"validations": [scores, scores]}

    monkeypatch.setattr(runner, "finetune_checkpoint", finetune)
    monkeypatch.setattr(metrics, "fvcore_gmacs", lambda model, batches: {"gmacs": 0.0})
    rows = _iterate(
        baseline, spec, micro, micro_data, tmp_path, iterative={**ITERATIVE, "max_map_drop": 1.0}
    )
    assert [row["step"] for row in rows] == [1, 2, 3] and rows[-1]["selected"]

    one_shot = tmp_path / "one_shot.pth"
    prune_checkpoint(baseline, one_shot, "filter_all", spec, 50, input_hw)
    expected = _shapes(one_shot)
    # Every part of the scope is pruned: the stem (residual stream) and the FFNs' hidden width.
    original = {name: tuple(tensor.shape) for name, tensor in detector.state_dict().items()}
    for weight in ("backbone.conv1.weight", "encoder.layers.0.ffn.layers.0.0.weight"):
        assert expected[weight][0] < original[weight][0]
    assert _shapes(tmp_path / "iterative.pth") == expected
    # The old compounding steps end elsewhere on this model, so the check above has teeth.
    compounded = copy.deepcopy(detector)
    for row in rows:
        apply_pruning(compounded, MethodSpec.from_config(spec), row["step_ratio"], input_hw)
    assert {n: tuple(t.shape) for n, t in compounded.state_dict().items()} != expected

    # What was reached is recorded: fewer channels and parameters at every step, and the last
    # step's parameters are the one-shot model's.
    kept = [row["kept_channel_fraction"] for row in rows]
    params = [row["params_fraction"] for row in rows]
    assert 1.0 > kept[0] > kept[1] > kept[2] > 0.0
    assert 1.0 > params[0] > params[1] > params[2] > 0.0
    one_shot_model, _, _ = load_detector(one_shot)
    assert params[2] == pytest.approx(
        count_parameters(one_shot_model) / count_parameters(detector), rel=1e-12
    )
