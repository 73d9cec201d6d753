"""Iterative prune / fine-tune (the Torch-Pruning detection recipe) with early stopping.

Each of ``steps`` steps removes the same fraction of what is left, ``1 - (1 - T)^(1/steps)``, so
the target ``T`` is reached after the last one; every step is pruned, evaluated, fine-tuned and
evaluated again. A filter method's step ``k`` prunes the fine-tuned model to the shapes the same
method gives the original baseline in one shot at step ``k``'s cumulative ratio (widths rounded
and clamped as one-shot rounds them, heads and points counted as one-shot counts them), the
channels chosen by the method's criterion on the current weights: removing the step ratio of the
current widths instead rounds down again at every step, and the last step would end below the
one-shot model of the same ratio. A weight method raises the sparsity to the cumulative ratio.
The loop stops early once the fine-tuned mAP has fallen more than ``max_map_drop`` below the
baseline's. The model kept is the last step within that budget (the first step when none is).

Each finished step is saved in the work folder (not a workflow output), so a killed job resumes
at the step it was in rather than starting over.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detrprune.config import train_result_settings
from detrprune.constants import ITERATIVE_FINETUNE_KEYS, ITERATIVE_STEP_COLUMNS
from detrprune.jobs import atomic_output
from detrprune.prune.counting import count_nonzero_parameters, count_parameters
from detrprune.prune.filters import filter_shapes, kept_channel_fraction
from detrprune.prune.gradients import training_images
from detrprune.prune.methods import apply_pruning
from detrprune.prune.spec import MethodSpec
from detrprune.train.checkpoint import load_detector, save_detector
from detrprune.variants import ITERATIVE_CONTROL

log = logging.getLogger(__name__)


def per_step_ratio(target: float, steps: int) -> float:
    """The ratio each of ``steps`` equal prune steps removes so that ``target`` is removed in all.

    Each step removes a fraction of what is left: (1 - r)^steps = 1 - target.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"iterative target ratio must be in (0, 1), got {target}")
    if steps < 1:
        raise ValueError(f"iterative steps must be >= 1, got {steps}")
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def cumulative_ratio(step_ratio: float, steps_done: int) -> float:
    """The fraction removed after ``steps_done`` steps of ``step_ratio`` each."""
    return 1.0 - (1.0 - step_ratio) ** steps_done


def step_plan(target_percent: int, steps: int) -> list[dict[str, float]]:
    """Per step: the ratio it removes of what is left, and the total removed after it."""
    ratio = per_step_ratio(target_percent / 100.0, steps)
    return [
        {"step": k, "step_ratio": ratio, "cumulative_ratio": cumulative_ratio(ratio, k)}
        for k in range(1, steps + 1)
    ]


def step_finetune_settings(
    iterative: Mapping[str, Any], finetune: Mapping[str, Any]
) -> dict[str, Any]:
    """Each step's fine-tune: ``finetune_iters`` iterations at the fine-tune lr and warm-up
    (:data:`~detrprune.constants.ITERATIVE_FINETUNE_KEYS`)."""
    return {
        "iters": int(iterative["finetune_iters"]),
        **{key: finetune[key] for key in ITERATIVE_FINETUNE_KEYS},
    }


def select_step(rows: list[dict[str, Any]]) -> int:
    """The index of the step to keep: the last within the mAP budget, else the first."""
    within = [i for i, row in enumerate(rows) if row["within_budget"]]
    return within[-1] if within else 0


