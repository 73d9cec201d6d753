"""The summary table: every evaluated variant's ``metrics.json`` (and ``onnx.json``) merged
into ``results/summary.csv``, one row per variant with fixed columns and dtypes (seed replicates
are folded into their variant's row), and the checks the plots and the PDF apply to it and to the
iterative loop's step table."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from detrprune.constants import (
    CLASSES,
    GMACS_PARTS,
    LATENCY_PARTS,
    SEMI_STRUCTURED_COLUMNS,
    SEMI_STRUCTURED_TEXT_COLUMNS,
    SPARSITY_PARTS,
)
from detrprune.evaluate.paired import PairingError, Resamples, compare_with_control, read_resamples
from detrprune.jobs import atomic_output
from detrprune.report.seeds import SEED_COLUMNS, ReplicateError, add_seed_replicates
from detrprune.variants import SCRATCH_FOLDERS, control_of, is_control, split_replicate

log = logging.getLogger(__name__)

# What every metrics.json must hold.
RECORD_COLUMNS: list[str] = [
    "variant",
    "method",
    "kind",
    "scope",
    "ratio",
    "finetuned",
    "mAP",
    "mAP50",
    "mAP75",
    *[f"AP_{cls}" for cls in CLASSES],
    "latency_ms_median",
    "latency_ms_p90",
    "gmacs",
    "params_total",
    "params_nonzero",
    "checkpoint_mb",
    "compression_ratio",
    "latency_device",
]

# From results/eval/latency.json (rule time_models: every model timed in one process,
# interleaved), never from a metrics.json of the workflow.
LATENCY_COLUMNS: tuple[str, ...] = ("latency_ms_median", "latency_ms_p90", "latency_device")
# What a metrics.json itself must hold.
METRICS_COLUMNS: list[str] = [c for c in RECORD_COLUMNS if c not in LATENCY_COLUMNS]

# Each row's control of equal training (detrprune.variants) and the share of the control's
# mAP the row keeps: the comparison a reviewer accepts, unlike one with the shorter-trained
# baseline.
# From the variant's and its control's results/eval/<variant>/resamples.npz: the mAP difference
# to the control with its paired bootstrap interval, and whether that interval excludes 0.
PAIRED_COLUMNS: list[str] = [
    "delta_mAP",
    "delta_mAP_ci95_low",
    "delta_mAP_ci95_high",
    "significant",
]
COMPARISON_COLUMNS: list[str] = ["control", "map_kept", *PAIRED_COLUMNS]
SUMMARY_COLUMNS: list[str] = [*RECORD_COLUMNS, *COMPARISON_COLUMNS]

BASELINE_METHOD = "baseline"

# Column kinds, used to validate each metrics.json and to give the DataFrame stable dtypes.
# Numeric columns that follow SUMMARY_COLUMNS whenever a metrics.json carries them (later
# evaluation stages add them; older files without them still aggregate, as NaN).
OPTIONAL_COLUMNS: list[str] = [
    # Bootstrap intervals (evaluate.bootstrap) over the val images for accuracy.
    *[f"{m}_ci95_{end}" for m in ("mAP", "mAP50", "kitti_mAP_moderate") for end in ("low", "high")],
    # From latency.json (evaluate.latency): the median's interval over the timed runs, the
    # speedup over the baseline (its median / the row's) with its interval over paired rounds,
    # and where the CPU time goes: each part's median over the runs and the sum of those.
    "latency_ms_ci95_low",
    "latency_ms_ci95_high",
    "speedup",
    "speedup_ci95_low",
    "speedup_ci95_high",
    *[f"latency_ms_{part}" for part in LATENCY_PARTS],
    "latency_ms_parts_sum",
    *[f"kitti_AP_{cls}_{level}" for cls in CLASSES for level in ("easy", "moderate", "hard")],
    "kitti_mAP_moderate",
    "sparse_mb",
    "sparse_bound_mb",
    # What pruning reached against the baseline (evaluate.metrics.reached_fractions), beside
    # the ratio it was asked for.
    "kept_channel_fraction",
    "params_fraction",
    "gops_elementwise",
    *[f"gmacs_{part}" for part in GMACS_PARTS],
    *[f"sparsity_{part}" for part in SPARSITY_PARTS],
]
# From results/onnx/<variant>/onnx.json, for the exported (final) variants only.
ONNX_COLUMNS = (
    "onnx_max_abs_diff",
    "onnx_latency_ms_median",
    "torch_forward_latency_ms_median",
)
# Timed by time_models only where CUDA is available; the device names the GPU.
GPU_COLUMNS = (
    "gpu_latency_ms_median",
    "gpu_latency_ms_p90",
    "gpu_latency_ms_ci95_low",
    "gpu_latency_ms_ci95_high",
    "gpu_speedup",
    "gpu_speedup_ci95_low",
    "gpu_speedup_ci95_high",
)
OPTIONAL_COLUMNS += [*ONNX_COLUMNS, *GPU_COLUMNS, "gpu_latency_device"]
# Models with 2:4 Linears (evaluate.semi_structured.time_semi_structured): how many, and on a
# GPU with sparse tensor cores the dense fp16 vs 2:4 end-to-end times. Elsewhere the metrics.json
# holds None for the timings and the skip reason; None reads as missing here. The per-layer
# speedups are dicts and stay in metrics.json.
SEMI_STRUCTURED_NUMBER_COLUMNS = ("linears_2to4", *SEMI_STRUCTURED_COLUMNS)
SEMI_STRUCTURED_STR_COLUMNS = (*SEMI_STRUCTURED_TEXT_COLUMNS, "gpu_2to4_skipped_reason")
OPTIONAL_COLUMNS += [*SEMI_STRUCTURED_NUMBER_COLUMNS, *SEMI_STRUCTURED_STR_COLUMNS]
_OPTIONAL_STR_COLUMNS = ("gpu_latency_device", *SEMI_STRUCTURED_STR_COLUMNS)
# Computed from the seed replicates (report.seeds), never read from a metrics.json.
OPTIONAL_COLUMNS += SEED_COLUMNS
# A fine-tuned target against its scratch twins (pruning.scratch; detrprune.train.scratch): its
# mAP minus the twin's, on the same resamples, and whether pruning beat training the pruned
# architecture from scratch (the interval above 0), per budget (scratch: e, scratch_b: b).
SCRATCH_COLUMNS: tuple[str, ...] = tuple(
    f"delta_vs_{folder}_{suffix}"
    for folder in SCRATCH_FOLDERS.values()
    for suffix in ("mAP", "mAP_ci95_low", "mAP_ci95_high")
) + tuple(f"beats_{folder}" for folder in SCRATCH_FOLDERS.values())
_BEATS_COLUMNS = tuple(c for c in SCRATCH_COLUMNS if c.startswith("beats_"))
OPTIONAL_COLUMNS += SCRATCH_COLUMNS
_NULLABLE_COLUMNS = (*SEMI_STRUCTURED_NUMBER_COLUMNS, *SEMI_STRUCTURED_STR_COLUMNS)

_STR_COLUMNS = ("variant", "method", "kind", "scope", "latency_device")
# The numeric columns latency.json gives (latency_device and gpu_latency_device are strings).
_TIMED = ("latency_ms_", "speedup", "gpu_latency_ms_", "gpu_speedup")
_INT_COLUMNS = ("ratio", "params_total", "params_nonzero")
_BOOL_COLUMNS = ("finetuned",)
_FLOAT_COLUMNS = tuple(
    c for c in RECORD_COLUMNS if c not in _STR_COLUMNS + _INT_COLUMNS + _BOOL_COLUMNS
)
# pycocotools reports -1 for an AP it cannot compute (no ground truth); that is "missing", not
# a terrible score, so it becomes NaN before it can drag averages or plots down.
_AP_COLUMNS = ("mAP", "mAP50", "mAP75", *[f"AP_{cls}" for cls in CLASSES])

_CSV_FLOAT_FORMAT = "%.6g"

# The iterative steps.csv columns the plot and the PDF need (of ITERATIVE_STEP_COLUMNS).
REQUIRED_STEP_COLUMNS = (
    "step",
    "cumulative_ratio",
    "gmacs",
    "mAP_before_finetune",
    "mAP_after_finetune",
    "map_drop",
    "selected",
)


class ReportError(ValueError):
    """Raised when metrics files or the summary table cannot be turned into a report."""


def _is_number(value: object) -> bool:
    """True for int/float JSON values; bool is excluded although it subclasses int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_record(record: object, path: Path) -> dict[str, Any]:
    """Check one parsed metrics.json and return its summary columns with normalised types."""
    if not isinstance(record, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(record).__name__}")
    row: dict[str, Any] = {}
    for key in RECORD_COLUMNS:
        if key not in record:
            if key in LATENCY_COLUMNS:
                continue  # from latency.json (checked once merged)
            raise ReportError(f"{path}: missing required key '{key}'")
        value = record[key]
        if key in _STR_COLUMNS:
            if not isinstance(value, str) or not value:
                raise ReportError(f"{path}: key '{key}' must be a non-empty string, got {value!r}")
            row[key] = value
        elif key in _BOOL_COLUMNS:
            if not isinstance(value, bool):
                raise ReportError(f"{path}: key '{key}' must be a boolean, got {value!r}")
            row[key] = value
        elif key in _INT_COLUMNS:
            # json.dump of a float that happens to be integral (30.0) is still a valid ratio.
            if not _is_number(value) or not float(value).is_integer():
                raise ReportError(f"{path}: key '{key}' must be an integer, got {value!r}")
            row[key] = int(value)
        else:
            if not _is_number(value):
                raise ReportError(f"{path}: key '{key}' must be a number, got {value!r}")
            number = float(value)
            if key in _AP_COLUMNS and number < 0:
                number = math.nan
            row[key] = number
    for key in OPTIONAL_COLUMNS:
        if key in SCRATCH_COLUMNS:
            continue  # computed from the twins' resamples, never read
        if key in _NULLABLE_COLUMNS and key in record and record[key] is None:
            row[key] = None if key in _OPTIONAL_STR_COLUMNS else math.nan
        elif key in record and key in _OPTIONAL_STR_COLUMNS:
            if not isinstance(record[key], str):
                raise ReportError(f"{path}: key '{key}' must be a string, got {record[key]!r}")
            row[key] = record[key]
        elif key in record:
            value = record[key]
            if not _is_number(value):
                raise ReportError(f"{path}: key '{key}' must be a number, got {value!r}")
            row[key] = float(value)
    return row


