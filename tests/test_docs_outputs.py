"""docs/outputs.md against the code: every column results/summary.csv can have is described
there, and every column described there exists.

The columns are not copied here. They come from ``detrprune.report.summary``: ``aggregate``
builds its table with exactly :data:`SUMMARY_COLUMNS` (always) followed by the
:data:`OPTIONAL_COLUMNS` some row carries, so their union is every column the CSV can have. A
real ``aggregate`` run on inputs that exercise every path (metrics.json, the time_models
latency.json made by the real ``latency_columns``, onnx.json, resamples.npz, seed replicates)
checks that union against the header it writes.

The doc names columns in the first cell of the tables under its "Columns of
``results/summary.csv``" heading, in backticks. A name may be a pattern with placeholders
(``AP_<class>``, ``kitti_AP_<class>_<difficulty>``, ``latency_ms_<part>``, ...), expanded here
from the same constants the code uses; such a row must also name every value it stands for.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from detrprune.constants import (
    CLASSES,
    GMACS_PARTS,
    ITERATIVE_STEP_COLUMNS,
    LATENCY_PARTS,
    SPARSITY_PARTS,
)
from detrprune.evaluate.bootstrap import METRICS
from detrprune.evaluate.kitti_ap import DIFFICULTIES
from detrprune.evaluate.latency import Timing, latency_columns
from detrprune.evaluate.paired import write_resamples
from detrprune.report import report_plots
from detrprune.report.seeds import SEED_COLUMNS
from detrprune.report.summary import (
    LATENCY_COLUMNS,
    ONNX_COLUMNS,
    OPTIONAL_COLUMNS,
    RECORD_COLUMNS,
    SCRATCH_COLUMNS,
    SEMI_STRUCTURED_STR_COLUMNS,
    SUMMARY_COLUMNS,
    aggregate,
)
from detrprune.variants import replicate_of

DOC = Path(__file__).resolve().parent.parent / "docs" / "outputs.md"
SUMMARY_HEADING = "## Columns of `results/summary.csv`"
FIRST_HEADING = "## The ten columns to read first"
STEPS_HEADING = "#### Columns of `steps.csv`"

# What each placeholder of a documented pattern stands for. ``<part>`` depends on the family:
# latency, compute and sparsity are broken down into different parts.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "<class>": CLASSES,
    "<difficulty>": DIFFICULTIES,
}
PART_FAMILIES: dict[str, tuple[str, ...]] = {
    "latency_ms_": LATENCY_PARTS,
    "gmacs_": GMACS_PARTS,
    "sparsity_": SPARSITY_PARTS,
}


# --- the doc ---------------------------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    """The lines under ``heading`` up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    assert len(starts) == 1, f"{DOC.name}: expected one heading {heading!r}, found {len(starts)}"
    level = len(heading) - len(heading.lstrip("#"))
    body = []
    for line in lines[starts[0] + 1 :]:
        hashes = len(line) - len(line.lstrip("#"))
        if 0 < hashes <= level and line[hashes : hashes + 1] == " ":
            break
        body.append(line)
    return "\n".join(body)


def _table_rows(section: str) -> list[tuple[list[str], str]]:
    """(backticked names of the first cell, the whole row) of each body row of each table.

    A table's header is the row above its ``| --- |`` separator; every other row must name
    at least one column, so a row cannot describe a column without naming it checkably.
    """
    lines = [line.strip() for line in section.splitlines()]
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", line):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", lines[i + 1]):
            continue  # the header
        first = line.split("|")[1]
        names = re.findall(r"`([^`]+)`", first)
        assert names, f"{DOC.name}: a table row names no column in backticks: {line}"
        rows.append((names, line))
    return rows