def iterative_prune(
    baseline: Path,
    baseline_map: float,
    spec: Mapping[str, Any],
    iterative: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    finetune: Mapping[str, Any],
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    out_model: Path,
    out_steps: Path,
    seed: int,
    flops_images: int,
) -> list[dict[str, Any]]:
    """Run the loop; write the kept model and the per-step table. Returns the step rows.

    ``spec`` is the pruning method (kind, scope, modules); ``iterative`` the config section
    (target_ratio, steps, finetune_iters, max_map_drop); ``finetune`` gives lr and warm-up.
    Filter pruning prunes each step to the one-shot shapes of its ``cumulative_ratio`` (see the
    module's docstring); weight pruning raises the sparsity to ``cumulative_ratio`` (existing
    zeros count as pruned). Each row records what was reached: ``kept_channel_fraction`` and
    ``params_fraction`` (:func:`_run_step`).
    """
    from detrprune.evaluate.metrics import fvcore_gmacs, load_val_batches
    from detrprune.train.resume import prepare_work_dir, resume_stamp
    from detrprune.train.runner import finetune_checkpoint

    work_dir = Path(work_dir)
    settings = {
        "spec": dict(spec),
        "iterative": {key: value for key, value in iterative.items() if key != "enabled"},
        "model": dict(model),
        "train": train_result_settings(train),
        "finetune": {key: finetune[key] for key in ITERATIVE_FINETUNE_KEYS},
        "seed": seed,
    }
    # A work folder of other settings, another baseline or other data is wiped; a matching one
    # is resumed.
    prepare_work_dir(work_dir, resume_stamp(settings, [baseline, train_json, val_json]))
    input_scale = (int(model["input_scale"][0]), int(model["input_scale"][1]))
    input_hw = (input_scale[1], input_scale[0])
    batches = load_val_batches(val_json, data_root, input_scale, flops_images)
    step_finetune = step_finetune_settings(iterative, finetune)
    max_drop = float(iterative["max_map_drop"])
    plan = step_plan(int(iterative["target_ratio"]), int(iterative["steps"]))
    method = MethodSpec.from_config(spec)
    # A criterion that ranks by gradients: the same training images for every step.
    gradient_batches = (
        training_images(train_json, data_root, input_scale, method.gradient_images, seed)
        if method.needs_gradients
        else None
    )
    log.info(
        "iterative %s (%s): %d steps of %.4f towards %d %%, stop when mAP drops > %.3f",
        method.kind,
        method.describe(),
        len(plan),
        plan[0]["step_ratio"],
        int(iterative["target_ratio"]),
        max_drop,
    )

    def finetune_step(pruned: Path, step: int) -> dict[str, Any]:
        return finetune_checkpoint(
            pruned,
            model,
            train,
            step_finetune,
            train_json=train_json,
            val_json=val_json,
            data_root=data_root,
            work_dir=work_dir / f"step{step}" / "runner",
            out_model=work_dir / f"step{step}" / "finetuned.pth",
            seed=seed,
            validate=True,
            variant=f"iterative/step{step}",
        )

    rows: list[dict[str, Any]] = []
    current = Path(baseline)
    for planned in plan:
        step = int(planned["step"])
        step_dir = work_dir / f"step{step}"
        record_path = step_dir / "step.json"
        finetuned = step_dir / "finetuned.pth"
        if record_path.exists() and finetuned.exists():
            row = json.loads(record_path.read_text())
            log.info("step %d: done in an earlier run (mAP %.4f)", step, row["mAP_after_finetune"])
            if row.get("flops_images") != flops_images:
                # GMACs are an average over flops_images images, which is not in the stamp
                # (a change of it need not prune and fine-tune again): counted anew.
                detector, _, _ = load_detector(step_dir / "pruned.pth")
                row.update(
                    gmacs=fvcore_gmacs(detector, batches)["gmacs"], flops_images=flops_images
                )
                del detector
                with atomic_output(record_path) as (tmp,):
                    tmp.write_text(json.dumps(row, sort_keys=True))
        else:
            row = _run_step(
                Path(baseline),
                current,
                method,
                planned,
                input_hw,
                batches,
                step_dir,
                fvcore_gmacs,
                finetune_step,
                seed + step,
                gradient_batches,
            )
            row["flops_images"] = flops_images
            row["map_drop"] = baseline_map - row["mAP_after_finetune"]
            row["within_budget"] = row["map_drop"] <= max_drop
            with atomic_output(record_path) as (tmp,):
                tmp.write_text(json.dumps(row, sort_keys=True))
        rows.append(row)
        current = finetuned
        log.info(
            "step %d: %.1f %% pruned, %.3f GMACs, mAP %.4f -> %.4f after fine-tuning (drop %.4f)",
            step,
            100 * row["cumulative_ratio"],
            row["gmacs"],
            row["mAP_before_finetune"],
            row["mAP_after_finetune"],
            row["map_drop"],
        )
        if not row["within_budget"]:
            log.info("step %d: mAP drop %.4f > %.4f, stopping", step, row["map_drop"], max_drop)
            break
    kept = select_step(rows)
    for i, row in enumerate(rows):
        row["selected"] = i == kept
    _save_selected(
        work_dir / f"step{rows[kept]['step']}" / "finetuned.pth", rows[kept], method, out_model
    )
    write_steps_csv(rows, out_steps)
    return rows


def _run_step(
    baseline: Path,
    current: Path,
    spec: MethodSpec,
    planned: Mapping[str, float],
    input_hw: tuple[int, int],
    batches: Any,
    step_dir: Path,
    gmacs_of: Any,
    finetune: Any,
    seed: int,
    gradient_batches: Any = None,
) -> dict[str, Any]:
    """Prune ``current`` by one step, count its MACs, fine-tune it; the step's table row.

    A filter method prunes ``current`` to the shapes of ``baseline`` pruned in one shot at the
    step's cumulative ratio (:func:`one_shot_shapes`); a weight method to its sparsity.
    ``seed`` draws the channels when the method's criterion is random. The row records what was
    reached (:func:`_reached`): ``kept_channel_fraction`` (1 for weight pruning) and
    ``params_fraction``.

    A step cut short by a kill left its pruned model and its fine-tune work folder: both are
    reused, so the fine-tuning resumes.
    """
    step_dir.mkdir(parents=True, exist_ok=True)
    pruned = step_dir / "pruned.pth"
    if not pruned.exists():
        detector, model_cfg, meta = load_detector(current)
        ratio = planned["cumulative_ratio"]
        targets = (
            one_shot_shapes(baseline, spec, ratio, input_hw, seed, gradient_batches)
            if spec.kind == "filter"
            else None
        )
        stats = apply_pruning(detector, spec, ratio, input_hw, seed, targets, gradient_batches)
        step_meta = {**meta, "kind": spec.kind, "scope": spec.describe(), "pruning": stats}
        save_detector(detector, pruned, model_cfg, step_meta)
    detector, _, _ = load_detector(pruned)
    macs = gmacs_of(detector, batches)["gmacs"]
    params, nonzero = count_parameters(detector), count_nonzero_parameters(detector)
    del detector
    reached = _reached(baseline, pruned)
    result = finetune(pruned, int(planned["step"]))
    first, last = result["validations"][0], result["validations"][-1]
    return {
        "step": int(planned["step"]),
        "step_ratio": planned["step_ratio"],
        "cumulative_ratio": planned["cumulative_ratio"],
        "gmacs": macs,
        "params_total": params,
        "params_nonzero": nonzero,
        **reached,
        "mAP_before_finetune": float(first["coco/bbox_mAP"]),
        "mAP50_before_finetune": float(first["coco/bbox_mAP_50"]),
        "mAP_after_finetune": float(last["coco/bbox_mAP"]),
        "mAP50_after_finetune": float(last["coco/bbox_mAP_50"]),
    }


