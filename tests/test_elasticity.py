"""Latency elasticity (relative latency drop / relative GMACs drop): its definition, the
explanation by model part (detrprune.evaluate.analysis) and the PDF report's table of it
(detrprune.report.pdf)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from pypdf import PdfReader

from detrprune.evaluate.analysis import elasticity, part_changes, speedup_to_elasticity
from detrprune.report.pdf import elasticity_table, write_report
from detrprune.report.summary import SUMMARY_COLUMNS

NAN = math.nan
DEVICE = "cpu (test, 2 threads)"


def test_elasticity_is_the_latency_drop_per_gmacs_drop():
    assert elasticity(0.45, 0.5) == pytest.approx(0.9)
    assert elasticity(-0.1, 0.5) == pytest.approx(-0.2)  # slower for fewer GMACs
    # No GMACs drop (the baseline, unstructured pruning) or a number missing: not defined.
    for latency, flops in ((0.1, 0.0), (0.1, -0.2), (NAN, 0.5), (0.1, NAN)):
        assert math.isnan(elasticity(latency, flops))
    series = elasticity(pd.Series([0.2, 0.3]), pd.Series([0.4, 0.0]))
    assert series[0] == pytest.approx(0.5) and math.isnan(series[1])
    # A speedup of 2 at 50 % fewer GMACs: latency halves, elasticity 1.
    assert speedup_to_elasticity(2.0, 0.5) == pytest.approx(1.0)
    assert speedup_to_elasticity(1.0, 0.5) == 0.0


def test_part_changes_map_rest_against_other_and_miss_absent_parts():
    summary = pd.DataFrame(
        {
            "variant": ["baseline", "prune/filter/r50"],
            "gmacs_backbone": [6.0, 3.0],
            "gmacs_other": [0.2, 0.1],
            "latency_ms_backbone": [50.0, 45.0],
            "latency_ms_rest": [10.0, 10.0],
        },
        index=[7, 3],  # labels, not positions: the baseline is found by its label
    )
    base, variant = part_changes(summary, summary.loc[7])
    assert base["backbone"]["gmacs_reduction"] == 0.0
    backbone = variant["backbone"]
    assert (backbone["baseline_gmacs"], backbone["gmacs"]) == (6.0, 3.0)
    assert backbone["gmacs_reduction"] == pytest.approx(0.5)
    # The backbone keeps 90 % of its time for half its GMACs: that is where it falls short.
    assert backbone["latency_reduction"] == pytest.approx(0.1)
    assert backbone["elasticity"] == pytest.approx(0.2)
    rest = variant["rest"]
    assert rest["gmacs_part"] == "other" and rest["gmacs_reduction"] == pytest.approx(0.5)
    assert rest["latency_reduction"] == 0.0 and rest["elasticity"] == 0.0
    # Parts the summary has no columns for are there, NaN (older summaries).
    assert math.isnan(variant["encoder"]["gmacs"]) and math.isnan(variant["neck"]["latency_ms"])
    assert list(variant) == ["backbone", "neck", "encoder", "decoder", "head", "rest"]
    # Without a baseline nothing is relative to it.
    assert math.isnan(part_changes(summary, None)[1]["backbone"]["gmacs_reduction"])


def summary_row(variant: str, method: str, kind: str, ratio: int, **values) -> dict:
    """One summary.csv row with every column the report checks for; plausible numbers."""
    row = dict.fromkeys(SUMMARY_COLUMNS, NAN)
    row.update(
        variant=variant,
        method=method,
        kind=kind,
        scope={"filter": "backbone", "weight": "layerwise"}.get(kind, "none"),
        ratio=ratio,
        finetuned=False,
        mAP=0.4,
        mAP50=0.6,
        mAP75=0.35,
        AP_Car=0.5,
        AP_Pedestrian=0.3,
        AP_Cyclist=0.2,
        latency_ms_p90=110.0,
        params_total=40_000_000,
        params_nonzero=40_000_000,
        checkpoint_mb=160.0,
        compression_ratio=1.0,
        latency_device=DEVICE,
        control="" if variant == "baseline" else "baseline",
    )
    row.update(values)
    return row


def summary_table(*kinds: str) -> pd.DataFrame:
    """A baseline (10 GMACs, 100 ms [96, 104]) and rows of the given kinds."""
    rows = [
        summary_row("baseline", "baseline", "baseline", 0, gmacs=10.0, latency_ms_median=100.0,
                    latency_ms_ci95_low=96.0, latency_ms_ci95_high=104.0),
    ]  # fmt: skip
    if "filter" in kinds:
        rows += [
            # 20 % fewer GMACs, 10 % faster: elasticity 0.5
            summary_row("prune/filter/r20", "filter", "filter", 20, gmacs=8.0,
                        latency_ms_median=90.0, latency_ms_ci95_low=85.0,
                        latency_ms_ci95_high=93.0),
            # 50 % fewer GMACs, 45 % faster: 0.9; an older metrics file without the interval
            summary_row("prune/filter/r50", "filter", "filter", 50, gmacs=5.0,
                        latency_ms_median=55.0),
        ]  # fmt: skip
    if "weight" in kinds:
        rows.append(
            summary_row("prune/weight/r90", "weight", "weight", 90, gmacs=10.0,
                        latency_ms_median=98.0)
        )  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS + ["latency_ms_ci95_low",
                                                          "latency_ms_ci95_high"])  # fmt: skip


def test_elasticity_table_has_the_baseline_and_every_filter_row():
    table = elasticity_table(summary_table("filter", "weight"))
    assert table["variant"].tolist() == ["baseline", "prune/filter/r20", "prune/filter/r50"]
    assert table["gmacs_change"].tolist() == pytest.approx([0.0, -20.0, -50.0])
    assert table["latency_change"].tolist() == pytest.approx([0.0, -10.0, -45.0])
    assert math.isnan(table["elasticity"].iloc[0])  # no GMACs drop: not defined
    assert table["elasticity"].tolist()[1:] == pytest.approx([0.5, 0.9])
    assert table["latency_ms_ci95_low"].tolist()[:2] == [96.0, 85.0]
    assert math.isnan(table["latency_ms_ci95_high"].iloc[2])  # n/a in the PDF
    assert str(table["gmacs_change"].iloc[0]) == "0.0"  # not -0.0
    # Without a baseline row nothing is relative to it.
    alone = elasticity_table(summary_table("filter").iloc[1:])
    assert alone["variant"].tolist() == ["prune/filter/r20", "prune/filter/r50"]
    assert alone["elasticity"].isna().all()


def _page_texts(pdf: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(pdf).pages]


def test_the_report_has_the_elasticity_table_with_its_caveat(tmp_path: Path):
    pdf = tmp_path / "report.pdf"
    write_report(summary_table("filter", "weight"), [], {}, pdf)
    texts = _page_texts(pdf)
    page = next(t for t in texts if "Latency elasticity per filter variant" in t)
    assert "prune/filter/r20" in page and "prune/filter/r50" in page
    assert "prune/weight/r90" not in page
    assert "elasticity" in page and "GMACs chg %" in page and "sp low" in page
    assert "-45" in page and "0.9" in page and "n/a" in page
    assert "one process, round-robin" in page and "paired 95 % interval" in page
    assert f"Latency device: {DEVICE}" in page
    # Recovery, summary, detail tables, then this one.
    assert texts.index(page) == 4


def test_the_report_leaves_the_table_out_without_filter_rows(tmp_path: Path):
    pdf = tmp_path / "report.pdf"
    write_report(summary_table("weight"), [], {}, pdf)
    texts = _page_texts(pdf)
    assert not any("Latency elasticity" in t for t in texts)
    assert len(texts) == 6  # the answer, recovery, summary, detail, appendix A and B
