"""Training-seed replicates in the summary, the findings and the PDF (detrprune.report.seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from detrprune.report.findings import findings
from detrprune.report.pdf import summarize_config, write_report
from detrprune.report.seeds import ReplicateError, add_seed_replicates, t_interval
from detrprune.report.summary import ReportError, aggregate
from detrprune.variants import replicate_of, split_replicate

from .test_report import CONFIG, _metrics, _write_runs


def test_t_interval_of_the_readme_seed_experiment():
    # README "training seeds": four seeds' deltas of filter_attention/r50 against its control.
    mean, low, high = t_interval([-0.060, -0.039, -0.059, -0.048])
    assert mean == pytest.approx(-0.0515)
    # mean +- t(0.975, 3) * sd / sqrt(4), t = 3.18245, sd = 0.0099499
    assert (low, high) == pytest.approx((-0.0515 - 0.015832, -0.0515 + 0.015832), abs=1e-5)
    with pytest.raises(ReplicateError, match="at least two values"):
        t_interval([0.1])


def test_replicate_names_round_trip():
    name = replicate_of("finetune/filter/r50", 7)
    assert name == "replicate/s7/finetune/filter/r50"
    assert split_replicate(name) == ("finetune/filter/r50", 7)
    assert split_replicate("replicate/s7/finetune/baseline") == ("finetune/baseline", 7)
    assert split_replicate("finetune/filter/r50") is None
    assert split_replicate("replicate/s07/finetune/filter/r50") is None
    with pytest.raises(ValueError, match="only fine-tuned"):
        replicate_of("prune/filter/r50", 7)


def rows() -> list[dict]:
    return [
        {"variant": "baseline", "control": "", "mAP": 0.40},
        {"variant": "finetune/baseline", "control": "baseline", "mAP": 0.50},
        {"variant": "finetune/filter/r50", "control": "finetune/baseline", "mAP": 0.45},
        {"variant": "finetune/weight/r50", "control": "finetune/baseline", "mAP": 0.49},
    ]


def test_deltas_are_taken_within_each_seed():
    table = rows()
    # The control's seeds differ by much more than the pruned model's gap to it in each seed:
    # paired within seeds the gap is a steady -0.05; unpaired it would look like noise.
    add_seed_replicates(
        table,
        {
            "finetune/baseline": {1: 0.40, 2: 0.60},
            "finetune/filter/r50": {1: 0.35, 2: 0.55},
        },
    )
    base, control, pruned, unreplicated = table
    assert "seeds" not in base and "seeds" not in unreplicated
    assert pruned["seeds"] == 3
    assert pruned["mAP_seed_mean"] == pytest.approx((0.45 + 0.35 + 0.55) / 3)
    assert pruned["mAP_seed_sd"] == pytest.approx(0.1)
    assert pruned["delta_mAP_seed_mean"] == pytest.approx(-0.05)
    assert pruned["delta_mAP_seed_ci95_low"] == pytest.approx(-0.05)
    assert pruned["delta_mAP_seed_ci95_high"] == pytest.approx(-0.05)
    assert pruned["map_kept_seed_mean"] == pytest.approx(0.45 / 0.50)
    # The baseline is trained once: the control's gain over it, seed by seed, is against it.
    assert control["delta_mAP_seed_mean"] == pytest.approx((0.10 + 0.0 + 0.20) / 3)
    assert control["delta_mAP_seed_ci95_low"] < 0 < control["delta_mAP_seed_ci95_high"]


def test_replicates_that_cannot_be_paired_are_errors():
    with pytest.raises(ReplicateError, match="'finetune/filter/r90', which has no metrics"):
        add_seed_replicates(rows(), {"finetune/filter/r90": {1: 0.3}})
    with pytest.raises(ReplicateError, match=r"seed replicates \[1, 2\], its control .* \[1\]"):
        add_seed_replicates(
            rows(),
            {"finetune/baseline": {1: 0.4}, "finetune/filter/r50": {1: 0.35, 2: 0.55}},
        )


def _runs() -> list[dict]:
    def run(variant: str, method: str, ratio: int, finetuned: bool, mAP: float) -> dict:
        return dict(_metrics(variant, method, ratio, mAP, 100.0, 50.0, 1.0), finetuned=finetuned)

    return [
        run("baseline", "baseline", 0, False, 0.40),
        run("finetune/baseline", "baseline", 0, True, 0.50),
        run("prune/filter/r50", "filter", 50, False, 0.10),
        run("finetune/filter/r50", "filter", 50, True, 0.45),
    ]


def _replicate_files(root: Path, maps: dict[str, dict[int, float]]) -> list[Path]:
    """Accuracy-only records, as evaluate_replicate writes them."""
    paths = []
    for variant, by_seed in maps.items():
        for seed, value in by_seed.items():
            name = replicate_of(variant, seed)
            path = root / name / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"variant": name, "mAP": value, "mAP50": 0.7}))
            paths.append(path)
    return paths


def test_aggregate_folds_replicates_into_their_rows_and_the_report_shows_them(tmp_path):
    metrics = _write_runs(tmp_path / "metrics", _runs())
    plain = aggregate(metrics, tmp_path / "plain.csv")
    assert "seeds" not in plain.columns  # no replicates: the summary is as before

    replicates = _replicate_files(
        tmp_path / "replicates",
        {"finetune/baseline": {1: 0.52, 2: 0.47}, "finetune/filter/r50": {1: 0.46, 2: 0.41}},
    )
    summary = aggregate(metrics, tmp_path / "summary.csv", replicate_paths=replicates)
    assert len(summary) == len(plain)  # replicates are no rows of their own
    by_variant = summary.set_index("variant")
    assert str(summary["seeds"].dtype) == "Int64"
    assert by_variant["seeds"].isna().to_dict() == {
        "baseline": True,
        "finetune/baseline": False,
        "prune/filter/r50": True,
        "finetune/filter/r50": False,
    }
    pruned = by_variant.loc["finetune/filter/r50"]
    assert pruned["seeds"] == 3
    assert pruned["delta_mAP_seed_mean"] == pytest.approx((-0.05 - 0.06 - 0.06) / 3)
    written = pd.read_csv(tmp_path / "summary.csv").set_index("variant")
    assert written.loc["finetune/filter/r50", "seeds"] == 3

    lines = findings(summary)
    seed_line = lines[lines.index("finetune/filter/r50: 90 % of the mAP of finetune/baseline") + 2]
    low, high = pruned["delta_mAP_seed_ci95_low"], pruned["delta_mAP_seed_ci95_high"]
    assert seed_line == (
        f"  over 3 training seeds -0.057 [{low:+.3f}, {high:+.3f}]: significant drop"
    )

    pdf = tmp_path / "report.pdf"
    write_report(summary, [], summarize_config(CONFIG), pdf)
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "Training-seed replicates" in text
    assert "over 3 training seeds" in text
    plain_pdf = tmp_path / "plain.pdf"
    write_report(plain, [], summarize_config(CONFIG), plain_pdf)
    plain_text = "\n".join(page.extract_text() for page in PdfReader(plain_pdf).pages)
    assert "Training-seed replicates" not in plain_text


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"variant": "finetune/filter/r50", "mAP": 0.4}, "is not a seed replicate"),
        ({"variant": "replicate/s1/finetune/filter/r50"}, "key 'mAP' missing or mistyped"),
        ({"variant": "replicate/s1/finetune/filter/r90", "mAP": 0.4}, "'finetune/filter/r90'"),
    ],
)
def test_bad_replicate_records_name_the_file(tmp_path, record, message):
    metrics = _write_runs(tmp_path / "metrics", _runs())
    path = tmp_path / "replicate.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ReportError, match=message) as info:
        aggregate(metrics, tmp_path / "summary.csv", replicate_paths=[path])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "summary.csv").exists()


def test_a_seed_given_twice_is_an_error(tmp_path):
    metrics = _write_runs(tmp_path / "metrics", _runs())
    paths = _replicate_files(tmp_path / "a", {"finetune/filter/r50": {1: 0.4}})
    paths += _replicate_files(tmp_path / "b", {"finetune/filter/r50": {1: 0.4}})
    with pytest.raises(ReportError, match="a second replicate of finetune/filter/r50 with seed 1"):
        aggregate(metrics, tmp_path / "summary.csv", replicate_paths=paths)