def one_shot_shapes(
    baseline: Path,
    spec: MethodSpec,
    ratio: float,
    input_hw: tuple[int, int],
    seed: int,
    gradient_batches: Any = None,
) -> dict[str, dict[str, int]]:
    """The shapes (:func:`~detrprune.prune.filters.filter_shapes`) of ``baseline`` pruned in one
    shot by the filter method ``spec`` at ``ratio``: what a step of that cumulative ratio must
    reach (the same as ``prune_checkpoint`` at that ratio)."""
    detector, _, _ = load_detector(baseline)
    apply_pruning(detector, spec, ratio, input_hw, seed, gradient_batches=gradient_batches)
    return filter_shapes(detector)


def _reached(baseline: Path, pruned: Path) -> dict[str, float]:
    """What a step's pruned model reached against the baseline: ``kept_channel_fraction``
    (:func:`kept_channel_fraction`) and ``params_fraction`` (parameters over the baseline's)."""
    original, _, _ = load_detector(baseline)
    detector, _, _ = load_detector(pruned)
    return {
        "kept_channel_fraction": kept_channel_fraction(original, detector),
        "params_fraction": count_parameters(detector) / count_parameters(original),
    }


def kept_step(steps_csv: Path) -> int:
    """The step number the loop kept (``selected``) in its ``steps.csv``."""
    with open(steps_csv, newline="") as handle:
        kept = [int(row["step"]) for row in csv.DictReader(handle) if row["selected"] == "true"]
    if len(kept) != 1:
        raise ValueError(f"{steps_csv}: expected one selected step, found {len(kept)}")
    return kept[0]


def iterative_control(
    baseline: Path,
    steps_csv: Path,
    iterative: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    finetune: Mapping[str, Any],
    train_json: Path,
    val_json: Path,
    data_root: Path,
    work_dir: Path,
    out_model: Path,
    seed: int,
) -> int:
    """The iterative result's control of equal training: the unpruned baseline fine-tuned
    exactly as the loop fine-tuned up to the step it kept (as many runs of ``finetune_iters``,
    each with the loop's lr, warm-up and seed). Returns the number of runs."""
    from detrprune.train.runner import finetune_checkpoint

    steps = kept_step(steps_csv)
    step_finetune = step_finetune_settings(iterative, finetune)
    log.info("control of the iterative result: %d fine-tune run(s) of the baseline", steps)
    current = Path(baseline)
    for step in range(1, steps + 1):
        out = Path(out_model) if step == steps else Path(work_dir) / f"step{step}" / "model.pth"
        finetune_checkpoint(
            current,
            model,
            train,
            step_finetune,
            train_json=train_json,
            val_json=val_json,
            data_root=data_root,
            work_dir=Path(work_dir) / f"step{step}" / "runner",
            out_model=out,
            seed=seed,
            variant=ITERATIVE_CONTROL,
        )
        current = out
    return steps


def _save_selected(
    finetuned: Path, row: Mapping[str, Any], spec: MethodSpec, out_model: Path
) -> None:
    detector, model_cfg, meta = load_detector(finetuned)
    meta = {
        **meta,
        "variant": "iterative",
        "method": "iterative",
        "kind": spec.kind,
        "scope": spec.describe(),
        "ratio": round(100 * row["cumulative_ratio"]),
        "finetuned": True,
        "iterative_step": int(row["step"]),
    }
    save_detector(detector, out_model, model_cfg, meta)
    log.info("kept step %d (%s) as %s", row["step"], finetuned, out_model)


def write_steps_csv(rows: list[Mapping[str, Any]], out: Path) -> None:
    """The per-step table, fixed columns, written atomically."""
    with atomic_output(out) as (tmp,):
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ITERATIVE_STEP_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _cell(row[key]) for key in ITERATIVE_STEP_COLUMNS})


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