def _sort_key(row: Mapping[str, Any]) -> tuple[bool, str, bool, int]:
    """Baseline first, then by method name, fine-tuned after not, then by ratio."""
    return (row["method"] != BASELINE_METHOD, row["method"], row["finetuned"], row["ratio"])


def check_summary(summary: pd.DataFrame) -> None:
    """Raise ReportError if ``summary`` is not a non-empty table with all summary columns."""
    for column in SUMMARY_COLUMNS:
        if column not in summary.columns:
            raise ReportError(f"summary table: missing column '{column}'")
    if summary.empty:
        raise ReportError("summary table: no rows")


def baseline_row(summary: pd.DataFrame) -> pd.Series | None:
    """Return the (non fine-tuned if possible) baseline row, or None when there is none."""
    base = summary[summary["method"] == BASELINE_METHOD]
    if base.empty:
        return None
    plain = base[~base["finetuned"].astype(bool)]
    return (plain if not plain.empty else base).iloc[0]


def check_steps(steps: pd.DataFrame) -> None:
    """Raise ReportError if the iterative steps table lacks a needed column or has no rows."""
    for column in REQUIRED_STEP_COLUMNS:
        if column not in steps.columns:
            raise ReportError(f"iterative steps table: missing column '{column}'")
    if steps.empty:
        raise ReportError("iterative steps table: no rows")


