"""Tests of the report stage: summary CSV, plots and PDF built from fake metrics.json files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from detrprune.constants import LATENCY_PARTS
from detrprune.evaluate.paired import write_resamples
from detrprune.report.pdf import summarize_config, write_report
from detrprune.report.plots import figure, make_plots, ratio_label
from detrprune.report.summary import SUMMARY_COLUMNS, ReportError, aggregate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEVICE = "cpu (Intel Xeon Gold 6338, 2 threads)"
BASELINE_MAP = 0.4123

CONFIG: dict[str, Any] = {
    "seed": 17,
    "dataset": {
        "source": "synthetic",
        "synthetic": {"num_scenes": 64, "image_size": [375, 1242]},
        "val_fraction": 0.25,
    },
    "model": {"name": "deformable_detr_r50", "num_queries": 100, "num_classes": 3},
    "train": {"max_iters": 200, "batch_size": 2, "lr": 2e-4},
    "pruning": {
        "methods": {
            "filter": {"kind": "filter", "scope": "backbone", "ratios": [10, 50]},
            "weight": {"kind": "weight", "scope": "layerwise", "ratios": [10, 90]},
        },
        "finetune": {"enabled": True, "iters": 100},
    },
    "evaluate": {"threads": 2, "latency": {"warmup": 3, "runs": 20}, "flops_images": 3},
    "paths": {"results": "results"},
}


def _metrics(
    variant: str, method: str, ratio: int, mAP: float, gmacs: float, latency: float, nz: float
) -> dict[str, Any]:
    """A realistic metrics.json payload; ``nz`` is the non-zero parameter fraction."""
    params_total = 40_123_456 if method != "filter" else int(40_123_456 * (1 - ratio / 200))
    ckpt = 160.5 * params_total / 40_123_456
    return {
        "variant": variant,
        "method": method,
        "kind": method if method in ("filter", "weight") else "baseline",
        "scope": {"filter": "backbone", "weight": "layerwise"}.get(method, "none"),
        "ratio": ratio,
        "finetuned": False,
        "mAP": mAP,
        "mAP50": min(1.0, mAP * 1.62),
        "mAP75": mAP * 0.91,
        "AP_Car": mAP * 1.3,
        "AP_Pedestrian": mAP * 0.7,
        # pycocotools writes -1 when a class has no ground truth in the val split.
        "AP_Cyclist": -1.0 if ratio == 90 else mAP * 0.55,
        "latency_ms_median": latency,
        "latency_ms_p90": latency * 1.08,
        "latency_device": DEVICE,
        "gmacs": gmacs,
        "params_total": params_total,
        "params_nonzero": int(params_total * nz),
        "checkpoint_mb": ckpt,
        "compression_ratio": 160.5 / (ckpt * nz),
        "eval_seconds": 12.5,  # extra key: must be ignored, row kept
        **{
            f"gmacs_{part}": gmacs * share
            for part, share in (("backbone", 0.7), ("neck", 0.05), ("encoder", 0.2))
            + (("decoder", 0.03), ("head", 0.01), ("other", 0.01))
        },
        **{
            f"latency_ms_{part}": latency * share
            for part, share in zip(LATENCY_PARTS, (0.5, 0.03, 0.2, 0.12, 0.05, 0.1), strict=True)
        },
        "latency_ms_parts_sum": latency,
        **{
            f"sparsity_{part}": (1 - nz) * factor
            for part, factor in (("backbone", 1.0), ("encoder", 0.9), ("sampling_offsets", 1.0))
        },
    }


FAKE_RUNS: list[dict[str, Any]] = [
    # Deliberately not in sorted order.
    _metrics("weight_r90", "weight", 90, 0.0213, 173.2, 512.7, 0.10),
    _metrics("filter_r50", "filter", 50, 0.1877, 118.4, 377.1, 1.0),
    _metrics("baseline", "baseline", 0, BASELINE_MAP, 173.2, 515.3, 1.0),
    _metrics("weight_r10", "weight", 10, 0.4101, 173.2, 514.9, 0.90),
    _metrics("filter_r10", "filter", 10, 0.3912, 161.8, 488.2, 1.0),
]
EXPECTED_ORDER = ["baseline", "filter_r10", "filter_r50", "weight_r10", "weight_r90"]


def _write_runs(root: Path, runs: list[dict[str, Any]]) -> list[Path]:
    """Write one metrics.json per run under ``root/<variant>/``."""
    paths = []
    for run in runs:
        path = root / run["variant"] / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run, indent=2), encoding="utf-8")
        paths.append(path)
    return paths


def _build_all(tmp: Path, inputs: list[Path]) -> tuple[Path, list[Path], Path]:
    """Run aggregate + make_plots + write_report into ``tmp``; return CSV, plots, PDF."""
    csv = tmp / "summary.csv"
    summary = aggregate(inputs, csv)
    plots = make_plots(summary, tmp / "plots")
    pdf = tmp / "report.pdf"
    write_report(summary, plots, summarize_config(CONFIG), pdf)
    return csv, plots, pdf


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """The full report built once from the fake runs (plots and PDF are the slow part)."""
    root = tmp_path_factory.mktemp("report")
    inputs = _write_runs(root / "metrics", FAKE_RUNS)
    return _build_all(root / "out", inputs)


def test_aggregate_columns_rows_and_sort(tmp_path: Path) -> None:
    inputs = _write_runs(tmp_path, FAKE_RUNS)
    out_csv = tmp_path / "nested" / "summary.csv"
    summary = aggregate(inputs, out_csv)

    columns = list(summary.columns)
    assert columns[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert all(
        c.startswith(("gmacs_", "sparsity_", "latency_ms_"))
        for c in columns[len(SUMMARY_COLUMNS) :]
    )
    # Where the time goes reaches the summary (evaluate.metrics.cpu_latency's columns).
    assert summary.loc[0, "latency_ms_backbone"] == pytest.approx(0.5 * 515.3)
    assert summary.loc[0, "latency_ms_parts_sum"] == pytest.approx(515.3)
    assert summary["variant"].tolist() == EXPECTED_ORDER
    assert "eval_seconds" not in summary.columns

    back = pd.read_csv(out_csv)
    assert list(back.columns) == columns
    assert back["variant"].tolist() == EXPECTED_ORDER
    assert back["ratio"].tolist() == [0, 10, 50, 10, 90]
    assert back["finetuned"].tolist() == [False] * 5
    assert back.loc[0, "mAP"] == pytest.approx(BASELINE_MAP)
    assert back["latency_device"].unique().tolist() == [DEVICE]
    # -1 from pycocotools means "no ground truth": NaN, not a score.
    assert math.isnan(back.loc[4, "AP_Cyclist"])
    assert math.isnan(summary.loc[4, "AP_Cyclist"])
    assert back.loc[0, "params_total"] == 40_123_456
    # No temporary files left behind by the atomic write.
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["summary.csv"]


def test_outputs_get_normal_permissions(built: tuple[Path, list[Path], Path]) -> None:
    umask = os.umask(0)
    os.umask(umask)
    csv, plots, pdf = built
    for path in (csv, *plots, pdf):
        # The atomic tmp file must not leave a private (0600) mode on the published output.
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_aggregate_sorts_finetuned_after_one_shot(tmp_path: Path) -> None:
    twin = dict(FAKE_RUNS[1], variant="filter_r50_ft", finetuned=True, mAP=0.35)
    new_method = dict(FAKE_RUNS[4], variant="channel_r10", method="channel", scope="backbone+ffn")
    inputs = _write_runs(tmp_path, [twin, *FAKE_RUNS, new_method])
    summary = aggregate(inputs, tmp_path / "summary.csv")
    assert summary["variant"].tolist() == [
        "baseline",
        "channel_r10",
        "filter_r10",
        "filter_r50",
        "filter_r50_ft",
        "weight_r10",
        "weight_r90",
    ]


def test_aggregate_missing_key_names_file_and_key(tmp_path: Path) -> None:
    broken = dict(FAKE_RUNS[1])
    del broken["gmacs"]
    inputs = _write_runs(tmp_path, [FAKE_RUNS[2], broken])
    with pytest.raises(ReportError, match=r"filter_r50.metrics\.json.*'gmacs'"):
        aggregate(inputs, tmp_path / "summary.csv")
    assert not (tmp_path / "summary.csv").exists()


def test_aggregate_duplicate_row_names_file(tmp_path: Path) -> None:
    clone = dict(FAKE_RUNS[4], variant="filter_r10_again")
    inputs = _write_runs(tmp_path, [*FAKE_RUNS, clone])
    with pytest.raises(ReportError, match=r"filter_r10_again.metrics\.json.*duplicate"):
        aggregate(inputs, tmp_path / "summary.csv")


@pytest.mark.parametrize(
    ("key", "value"),
    [("ratio", "30"), ("finetuned", "no"), ("mAP", None), ("method", "")],
)
def test_aggregate_bad_type_names_file_and_key(tmp_path: Path, key: str, value: object) -> None:
    bad = dict(FAKE_RUNS[4], **{key: value})
    inputs = _write_runs(tmp_path, [bad])
    with pytest.raises(ReportError, match=rf"filter_r10.metrics\.json.*'{key}'"):
        aggregate(inputs, tmp_path / "summary.csv")


def test_aggregate_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="metrics.json"):
        aggregate([path], tmp_path / "summary.csv")


def test_plots_are_png_files_in_order(built: tuple[Path, list[Path], Path]) -> None:
    _, plots, _ = built
    assert [p.name for p in plots] == [
        "map_vs_ratio.png",
        "gmacs_vs_ratio.png",
        "latency_vs_ratio.png",
        "accuracy_vs_latency.png",
        "size_vs_ratio.png",
        "gmacs_by_part.png",
        "latency_by_part.png",
        "sparsity_by_part.png",
    ]
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_SIGNATURE), plot
        assert len(data) > 10_000, plot
        assert b"Software" not in data, plot


def test_pdf_pages_and_text(built: tuple[Path, list[Path], Path]) -> None:
    _, plots, pdf = built
    reader = PdfReader(pdf)
    # the answer + recovery, summary, detail and elasticity tables (5 rows each) + one page per
    # plot + the appendix: how to read (1 page) and the settings (1 page)
    assert len(reader.pages) == 1 + 4 + len(plots) + 2
    assert reader.metadata is not None
    assert reader.metadata.get("/Creator") == "detrprune"
    assert "/CreationDate" not in reader.metadata

    title = reader.pages[0].extract_text()
    assert title.startswith("Pruning Deformable DETR on KITTI")
    assert DEVICE in title
    assert "dataset.synthetic.num_scenes" not in title

    recovery = reader.pages[1].extract_text()
    assert "Recovery table" in recovery and "significant" in recovery
    for variant in EXPECTED_ORDER[1:]:  # every row but the baseline has a control
        assert variant in recovery
    table = reader.pages[2].extract_text()
    for variant in EXPECTED_ORDER:
        assert variant in table
    assert "GMACs" in table
    assert "Detail table" in reader.pages[3].extract_text()
    assert "Latency elasticity per filter variant" in reader.pages[4].extract_text()
    assert "map_vs_ratio" in reader.pages[5].extract_text()

    reading, settings = (page.extract_text() for page in reader.pages[-2:])
    assert "Appendix A" in reading and "GMACs" in reading and str(BASELINE_MAP) in reading
    assert "Findings" in reading and "no fine-tuned model has a control" in reading
    assert "Appendix B" in settings
    assert "dataset.synthetic.num_scenes: 64" in settings
    assert "pruning.methods.weight.ratios: [10, 90]" in settings
    assert "pruning.finetune.iters: 100" in settings
    assert "Bohra, Shashidhar, Royce, Ungarala and Shahbas V S" in settings


def test_outputs_are_byte_identical_across_runs(
    tmp_path: Path, built: tuple[Path, list[Path], Path]
) -> None:
    inputs = _write_runs(tmp_path / "metrics", FAKE_RUNS)
    csv, plots, pdf = _build_all(tmp_path / "again", inputs)
    first_csv, first_plots, first_pdf = built
    assert csv.read_bytes() == first_csv.read_bytes()
    for new, old in zip(plots, first_plots, strict=True):
        assert new.read_bytes() == old.read_bytes(), new.name
    assert pdf.read_bytes() == first_pdf.read_bytes()


def test_table_splits_over_pages(tmp_path: Path) -> None:
    runs = [FAKE_RUNS[2]] + [
        _metrics(f"weight_r{r}", "weight", r, 0.4 - r / 300, 173.2, 510.0, 1 - r / 100)
        for r in range(1, 31)
    ]
    summary = aggregate(_write_runs(tmp_path / "m", runs), tmp_path / "summary.csv")
    pdf = tmp_path / "report.pdf"
    write_report(summary, [], {}, pdf)
    reader = PdfReader(pdf)
    # the answer + two pages for each table: recovery (30 rows with a control), summary and
    # detail + the appendix (how to read; the settings)
    assert len(reader.pages) == 1 + 2 + 2 + 2 + 2
    assert "(2/2)" in reader.pages[2].extract_text()


def test_plots_without_baseline(tmp_path: Path) -> None:
    runs = [r for r in FAKE_RUNS if r["method"] != "baseline"]
    summary = aggregate(_write_runs(tmp_path, runs), tmp_path / "summary.csv")
    plots = make_plots(summary, tmp_path / "plots")
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in plots)


def test_write_report_missing_plot(tmp_path: Path) -> None:
    summary = aggregate(_write_runs(tmp_path, FAKE_RUNS), tmp_path / "summary.csv")
    with pytest.raises(ReportError, match="nope.png"):
        write_report(summary, [tmp_path / "nope.png"], {}, tmp_path / "report.pdf")
    assert not (tmp_path / "report.pdf").exists()


def test_summarize_config_picks_keys() -> None:
    picked = summarize_config(CONFIG)
    assert picked["seed"] == 17
    assert picked["dataset"] == {
        "source": "synthetic",
        "synthetic": {"num_scenes": 64},
        "val_fraction": 0.25,
    }
    assert picked["model"]["name"] == "deformable_detr_r50"
    assert picked["train"] == {"max_iters": 200, "batch_size": 2}
    assert picked["pruning"] == CONFIG["pruning"]
    assert picked["evaluate"] == {"threads": 2, "latency": {"warmup": 3, "runs": 20}}
    assert "paths" not in picked


def test_summarize_config_tolerates_missing_keys() -> None:
    assert summarize_config({}) == {}
    assert summarize_config({"dataset": "kitti", "pruning": {"methods": None}}) == {}
    assert summarize_config({"train": {"max_iters": 5}}) == {"train": {"max_iters": 5}}


def test_optional_columns_follow_the_required_ones(tmp_path: Path) -> None:
    from detrprune.report.summary import OPTIONAL_COLUMNS

    runs = [dict(run) for run in FAKE_RUNS]
    runs[0].update(kitti_AP_Car_moderate=0.61, sparse_mb=4.5, kitti_AP_Cyclist_easy=math.nan)
    runs[1].update(sparse_mb=80.0)
    summary = aggregate(_write_runs(tmp_path / "m", runs), tmp_path / "summary.csv")
    extra = [c for c in OPTIONAL_COLUMNS if c in summary.columns]
    assert list(summary.columns) == SUMMARY_COLUMNS + extra
    assert [c for c in extra if not c.startswith(("gmacs_", "sparsity_", "latency_ms_"))] == [
        "kitti_AP_Car_moderate",
        "kitti_AP_Cyclist_easy",
        "sparse_mb",
    ]
    by_variant = summary.set_index("variant")
    assert by_variant.loc["weight_r90", "sparse_mb"] == 4.5
    assert math.isnan(by_variant.loc["baseline", "sparse_mb"])  # absent -> NaN
    runs[0]["sparse_mb"] = "small"
    with pytest.raises(ReportError, match="key 'sparse_mb' must be a number"):
        aggregate(_write_runs(tmp_path / "bad", runs), tmp_path / "bad.csv")


STEPS = pd.DataFrame(
    {
        "step": [1, 2, 3],
        "step_ratio": [0.206] * 3,
        "cumulative_ratio": [0.206, 0.37, 0.5],
        "gmacs": [150.0, 130.0, 115.0],
        "params_nonzero": [30_000_000, 25_000_000, 20_000_000],
        "mAP_before_finetune": [0.30, 0.25, 0.10],
        "mAP_after_finetune": [0.40, 0.38, 0.20],
        "mAP50_after_finetune": [0.60, 0.58, 0.33],
        "map_drop": [0.012, 0.032, 0.212],
        "within_budget": [True, True, False],
        "selected": [False, True, False],
    }
)


def test_iterative_steps_get_a_dual_axis_plot_and_a_table(tmp_path: Path) -> None:
    summary = aggregate(_write_runs(tmp_path / "m", FAKE_RUNS), tmp_path / "summary.csv")
    steps_csv = tmp_path / "steps.csv"
    STEPS.to_csv(steps_csv, index=False)
    steps = pd.read_csv(steps_csv)  # as the report rule reads it: booleans come back as bool
    plots = make_plots(summary, tmp_path / "plots", steps)
    assert plots[-1].name == "iterative_steps.png"
    assert plots[-1].read_bytes().startswith(PNG_SIGNATURE)
    pdf = tmp_path / "report.pdf"
    write_report(summary, plots, {}, pdf, steps)
    text = [page.extract_text() for page in PdfReader(pdf).pages]
    steps_page = next(t for t in text if "Iterative steps" in t)
    assert "0.212" in steps_page and "kept" in steps_page
    with pytest.raises(ReportError, match="missing column 'gmacs'"):
        make_plots(summary, tmp_path / "plots", steps.drop(columns="gmacs"))


def test_onnx_records_join_their_variant_rows(tmp_path: Path) -> None:
    inputs = _write_runs(tmp_path / "m", FAKE_RUNS)
    onnx = tmp_path / "onnx.json"
    onnx.write_text(
        json.dumps(
            {
                "variant": "filter_r50",
                "onnx_max_abs_diff": 2.5e-6,
                "onnx_latency_ms_median": 80.0,
                "torch_forward_latency_ms_median": 105.0,
            }
        )
    )
    summary = aggregate(inputs, tmp_path / "summary.csv", [onnx]).set_index("variant")
    assert summary.loc["filter_r50", "onnx_max_abs_diff"] == pytest.approx(2.5e-6)
    assert summary.loc["filter_r50", "onnx_latency_ms_median"] == 80.0
    assert summary["onnx_latency_ms_median"].isna().sum() == len(FAKE_RUNS) - 1
    onnx.write_text(json.dumps({"variant": "nope_r1", "onnx_max_abs_diff": 0.0}))
    with pytest.raises(ReportError, match=r"onnx\.json: variant 'nope_r1' has no metrics\.json"):
        aggregate(inputs, tmp_path / "summary2.csv", [onnx])


def test_gpu_latency_columns_and_device_reach_the_report(tmp_path: Path) -> None:
    runs = [dict(run) for run in FAKE_RUNS]
    for run in runs:
        run.update(
            gpu_latency_ms_median=21.5,
            gpu_latency_ms_p90=23.0,
            gpu_latency_device="cuda (NVIDIA H200)",
        )
    summary = aggregate(_write_runs(tmp_path / "m", runs), tmp_path / "summary.csv")
    assert (summary["gpu_latency_ms_median"] == 21.5).all()
    assert (summary["gpu_latency_device"] == "cuda (NVIDIA H200)").all()
    pdf = tmp_path / "report.pdf"
    write_report(summary, [], {}, pdf)
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert "GPU: cuda (NVIDIA H200)" in text
    runs[0]["gpu_latency_device"] = 3
    with pytest.raises(ReportError, match="key 'gpu_latency_device' must be a string"):
        aggregate(_write_runs(tmp_path / "bad", runs), tmp_path / "bad.csv")


def test_every_plot_has_a_caption_and_the_report_reads_only_step_columns_the_loop_writes():
    from detrprune.constants import ITERATIVE_STEP_COLUMNS
    from detrprune.report import report_plots
    from detrprune.report.summary import REQUIRED_STEP_COLUMNS

    captions = Path(__file__).resolve().parent.parent / "report"
    for stem in report_plots(iterative=True):
        assert (captions / f"{stem}.rst").is_file(), stem
    assert set(REQUIRED_STEP_COLUMNS) <= set(ITERATIVE_STEP_COLUMNS)


def test_each_row_is_compared_with_its_control_of_equal_training(tmp_path: Path) -> None:
    def run(variant: str, method: str, ratio: int, finetuned: bool, mAP: float) -> dict:
        return dict(_metrics(variant, method, ratio, mAP, 100.0, 50.0, 1.0), finetuned=finetuned)

    runs = [
        run("baseline", "baseline", 0, False, 0.40),
        run("finetune/baseline", "baseline", 0, True, 0.50),
        # Same (method, ratio, finetuned) as finetune/baseline: a control, not a duplicate.
        run("control/iterative", "baseline", 0, True, 0.45),
        run("prune/filter/r50", "filter", 50, False, 0.10),
        run("finetune/filter/r50", "filter", 50, True, 0.40),
        run("iterative", "iterative", 50, True, 0.36),
    ]
    summary = aggregate(_write_runs(tmp_path, runs), tmp_path / "summary.csv").set_index("variant")
    assert summary["control"].to_dict() == {
        "baseline": "",
        "finetune/baseline": "baseline",
        "control/iterative": "baseline",
        "prune/filter/r50": "baseline",
        "finetune/filter/r50": "finetune/baseline",
        "iterative": "control/iterative",
    }
    kept = summary["map_kept"]
    assert math.isnan(kept["baseline"])
    assert kept["finetune/filter/r50"] == pytest.approx(0.40 / 0.50)  # not 0.40 / 0.40
    assert kept["iterative"] == pytest.approx(0.36 / 0.45)
    assert kept["prune/filter/r50"] == pytest.approx(0.10 / 0.40)
    assert kept["finetune/baseline"] == pytest.approx(0.50 / 0.40)
    # A control that was not evaluated leaves the share unknown, not wrong.
    alone = aggregate(_write_runs(tmp_path / "alone", runs[3:5]), tmp_path / "alone.csv")
    assert alone["map_kept"].isna().all()


def test_each_row_is_paired_with_its_control_on_their_shared_resamples(tmp_path: Path) -> None:
    runs = [
        _metrics("baseline", "baseline", 0, 0.40, 100.0, 50.0, 1.0),
        _metrics("prune/filter/r50", "filter", 50, 0.30, 80.0, 45.0, 1.0),
    ]
    metrics = _write_runs(tmp_path, runs)
    resamples = []
    for variant, level in (("baseline", 0.40), ("prune/filter/r50", 0.30)):
        rng = np.random.default_rng(len(variant))
        # The pruned model loses 0.10 on every resample, within +-0.04 of noise of its own.
        shared = np.random.default_rng(0).normal(0.0, 0.05, 400)
        own = rng.uniform(-0.04, 0.04, 400) if variant != "baseline" else 0.0
        samples = {m: level + shared + own for m in ("mAP", "mAP50", "kitti_mAP_moderate")}
        path = tmp_path / variant / "resamples.npz"
        write_resamples(path, variant, samples, seed=3, image_ids=range(40))
        resamples.append(path)
    summary = aggregate(metrics, tmp_path / "summary.csv", resample_paths=resamples)
    row = summary.set_index("variant").loc["prune/filter/r50"]
    assert row["delta_mAP"] == pytest.approx(-0.10)
    assert -0.14 <= row["delta_mAP_ci95_low"] < row["delta_mAP_ci95_high"] <= -0.06
    assert bool(row["significant"])
    # The baseline has no control: its comparison is missing, not "not significant".
    assert pd.isna(summary.set_index("variant").loc["baseline", "significant"])
    back = pd.read_csv(tmp_path / "summary.csv").set_index("variant")
    assert back.loc["prune/filter/r50", "delta_mAP"] == pytest.approx(-0.10)
    # Without the control's resamples the comparison is unknown, not made up.
    alone = aggregate(metrics, tmp_path / "alone.csv", resample_paths=resamples[1:])
    assert alone["delta_mAP"].isna().all() and alone["significant"].isna().all()

    samples = {m: np.zeros(400) for m in ("mAP", "mAP50", "kitti_mAP_moderate")}
    write_resamples(resamples[0], "baseline", samples, seed=4, image_ids=range(40))
    with pytest.raises(ReportError, match="resampled differently"):
        aggregate(metrics, tmp_path / "again.csv", resample_paths=resamples)
    assert not (tmp_path / "again.csv").exists()


def test_the_baseline_training_curve_is_drawn_first_and_judged_on_the_title_page(
    tmp_path: Path,
) -> None:
    from detrprune.report.convergence import read_validations

    curve = tmp_path / "validations.csv"
    curve.write_text(
        "iter,mAP,mAP50\n0,0,0\n70,0.2,0.4\n140,0.3,0.6\n210,0.3,0.64\n280,0.31,0.65\n"
    )
    summary = aggregate(_write_runs(tmp_path / "m", FAKE_RUNS), tmp_path / "summary.csv")
    validations = read_validations(curve)
    plots = make_plots(summary, tmp_path / "plots", validations=validations)
    assert plots[0].name == "baseline_training.png" and len(plots) == 9
    pdf = tmp_path / "report.pdf"
    write_report(summary, plots, {}, pdf, validations=validations)
    pages = [page.extract_text() for page in PdfReader(pdf).pages]
    sentence = "training: converged: mAP gained +0.010 and mAP50 +0.010 from iteration 210 to 280"
    # On the first page beside the answer, and in the appendix with the baseline's numbers.
    assert sentence in " ".join(pages[0].split())
    assert sentence in pages[-2]


RATIO_PLOTS = ("map_vs_ratio", "gmacs_vs_ratio", "latency_vs_ratio", "size_vs_ratio")


def _legend_labels(ax) -> set[str]:
    legend = ax.get_legend()
    return {text.get_text() for text in legend.get_texts()} if legend else set()


def _key_labels(fig) -> set[str]:
    """Every label of every legend of ``fig``."""
    return set().union(*(_legend_labels(ax) for ax in fig.axes))


@pytest.fixture
def summary(tmp_path: Path) -> pd.DataFrame:
    return aggregate(_write_runs(tmp_path, FAKE_RUNS), tmp_path / "summary.csv")


def test_ratio_label_says_what_a_kind_of_ratio_counts() -> None:
    assert ratio_label("filter") == "channels removed (%)"
    assert ratio_label("weight") == "weights zeroed, sparsity (%)"
    assert ratio_label("") == "pruning ratio (%)"
    assert ratio_label("channel") == "pruning ratio (%), channel pruning"


@pytest.mark.parametrize("stem", RATIO_PLOTS)
def test_filter_and_weight_ratios_are_never_on_one_axis(stem: str, summary: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    fig = figure(stem, summary)
    try:
        by_label: dict[str, set[str]] = {}
        for ax in fig.axes:
            by_label.setdefault(ax.get_xlabel(), set()).update(_legend_labels(ax))
    finally:
        plt.close(fig)
    assert set(by_label) == {"channels removed (%)", "weights zeroed, sparsity (%)"}
    # Each axis draws its own kind's methods only (the baseline is on both as the reference).
    assert {"filter", "baseline"} <= by_label["channels removed (%)"]
    assert "weight" not in by_label["channels removed (%)"]
    assert {"weight", "baseline"} <= by_label["weights zeroed, sparsity (%)"]
    assert "filter" not in by_label["weights zeroed, sparsity (%)"]


def test_a_study_of_one_kind_gets_one_panel(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    runs = [r for r in FAKE_RUNS if r["method"] != "weight"]
    summary = aggregate(_write_runs(tmp_path, runs), tmp_path / "summary.csv")
    fig = figure("gmacs_vs_ratio", summary)
    try:
        assert [ax.get_xlabel() for ax in fig.axes] == ["channels removed (%)"]
    finally:
        plt.close(fig)


def test_points_and_steps_name_what_their_ratio_counts(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    iterative = dict(FAKE_RUNS[1], variant="iterative", method="iterative", finetuned=True)
    summary = aggregate(_write_runs(tmp_path, [*FAKE_RUNS, iterative]), tmp_path / "s.csv")
    fig = figure("accuracy_vs_latency", summary)
    try:
        # The key gives each ratio's marker and what it counts for the kinds pruned that far.
        labels = _key_labels(fig)
        assert {"10 % ch/sp", "50 % ch", "90 % sp"} <= labels
        assert {"ch = channels removed (%)", "sp = weights zeroed, sparsity (%)"} <= labels
    finally:
        plt.close(fig)
    # The loop's steps table has no kind: the summary's iterative row gives it.
    fig = figure("iterative_steps", summary, STEPS)
    try:
        assert fig.axes[0].get_xlabel() == "step (cumulative channels removed, %)"
    finally:
        plt.close(fig)


def test_gpu_latency_is_drawn_beside_cpu_only_where_measured(summary: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    def ylabels(table: pd.DataFrame) -> list[str]:
        fig = figure("latency_vs_ratio", table)
        try:
            return [ax.get_ylabel() for ax in fig.axes]
        finally:
            plt.close(fig)

    cpu_only = ylabels(summary)
    assert set(cpu_only) == {"CPU latency per image, batch 1 (ms)"}
    gpu = summary.copy()
    gpu["gpu_latency_ms_median"] = np.nan
    gpu["gpu_latency_device"] = None
    assert ylabels(gpu) == cpu_only  # a column of NaN is no GPU measurement
    gpu["gpu_latency_ms_median"] = gpu["latency_ms_median"] / 20
    gpu["gpu_latency_device"] = "cuda (NVIDIA H200)"
    labels = ylabels(gpu)
    assert labels.count("GPU latency per image, batch 1 (ms)") == len(cpu_only)
    assert labels.count("CPU latency per image, batch 1 (ms)") == len(cpu_only)


def test_latency_by_part_stacks_the_parts_beside_gmacs_by_part(summary: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    gmacs = figure("gmacs_by_part", summary)
    latency = figure("latency_by_part", summary)
    try:
        (g_ax,), (l_ax,) = gmacs.axes, latency.axes
        ticks = [t.get_text() for t in l_ax.get_xticklabels()]
        assert ticks == [t.get_text() for t in g_ax.get_xticklabels()]
        assert ticks == ["baseline", "filter_r10", "filter_r50"]
        assert _legend_labels(l_ax) >= set(LATENCY_PARTS)
        # One bar per part and variant, stacked bottom-up in LATENCY_PARTS order.
        assert len(l_ax.patches) == len(LATENCY_PARTS) * len(ticks)
        rows = summary.set_index("variant").loc[ticks]
        tops = np.zeros(len(ticks))
        for i, part in enumerate(LATENCY_PARTS):
            bars = l_ax.patches[i * len(ticks) : (i + 1) * len(ticks)]
            assert [b.get_y() for b in bars] == pytest.approx(tops)
            heights = [b.get_height() for b in bars]
            assert heights == pytest.approx(rows[f"latency_ms_{part}"].to_numpy())
            tops += heights
        # The median total is marked over each stack.
        (line,) = [ln for ln in l_ax.lines if ln.get_marker() == "_"]
        assert list(line.get_ydata()) == pytest.approx(rows["latency_ms_median"].to_numpy())
    finally:
        plt.close(gmacs)
        plt.close(latency)
    old = summary.drop(columns=[f"latency_ms_{part}" for part in LATENCY_PARTS])
    empty = figure("latency_by_part", old)
    try:
        assert [t.get_text() for t in empty.axes[0].texts] == ["no per-part latency in the metrics"]
    finally:
        plt.close(empty)


def test_two_four_rows_get_their_gpu_table_or_the_reason_they_were_not_timed(
    tmp_path: Path,
) -> None:
    runs = [dict(run) for run in FAKE_RUNS]
    timed, skipped = runs[0], runs[1]
    timed.update(
        linears_2to4=22,
        gpu_latency_ms_median_dense_fp16=12.5,
        gpu_latency_ms_median_2to4=11.0,
        gpu_speedup_2to4=12.5 / 11.0,
        gpu_2to4_backend="cusparselt",
        gpu_2to4_skipped_reason=None,
    )
    skipped.update(
        linears_2to4=22,
        gpu_latency_ms_median_dense_fp16=None,
        gpu_latency_ms_median_2to4=None,
        gpu_speedup_2to4=None,
        gpu_2to4_skipped_reason="no CUDA device: 2:4 sparse kernels need a CUDA GPU",
    )
    summary = aggregate(_write_runs(tmp_path / "m", runs), tmp_path / "summary.csv")
    rows = summary.set_index("variant")
    assert rows.loc[timed["variant"], "gpu_speedup_2to4"] == pytest.approx(12.5 / 11.0)
    assert math.isnan(rows.loc[skipped["variant"], "gpu_speedup_2to4"])
    assert summary["linears_2to4"].notna().sum() == 2
    pdf = tmp_path / "report.pdf"
    write_report(summary, [], {}, pdf)
    texts = [page.extract_text() for page in PdfReader(pdf).pages]
    page = next(t for t in texts if "2:4 semi-structured sparsity on the GPU" in t)
    assert timed["variant"] in page and skipped["variant"] in page
    assert "1.136" in page and "cusparselt" in page
    assert "Not timed: no CUDA device" in page
    # Without 2:4 rows there is no such page.
    plain = tmp_path / "plain.pdf"
    write_report(
        aggregate(_write_runs(tmp_path / "p", FAKE_RUNS), tmp_path / "p.csv"), [], {}, plain
    )
    assert not any("2:4 semi" in page.extract_text() for page in PdfReader(plain).pages)


# --------------------------------------------------------------------------------------------
# the first page: the answer and the accuracy-vs-speed figure with its Pareto front
# --------------------------------------------------------------------------------------------


def test_the_pareto_front_is_exactly_the_non_dominated_points() -> None:
    from detrprune.report.pareto import pareto_front

    nan = math.nan
    table = pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
            "speedup": [1.0, 1.5, 2.0, 1.5, 2.0, nan, 3.0, 0.5, 1.2],
            "mAP": [0.5, 0.45, 0.3, 0.45, 0.2, 0.9, nan, 0.5, 0.44],
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17, 18],
    )
    front = pareto_front(table, "speedup", "mAP")
    # b and d tie: both stay; e (same speed as c, lower mAP), h (same mAP as a, slower) and i
    # (beaten by b) are dominated; f and g have a missing value: left out, dominating nothing.
    assert front["variant"].tolist() == ["a", "b", "d", "c"]
    assert front.index.tolist() == [10, 11, 13, 12]
    # The same front on latency, where lower is better, joined in latency order.
    table["latency"] = 100.0 / table["speedup"]
    by_latency = pareto_front(table, "latency", "mAP", maximize_x=False)
    assert by_latency["variant"].tolist() == ["c", "b", "d", "a"]
    assert pareto_front(table.iloc[5:7], "speedup", "mAP").empty
    assert pareto_front(table.iloc[:1], "speedup", "mAP")["variant"].tolist() == ["a"]


def _compared(tmp_path: Path) -> pd.DataFrame:
    """A study with controls, fine-tuned twins, the iterative loop and collapsed models, its
    comparisons (delta +- 0.02) and speedups (+- 10 %) filled in as aggregate would."""
    spec = [
        # variant, method, kind, ratio, fine-tuned, mAP, latency ms, non-zero fraction
        ("baseline", "baseline", "baseline", 0, False, 0.45, 100.0, 1.0),
        ("finetune/baseline", "baseline", "baseline", 0, True, 0.46, 100.0, 1.0),
        ("control/iterative", "baseline", "baseline", 0, True, 0.44, 100.0, 1.0),
        ("prune/filter/r10", "filter", "filter", 10, False, 0.44, 95.0, 1.0),
        ("prune/filter/r50", "filter", "filter", 50, False, 0.20, 70.0, 1.0),
        ("finetune/filter/r10", "filter", "filter", 10, True, 0.46, 95.0, 1.0),
        ("finetune/filter/r50", "filter", "filter", 50, True, 0.46, 70.0, 1.0),
        ("prune/weight/r90", "weight", "weight", 90, False, 0.01, 100.0, 0.1),
        ("finetune/weight/r10", "weight", "weight", 10, True, 0.46, 101.0, 0.9),
        ("finetune/weight/r90", "weight", "weight", 90, True, 0.02, 100.0, 0.1),
        ("iterative", "iterative", "filter", 50, True, 0.40, 60.0, 1.0),
    ]
    runs = [
        dict(
            _metrics(variant, method, ratio, mAP, 100.0, latency, nz),
            kind=kind,
            finetuned=finetuned,
            scope="none" if kind == "baseline" else "backbone",
        )
        for variant, method, kind, ratio, finetuned, mAP, latency, nz in spec
    ]
    summary = aggregate(_write_runs(tmp_path, runs), tmp_path / "summary.csv")
    maps = summary.set_index("variant")["mAP"]
    has = summary["control"] != ""
    delta = summary["mAP"] - summary["control"].map(maps)
    summary.loc[has, "delta_mAP"] = delta[has]
    summary.loc[has, "delta_mAP_ci95_low"] = delta[has] - 0.02
    summary.loc[has, "delta_mAP_ci95_high"] = delta[has] + 0.02
    summary["significant"] = (summary["delta_mAP_ci95_low"] > 0) | (
        summary["delta_mAP_ci95_high"] < 0
    )
    summary["speedup"] = 100.0 / summary["latency_ms_median"]
    summary["speedup_ci95_low"] = summary["speedup"] * 0.9
    summary["speedup_ci95_high"] = summary["speedup"] * 1.1
    return summary


def test_the_tradeoff_draws_every_model_and_its_key_names_each_without_covering_one(
    tmp_path: Path,
) -> None:
    import matplotlib.pyplot as plt

    from detrprune.report.pareto import pareto_front
    from detrprune.report.plots import report_style

    summary = _compared(tmp_path)
    with report_style():
        fig = figure("accuracy_vs_latency", summary)
    try:
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1  # one key, in axes of its own
        (key,) = legends
        plots = [ax for ax in fig.axes if ax.get_legend() is None and ax.axison]
        # Every model is a point, once per panel (the zoomed band and all models).
        for ax in plots:
            drawn = {line.get_gid() for line in ax.lines if line.get_gid()}
            assert drawn == set(summary["variant"])
        # The key covers no panel and stays on the figure.
        box = key.get_window_extent()
        for ax in plots:
            assert not box.overlaps(ax.get_window_extent())
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
        # It names each point's method (or the reference's own name), ratio and training.
        labels = _key_labels(fig)
        assert {"filter", "weight", "iterative"} <= labels
        assert {"baseline", "finetune/baseline", "control/iterative"} <= labels
        assert {"10 % ch/sp", "50 % ch", "90 % sp"} <= labels
        assert {"fine-tuned (filled)", "zero-shot (hollow)", "Pareto front"} <= labels
        # The front's models by name, and the line joining them, in every panel.
        front = pareto_front(summary, "speedup", "mAP")
        assert front["variant"].tolist() == ["finetune/filter/r50", "iterative"]
        assert set(front["variant"]) <= labels
        for ax in plots:
            joined = [
                line
                for line in ax.lines
                if list(line.get_xdata()) == pytest.approx(front["speedup"].tolist())
            ]
            assert len(joined) == 1
    finally:
        plt.close(fig)


def test_page_one_gives_the_answer_then_the_tables_the_plots_and_the_settings(
    tmp_path: Path,
) -> None:
    import re

    summary = _compared(tmp_path)
    plots = make_plots(summary, tmp_path / "plots")
    pdf = tmp_path / "report.pdf"
    write_report(summary, plots, summarize_config(CONFIG), pdf)
    pages = [page.extract_text() for page in PdfReader(pdf).pages]
    first = pages[0]
    lines = first.splitlines()
    # The title, the study it reproduces, then the answer: no configuration on page 1.
    assert lines[0] == "Pruning Deformable DETR on KITTI"
    assert lines[2].startswith('Reproduces "Pruning Deformable DETR on KITTI" by Bohra,')
    assert "https://github.com/ebcoders/Road-Object-Detection" in lines[3]
    assert lines[4] == "This run"
    assert f"timed on {DEVICE}" in lines[5]
    assert not re.search(r"^\s*(seed|dataset|model|train|pruning|evaluate)\.?\w*:", first, re.M)
    assert "Configuration" not in first
    # Each method's highest ratio with no significant drop, its interval, speedup and size.
    assert re.search(
        r"filter\s+ft\s+50 % \(max\)\s+\+0\.000 \[-0\.020, \+0\.020\]\s+"
        r"1\.43x \[1\.29, 1\.57\] faster\s+75 % params",
        first,
    )
    assert re.search(r"filter\s+0-shot\s+10 %\s+-0\.010 \[-0\.030, \+0\.010\]", first)
    assert re.search(r"weight\s+ft\s+10 %\s+\+0\.000 .* 0\.99x \[0\.89, 1\.09\] n\.s\.", first)
    assert re.search(r"iterative\s+ft\s+none \(50 %\)\s+-0\.040 \[-0\.060, -0\.020\]", first)
    assert "Collapsed: 3 model(s)" in first and "prune/weight/r90 (0.010)" in first
    # The figure's key on the same page names the front's models.
    assert "on the Pareto front" in first and "finetune/filter/r50" in first
    assert not any("goal" in page.lower() for page in pages)

    def index(heading: str) -> int:
        return next(i for i, page in enumerate(pages) if heading in page)

    # Tables, then plots, then the appendix; the configuration at the very end.
    assert 0 < index("Recovery table") < index("Summary table") < index("map_vs_ratio")
    assert index("sparsity_by_part") < index("Appendix A") < index("Appendix B")
    assert index("dataset.synthetic.num_scenes: 64") == len(pages) - 1
    assert "Bohra, Shashidhar, Royce, Ungarala and Shahbas V S" in pages[-1]
