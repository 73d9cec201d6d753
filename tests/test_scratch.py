"""Scratch twins: a pruned architecture trained from a fresh initialisation (Liu et al. 2019)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from detrprune.config import ConfigError, validate_config
from detrprune.prune.methods import prune_checkpoint
from detrprune.train.checkpoint import CheckpointError, read_checkpoint
from detrprune.train.scratch import (
    build_scratch_twin,
    scratch_iterations,
    stretched_schedule,
)
from detrprune.variants import FINETUNED_BASELINE, control_of, scratch_variant

from .conftest import micro_config, planned_jobs, run_snakemake
from .test_pruning import H, W, saved_micro_baseline

# Every structured part at once: channels of the backbone, FFN widths, heads and points.
EVERY_PART = {
    "kind": "filter",
    "scope": "backbone+ffn+attention",
    "transformer": ["encoder"],
}
POINTS = {"kind": "filter", "scope": "backbone+points", "part_ratios": {"points": 50}}


def test_the_budgets_iterations():
    assert scratch_iterations("e", 450, 50) == 500
    # The same compute: a model of 2/5 of the GMACs trains 2.5 times as many iterations.
    assert scratch_iterations("b", 450, 50, baseline_gmacs=5.0, pruned_gmacs=2.0) == 1250
    with pytest.raises(ValueError, match="needs both models' GMACs"):
        scratch_iterations("b", 450, 50)
    with pytest.raises(ValueError, match="scratch budget 'c'"):
        scratch_iterations("c", 450, 50)


def test_the_schedule_stretches_with_the_iterations():
    train = micro_config()["train"] | {
        "max_iters": 450,
        "warmup_iters": 100,
        "lr_drop_at": 0.6,
        "checkpoint_interval": 100,
    }
    stretched = stretched_schedule(train, 900)
    assert stretched["max_iters"] == 900
    assert stretched["warmup_iters"] == 200  # the same fraction of the run
    assert stretched["lr_drop_at"] == 0.6  # a fraction already
    assert stretched["lr"] == train["lr"] and stretched["batch_size"] == train["batch_size"]
    assert stretched_schedule(train, 50)["checkpoint_interval"] == 50


@pytest.mark.parametrize("spec", [EVERY_PART, POINTS], ids=["ffn-attention", "points"])
def test_a_twin_has_the_pruned_shapes_and_none_of_its_weights(tmp_path, micro, spec):
    baseline, _ = saved_micro_baseline(tmp_path, micro)
    pruned = tmp_path / "pruned.pth"
    prune_checkpoint(baseline, pruned, "m", spec, 50, (H, W))
    state, _, _ = read_checkpoint(pruned)

    def twin_state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        twin = build_scratch_twin(pruned)
        assert twin.training
        twin.init_weights()  # what the Runner does next, as it did for the baseline
        return twin.state_dict()

    first, again, other = twin_state(3), twin_state(3), twin_state(4)
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in state.items()}
    # Seeded: the same seed draws the same twin.
    assert all(torch.equal(v, again[k]) for k, v in first.items())
    # What the seed draws (not the constants and fixed grids of an initialisation: ones, zeros,
    # the sampling offsets' starting directions) is none of the pruned model's weights.
    drawn = [k for k, v in first.items() if not torch.equal(v, other[k])]
    assert len(drawn) > 20
    assert [k for k in drawn if torch.equal(first[k], state[k])] == []
    assert "backbone.conv1.weight" in drawn and "backbone.layer4.0.conv1.weight" in drawn


def test_only_a_filter_pruned_model_has_a_twin(tmp_path, micro):
    baseline, _ = saved_micro_baseline(tmp_path, micro)
    pruned = tmp_path / "weight.pth"
    prune_checkpoint(baseline, pruned, "w", {"kind": "weight", "scope": "layerwise"}, 50, (H, W))
    with pytest.raises(CheckpointError, match="needs a filter-pruned model"):
        build_scratch_twin(pruned)


def test_a_twin_is_compared_with_the_finetuned_baseline():
    assert scratch_variant("e", "filter", 50) == "scratch/filter/r50"
    assert scratch_variant("b", "filter", 50) == "scratch_b/filter/r50"
    assert control_of("scratch/filter/r50") == FINETUNED_BASELINE
    assert control_of("scratch_b/filter/r50") == FINETUNED_BASELINE


def _with_scratch(targets, finetune=True, budgets=None) -> dict:
    config = copy.deepcopy(micro_config())
    config["pruning"]["scratch"] = {"targets": targets, **({"budgets": budgets} if budgets else {})}
    config["pruning"]["finetune"]["enabled"] = finetune
    return config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_with_scratch({"nope": [50]}), r"pruning.scratch.targets.nope: not a method under"),
        (_with_scratch({"weight": [30]}), r"targets.weight: a weight method keeps the baseline"),
        (_with_scratch({"filter": [30]}), r"targets.filter: \[30\] not among the method's ratios"),
        (_with_scratch({"filter": [50]}, finetune=False), r"set pruning.finetune.enabled"),
        (_with_scratch({"filter": [50]}, budgets=["c"]), r"pruning.scratch.budgets\[0\]"),
        (_with_scratch({"filter": [0]}), r"pruning.scratch.targets.filter\[0\]"),
    ],
    ids=["unknown-method", "weight-method", "ratio", "no-finetune", "budget", "ratio-range"],
)
def test_a_bad_scratch_target_is_refused_in_one_line(config, message):
    with pytest.raises(ConfigError, match=message) as error:
        validate_config(config)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_twins_train_and_a_one_ratio_change_reruns_only_its_twin(tmp_path):
    """The micro study to its scratch twins (both budgets), then one ratio changed: only that
    ratio's pruned model, its fine-tune and its twins are planned again."""
    config = _with_scratch({"filter": [20, 50]}, budgets=["e", "b"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    twins = [
        f"results/{folder}/filter/r{r}/model.pth"
        for folder in ("scratch", "scratch_b")
        for r in (20, 50)
    ]
    run = run_snakemake(tmp_path, "--cores", "2", *twins, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    for path in twins:
        _, _, meta = read_checkpoint(tmp_path / path)
        folder, _, ratio = path.split("/")[1:4]
        assert meta["variant"] == f"{folder}/filter/{ratio}"
        assert meta["method"] == f"{folder}/filter"
        assert meta["pruned_from"] == f"prune/filter/{ratio}"
        iterations = micro_config()["train"]["max_iters"] + config["pruning"]["finetune"]["iters"]
        if folder == "scratch":
            assert meta["iterations"] == iterations
        else:  # a smaller model trains for more iterations in the same compute
            assert meta["iterations"] > iterations

    config["pruning"]["methods"]["filter"]["ratios"] = [20, 40]
    config["pruning"]["scratch"]["targets"]["filter"] = [20, 40]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(
        tmp_path,
        "--cores",
        "2",
        "-n",
        *twins[:1],
        *[f"results/{folder}/filter/r40/model.pth" for folder in ("scratch", "scratch_b")],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # Budget b reads the GMACs of the new pruned model's evaluation (the baseline's is there).
    assert planned_jobs(run) == {"prune": 1, "evaluate": 1, "train_scratch": 2}


def test_the_summary_compares_each_finetuned_target_with_its_twins(tmp_path):
    """finetune/filter/r50 (mAP 0.41) against its twins (0.30 on as many images, 0.45 on the
    same compute), each on the same resamples: pruning beats the first, not the second."""
    from .test_docs_outputs import _full_run

    summary, header = _full_run(tmp_path)
    rows = summary.set_index("variant")
    target = rows.loc["finetune/filter/r50"]
    assert target["delta_vs_scratch_mAP"] == pytest.approx(0.11)
    assert (
        0
        < target["delta_vs_scratch_mAP_ci95_low"]
        < 0.11
        < target["delta_vs_scratch_mAP_ci95_high"]
    )
    assert bool(target["beats_scratch"])
    assert target["delta_vs_scratch_b_mAP"] == pytest.approx(-0.04)
    assert target["delta_vs_scratch_b_mAP_ci95_high"] < 0
    assert not target["beats_scratch_b"]
    # Only a fine-tuned target with a twin has them; the twins are compared with the control.
    others = rows.drop(index="finetune/filter/r50")
    assert others["beats_scratch"].isna().all() and others["delta_vs_scratch_mAP"].isna().all()
    assert rows.loc["scratch/filter/r50", "control"] == "finetune/baseline"
    assert rows.loc["scratch/filter/r50", "method"] == "scratch/filter"
    assert "beats_scratch" in header


def test_the_report_answers_prune_or_train_small_in_words_and_a_table(tmp_path):
    """The first page says, per target and twin, what the interval allows; a table page lists
    them; the twins are kept out of the per-method answer (they are not zero-shot models)."""
    from pypdf import PdfReader

    from detrprune.report.findings import answer
    from detrprune.report.pdf import write_report

    from .test_docs_outputs import _full_run

    summary, _ = _full_run(tmp_path)
    lines = answer(summary)
    start = lines.index(
        "Prune, or train the small model? (pruned + fine-tuned vs the same shapes from scratch)"
    )
    assert lines[start + 1 : start + 5] == [
        "  finetune/filter/r50 0.410 vs scratch/filter/r50 0.300 (as many training images):",
        lines[start + 2],
        "  finetune/filter/r50 0.410 vs scratch_b/filter/r50 0.450 (the same training compute):",
        lines[start + 4],
    ]
    assert lines[start + 2].endswith(": pruning beat training the small model")
    assert lines[start + 4].endswith(": training the small model did better")
    assert not any(line.lstrip().startswith("scratch") for line in lines[:start])
    pdf = tmp_path / "report.pdf"
    write_report(summary, [], {}, pdf)
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Prune, or train the small model?" in text and "scratch_b mAP" in text