def aggregate(
    metrics_paths: Sequence[Path],
    out_csv: Path,
    onnx_paths: Sequence[Path] = (),
    resample_paths: Sequence[Path] = (),
    replicate_paths: Sequence[Path] = (),
    latency_path: Path | None = None,
) -> pd.DataFrame:
    """Merge per-variant ``metrics.json`` files into one summary table and write it as CSV.

    Args:
        metrics_paths: one metrics.json per evaluated variant.
        out_csv: where the CSV goes (written atomically, byte-stable float format).
        onnx_paths: ``onnx.json`` records of exported variants; their parity and latency
            columns (:data:`ONNX_COLUMNS`) join the row of the same ``variant``.
        resample_paths: ``resamples.npz`` files (:mod:`detrprune.evaluate.paired`); a row
            whose own and whose control's file are both given gets the paired
            :data:`PAIRED_COLUMNS` (NaN / NA otherwise).
        replicate_paths: metrics.json files of seed replicates (``replicate/s<seed>/<variant>``);
            each replicated row gets :data:`~detrprune.report.seeds.SEED_COLUMNS`, its mAP and
            its delta to the control over the seeds.
        latency_path: ``latency.json`` of the ``time_models`` rule; every row takes its
            latency columns from there (:data:`LATENCY_COLUMNS`, the speedup, the parts and
            on a GPU the ``gpu_`` columns). Without it, each metrics.json must carry them.

    Returns:
        The summary table: one row per file, columns :data:`SUMMARY_COLUMNS` in that order,
        sorted baseline first, then by method, finetuned, ratio. AP values of -1 become NaN.
        ``control`` names each row's control of equal training (:mod:`detrprune.variants`),
        ``map_kept`` is the row's mAP over the control's (NaN when it is not among the inputs
        or its mAP is not positive).

    Raises:
        ReportError: unreadable file, missing/mistyped key, two files describing the same
            (method, ratio, finetuned) variant, or resamples or replicates that cannot be
            paired.
    """
    if not metrics_paths:
        raise ReportError(f"{out_csv}: no metrics files given")
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int, bool] | str, Path] = {}
    for raw_path in metrics_paths:
        path = Path(raw_path)
        row = _validate_record(_read_json(path, "metrics"), path)
        # The baseline's fine-tuned twins share (method, ratio, finetuned); their names differ.
        identity = (
            row["variant"]
            if is_control(row["variant"])
            else (row["method"], row["ratio"], row["finetuned"])
        )
        if identity in seen:
            raise ReportError(
                f"{path}: duplicate (method, ratio, finetuned) = {identity}, "
                f"already given by {seen[identity]}"
            )
        seen[identity] = path
        rows.append(row)

    paths = dict(zip([row["variant"] for row in rows], map(Path, metrics_paths), strict=True))
    if latency_path is not None:
        _merge_latency(rows, Path(latency_path))
    for row in rows:
        missing = [key for key in LATENCY_COLUMNS if key not in row]
        if missing:
            raise ReportError(
                f"{paths[row['variant']]}: missing required key '{missing[0]}' "
                "(and no latency.json gives it)"
            )
    _merge_onnx(rows, onnx_paths)
    _add_comparisons(rows)
    _add_scratch(rows, _add_paired(rows, resample_paths))
    try:
        add_seed_replicates(rows, _read_replicates(replicate_paths))
    except ReplicateError as exc:
        raise ReportError(f"{out_csv}: {exc}") from exc
    rows.sort(key=_sort_key)
    optional = [c for c in OPTIONAL_COLUMNS if any(c in row for row in rows)]
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS + optional)
    summary = summary.astype(
        {
            **{c: "int64" for c in _INT_COLUMNS},
            **{c: "bool" for c in _BOOL_COLUMNS},
            **{c: "float64" for c in _FLOAT_COLUMNS},
            "map_kept": "float64",
            **{c: "float64" for c in PAIRED_COLUMNS if c != "significant"},
            "significant": "boolean",
            **{
                c: "float64"
                for c in optional
                if c not in _OPTIONAL_STR_COLUMNS and c not in _BEATS_COLUMNS
            },
            **({"seeds": "Int64"} if "seeds" in optional else {}),
            **{c: "boolean" for c in _BEATS_COLUMNS if c in optional},
        }
    )

    with atomic_output(Path(out_csv)) as (tmp,):
        summary.to_csv(tmp, index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    log.info("wrote %s (%d variants)", out_csv, len(summary))
    return summary


def _add_comparisons(rows: list[dict[str, Any]]) -> None:
    """Name each row's control and the share of its mAP the row keeps (NaN without one)."""
    maps = {row["variant"]: row["mAP"] for row in rows}
    for row in rows:
        control = control_of(row["variant"])
        row["control"] = control or ""
        control_map = maps.get(control, math.nan) if control else math.nan
        row["map_kept"] = row["mAP"] / control_map if control_map > 0 else math.nan


def _add_paired(rows: list[dict[str, Any]], resample_paths: Sequence[Path]) -> dict[str, Resamples]:
    """Pair each row with its control on their shared resamples (missing ones stay NaN / NA);
    returns the resamples by variant."""
    by_variant = {row["variant"]: row for row in rows}
    resamples: dict[str, Resamples] = {}
    for raw_path in resample_paths:
        path = Path(raw_path)
        try:
            loaded = read_resamples(path)
        except PairingError as exc:
            raise ReportError(str(exc)) from exc
        if loaded.variant not in by_variant:
            raise ReportError(
                f"{path}: variant {loaded.variant!r} has no metrics.json among the inputs"
            )
        resamples[loaded.variant] = loaded
    for row in rows:
        row.update({c: math.nan for c in PAIRED_COLUMNS if c != "significant"}, significant=None)
        control = row["control"]
        if row["variant"] in resamples and control in resamples:
            try:
                paired = compare_with_control(
                    resamples[row["variant"]],
                    resamples[control],
                    row["mAP"],
                    by_variant[control]["mAP"],
                )
            except PairingError as exc:
                raise ReportError(str(exc)) from exc
            row.update({key: paired[key] for key in PAIRED_COLUMNS})
    return resamples


def _add_scratch(rows: list[dict[str, Any]], resamples: Mapping[str, Resamples]) -> None:
    """Give each fine-tuned target with a scratch twin :data:`SCRATCH_COLUMNS`: its mAP minus
    the twin's with their paired interval, and whether that interval lies above 0."""
    by_variant = {row["variant"]: row for row in rows}
    for row in rows:
        variant = row["variant"]
        if not variant.startswith("finetune/") or is_control(variant):
            continue
        target = variant.removeprefix("finetune/")
        for folder in SCRATCH_FOLDERS.values():
            twin = f"{folder}/{target}"
            if twin not in by_variant:
                continue
            if variant not in resamples or twin not in resamples:
                raise ReportError(f"{variant} and its scratch twin {twin}: resamples missing")
            try:
                paired = compare_with_control(
                    resamples[variant], resamples[twin], row["mAP"], by_variant[twin]["mAP"]
                )
            except PairingError as exc:
                raise ReportError(str(exc)) from exc
            prefix = f"delta_vs_{folder}_mAP"
            row[prefix] = paired["delta_mAP"]
            row[f"{prefix}_ci95_low"] = paired["delta_mAP_ci95_low"]
            row[f"{prefix}_ci95_high"] = paired["delta_mAP_ci95_high"]
            row[f"beats_{folder}"] = bool(paired["delta_mAP_ci95_low"] > 0)


def _read_replicates(paths: Sequence[Path]) -> dict[str, dict[int, float]]:
    """Replicated variant -> {seed: mAP}, from the replicates' metrics.json files."""
    replicates: dict[str, dict[int, float]] = {}
    for raw_path in paths:
        path = Path(raw_path)
        # A replicate's record holds its accuracy only (evaluate.metrics.evaluate_accuracy).
        record = _read_json(path, "metrics")
        if not isinstance(record, dict):
            raise ReportError(f"{path}: expected a JSON object, got {type(record).__name__}")
        for key, valid in (
            ("variant", isinstance(record.get("variant"), str)),
            ("mAP", _is_number(record.get("mAP"))),
        ):
            if not valid:
                raise ReportError(f"{path}: key '{key}' missing or mistyped ({record.get(key)!r})")
        parsed = split_replicate(record["variant"])
        if parsed is None:
            raise ReportError(
                f"{path}: variant {record['variant']!r} is not a seed replicate "
                "(replicate/s<seed>/finetune/...)"
            )
        variant, seed = parsed
        if seed in replicates.setdefault(variant, {}):
            raise ReportError(f"{path}: a second replicate of {variant} with seed {seed}")
        replicates[variant][seed] = float(record["mAP"])
        log.info("%s: seed %d replicate, mAP %.4f", variant, seed, record["mAP"])
    return replicates


def _read_json(path: Path, what: str) -> Any:
    """Parse one JSON input; a missing or malformed file is a ReportError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read {what} JSON ({exc})") from exc


def _merge_latency(rows: list[dict[str, Any]], path: Path) -> None:
    """Set every row's latency columns from ``latency.json`` (rule time_models)."""
    record = _read_json(path, "latency")
    models = record.get("models") if isinstance(record, dict) else None
    if not isinstance(models, dict):
        raise ReportError(f"{path}: no 'models' object")
    numbers = [c for c in (*LATENCY_COLUMNS, *OPTIONAL_COLUMNS) if c.startswith(_TIMED)]
    for row in rows:
        entry = models.get(row["variant"])
        if not isinstance(entry, dict):
            raise ReportError(f"{path}: no latency for variant {row['variant']!r}")
        for key in ("latency_device", "gpu_latency_device"):
            if key in entry:
                if not isinstance(entry[key], str) or not entry[key]:
                    raise ReportError(f"{path}: {row['variant']}: '{key}' must be a string")
                row[key] = entry[key]
        for key in numbers:
            if key not in entry:
                continue
            if not _is_number(entry[key]):
                raise ReportError(
                    f"{path}: {row['variant']}: '{key}' must be a number, got {entry[key]!r}"
                )
            row[key] = float(entry[key])


def _merge_onnx(rows: list[dict[str, Any]], onnx_paths: Sequence[Path]) -> None:
    """Add the ONNX parity and latency columns to the rows of the exported variants."""
    by_variant = {row["variant"]: row for row in rows}
    for raw_path in onnx_paths:
        path = Path(raw_path)
        record = _read_json(path, "ONNX")
        variant = record.get("variant") if isinstance(record, dict) else None
        if variant not in by_variant:
            raise ReportError(f"{path}: variant {variant!r} has no metrics.json among the inputs")
        for key in ONNX_COLUMNS:
            if not _is_number(record.get(key)):
                raise ReportError(f"{path}: key '{key}' must be a number, got {record.get(key)!r}")
            by_variant[variant][key] = float(record[key])