def _expand(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """The columns a documented name stands for, each with the placeholder values it took."""
    slots = re.findall(r"<[^>]+>", name)
    if not slots:
        return [(name, ())]
    choices = []
    for slot in slots:
        if slot == "<part>":
            family = name.split("<part>")[0]
            assert family in PART_FAMILIES, f"{DOC.name}: no parts known for {name!r}"
            choices.append(PART_FAMILIES[family])
        else:
            assert slot in PLACEHOLDERS, f"{DOC.name}: unknown placeholder {slot} in {name!r}"
            choices.append(PLACEHOLDERS[slot])
    expanded = []
    for values in itertools.product(*choices):
        column = name
        for slot, value in zip(slots, values, strict=True):
            column = column.replace(slot, value, 1)
        expanded.append((column, values))
    return expanded


def _documented(section: str) -> dict[str, str]:
    """Each column the tables of ``section`` describe -> the documented name it came from."""
    columns: dict[str, str] = {}
    for names, row in _table_rows(section):
        for name in names:
            expansion = _expand(name)
            values = {value for _, taken in expansion for value in taken}
            # A pattern's row says what its placeholders stand for, so a new part or class
            # in the constants makes the doc's list stale, and this test fails.
            unnamed = sorted(value for value in values if f"`{value}`" not in row)
            assert not unnamed, f"{DOC.name}: the row of {name!r} does not list {unnamed}"
            for column, _ in expansion:
                assert column not in columns, (
                    f"{DOC.name}: {column!r} is described twice ({columns[column]!r}, {name!r})"
                )
                columns[column] = name
    return columns


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC.is_file(), f"{DOC} is missing"
    return DOC.read_text(encoding="utf-8")


# --- the code --------------------------------------------------------------------------------


def _timing(median: float) -> Timing:
    """Three rounds of two CPU runs around ``median`` ms, each split by part."""
    rounds = [[median * f for f in pair] for pair in ((0.98, 1.01), (1.0, 1.03), (0.99, 1.02))]
    share = 1 / len(LATENCY_PARTS)
    parts = [{part: ms * share for part in LATENCY_PARTS} for chunk in rounds for ms in chunk]
    return Timing(rounds=rounds, parts=parts)


def _latency_entries(variants: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """latency.json's ``models``, as the time_models job makes it on a machine with a GPU."""
    timings = {name: _timing(ms) for name, ms in variants.items()}
    cpu = latency_columns(timings, "baseline", seed=0)
    gpu = latency_columns(timings, "baseline", prefix="gpu_", seed=0)
    return {
        name: {
            **cpu[name],
            **gpu[name],
            "latency_device": "cpu (test, 2 threads)",
            "gpu_latency_device": "cuda (test)",
        }
        for name in variants
    }


def _write(path: Path, record: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def _full_run(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """``aggregate`` on inputs that carry everything each of its inputs can: its table and the
    header of the CSV it wrote."""
    variants = {  # variant -> (method, kind, ratio, finetuned, mAP, latency ms)
        "baseline": ("baseline", "baseline", 0, False, 0.40, 100.0),
        "finetune/baseline": ("baseline", "baseline", 0, True, 0.45, 100.0),
        "prune/filter/r50": ("filter", "filter", 50, False, 0.20, 60.0),
        "finetune/filter/r50": ("filter", "filter", 50, True, 0.41, 60.0),
        # Scratch twins of that target, both budgets (pruning.scratch).
        "scratch/filter/r50": ("scratch/filter", "filter", 50, False, 0.30, 60.0),
        "scratch_b/filter/r50": ("scratch_b/filter", "filter", 50, False, 0.45, 60.0),
    }
    latency = _latency_entries({name: spec[5] for name, spec in variants.items()})
    merged = {key for entry in latency.values() for key in entry}
    # What a metrics.json carries: every column not merged from another input.
    in_metrics = [
        c
        for c in (*RECORD_COLUMNS, *OPTIONAL_COLUMNS)
        if c not in merged
        and c not in SEED_COLUMNS
        and c not in ONNX_COLUMNS
        and c not in SCRATCH_COLUMNS
    ]
    assert set(LATENCY_COLUMNS) <= merged
    metrics, resamples = [], []
    for number, (variant, (method, kind, ratio, finetuned, mAP, _)) in enumerate(variants.items()):
        identity = {
            "variant": variant,
            "method": method,
            "kind": kind,
            "scope": "backbone" if kind == "filter" else "none",
            "ratio": ratio,
            "finetuned": finetuned,
            "mAP": mAP,
        }
        record: dict[str, Any] = {}
        for column in in_metrics:
            if column in identity:
                record[column] = identity[column]
            elif column in SEMI_STRUCTURED_STR_COLUMNS:
                record[column] = "text"
            elif column in ("params_total", "params_nonzero"):
                record[column] = 1000 + number
            else:
                record[column] = 0.5 + number / 100
        metrics.append(_write(root / "eval" / variant / "metrics.json", record))
        path = root / "eval" / variant / "resamples.npz"
        rng = np.random.default_rng(number)
        samples = {name: mAP + rng.normal(0.0, 0.01, 50) for name in METRICS}
        write_resamples(path, variant, samples, seed=0, image_ids=range(20))
        resamples.append(path)
    replicates = []
    for variant, sign in (("finetune/baseline", 1), ("finetune/filter/r50", -1)):
        for seed in (1, 2):
            name = replicate_of(variant, seed)
            # The control's mAP rises with the seed, the variant's falls: deltas that vary.
            record = {"variant": name, "mAP": variants[variant][4] + sign * seed / 100}
            replicates.append(_write(root / "eval" / name / "metrics.json", record))
    onnx = _write(
        root / "onnx" / "finetune" / "filter" / "r50" / "onnx.json",
        {"variant": "finetune/filter/r50", **dict.fromkeys(ONNX_COLUMNS, 1.0)},
    )
    latency_json = _write(root / "eval" / "latency.json", {"models": latency})
    out = root / "summary.csv"
    summary = aggregate(metrics, out, [onnx], resamples, replicates, latency_path=latency_json)
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    return summary, header


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[str]]:
    return _full_run(tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="module")
def columns(written: tuple[pd.DataFrame, list[str]]) -> list[str]:
    """Every column summary.csv can have, in the order aggregate writes them."""
    return list(written[1])


# --- the checks ------------------------------------------------------------------------------


def test_a_full_aggregate_writes_every_column_of_the_summary_lists(
    written: tuple[pd.DataFrame, list[str]],
) -> None:
    summary, header = written
    expected = [*SUMMARY_COLUMNS, *OPTIONAL_COLUMNS]
    assert len(set(expected)) == len(expected), "a column is listed twice"
    outside = [c for c in header if c not in expected]
    assert not outside, f"aggregate wrote columns outside SUMMARY/OPTIONAL_COLUMNS: {outside}"
    assert header == expected
    assert list(summary.columns) == expected
    # Every path of aggregate ran: the pairing, the seeds, ONNX and the GPU timing.
    row = summary.set_index("variant").loc["finetune/filter/r50"]
    for column in ("map_kept", "delta_mAP", "seeds", "onnx_max_abs_diff", "gpu_speedup"):
        assert pd.notna(row[column]), column


def test_every_column_of_the_summary_is_described(doc: str, columns: list[str]) -> None:
    described = _documented(_section(doc, SUMMARY_HEADING))
    missing = [c for c in columns if c not in described]
    assert not missing, f"{DOC.name} does not describe these summary.csv columns: {missing}"


def test_every_described_column_exists(doc: str, columns: list[str]) -> None:
    described = _documented(_section(doc, SUMMARY_HEADING))
    stale = sorted(f"{c} (from {name!r})" for c, name in described.items() if c not in columns)
    assert not stale, f"{DOC.name} describes columns summary.csv cannot have: {stale}"


def test_the_first_table_names_real_columns(doc: str, columns: list[str]) -> None:
    rows = _table_rows(_section(doc, FIRST_HEADING))
    names = [column for names, _ in rows for name in names for column, _ in _expand(name)]
    assert len(rows) == 10
    assert not [n for n in names if n not in columns], names


def test_the_steps_table_of_the_iterative_loop_is_described(doc: str) -> None:
    described = _documented(_section(doc, STEPS_HEADING))
    missing = [c for c in ITERATIVE_STEP_COLUMNS if c not in described]
    stale = [c for c in described if c not in ITERATIVE_STEP_COLUMNS]
    assert not missing, f"{DOC.name} does not describe these steps.csv columns: {missing}"
    assert not stale, f"{DOC.name} describes steps.csv columns it does not have: {stale}"


def test_every_plot_of_the_report_is_named(doc: str) -> None:
    missing = [f"{stem}.png" for stem in report_plots(iterative=True) if f"`{stem}.png`" not in doc]
    assert not missing, f"{DOC.name} does not name these plots: {missing}"


def _names(rows: Iterable[tuple[list[str], str]]) -> list[str]:
    return [name for names, _ in rows for name in names]


def test_the_parser_finds_patterns_and_refuses_unknown_ones() -> None:
    section = "\n".join(
        [
            "| column | meaning |",
            "| --- | --- |",
            "| `AP_<class>` | per class: `Car`, `Pedestrian`, `Cyclist` |",
            "| `mAP`, `mAP50` | accuracy |",
        ]
    )
    assert _names(_table_rows(section)) == ["AP_<class>", "mAP", "mAP50"]
    assert set(_documented(section)) == {"mAP", "mAP50", *(f"AP_{c}" for c in CLASSES)}
    with pytest.raises(AssertionError, match="does not list"):
        _documented(section.replace("`Cyclist`", "Cyclist"))
    with pytest.raises(AssertionError, match="unknown placeholder"):
        _expand("AP_<colour>")
