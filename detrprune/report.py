"""Aggregate per-variant metrics into a summary CSV, plots and a PDF report.

The evaluation step writes one flat ``metrics.json`` per evaluated variant (baseline, each pruning
method at each ratio, later fine-tuned twins). This module is the last stage of the workflow:

* :func:`aggregate` merges them into ``summary.csv`` (one row per variant, fixed columns);
* :func:`make_plots` draws the accuracy / cost trade-off plots as PNGs;
* :func:`write_report` bundles a title page, the summary table and the plots into one PDF;
* :func:`summarize_config` picks the parts of ``config.yaml`` worth printing on the title page.

Every output is written atomically and is byte-identical for identical inputs (no timestamps, fixed
float formats, fixed matplotlib style), so Snakemake reruns and diffs stay meaningful.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import matplotlib

# The workflow runs headless (cluster nodes, CI): never let matplotlib look for a display.
matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from detrprune import __version__  # noqa: E402
from detrprune.jobs import atomic_output  # noqa: E402

log = logging.getLogger(__name__)

SUMMARY_COLUMNS: list[str] = [
    "variant",
    "method",
    "kind",
    "scope",
    "ratio",
    "finetuned",
    "mAP",
    "mAP50",
    "mAP75",
    "AP_Car",
    "AP_Pedestrian",
    "AP_Cyclist",
    "latency_ms_median",
    "latency_ms_p90",
    "gmacs",
    "params_total",
    "params_nonzero",
    "checkpoint_mb",
    "compression_ratio",
    "latency_device",
]

BASELINE_METHOD = "baseline"
REPORT_TITLE = "Pruning Deformable DETR on KITTI"

# Column kinds, used to validate each metrics.json and to give the DataFrame stable dtypes.
# Numeric columns that follow SUMMARY_COLUMNS whenever a metrics.json carries them (later
# evaluation stages add them; older files without them still aggregate, as NaN).
OPTIONAL_COLUMNS: list[str] = [
    *[
        f"kitti_AP_{cls}_{level}"
        for cls in ("Car", "Pedestrian", "Cyclist")
        for level in ("easy", "moderate", "hard")
    ],
    "kitti_mAP_moderate",
    "sparse_mb",
    "sparse_bound_mb",
    "gops_elementwise",
    *[f"gmacs_{part}" for part in ("backbone", "neck", "encoder", "decoder", "head", "other")],
    *[
        f"sparsity_{part}"
        for part in ("backbone", "neck", "encoder", "decoder", "head", "sampling_offsets", "other")
    ],
]

# From results/onnx/<variant>/onnx.json, for the exported (final) variants only.
ONNX_COLUMNS = (
    "onnx_max_abs_diff",
    "onnx_latency_ms_median",
    "torch_forward_latency_ms_median",
)
# Measured only where CUDA is available (CUDA events); the device names the GPU.
GPU_COLUMNS = ("gpu_latency_ms_median", "gpu_latency_ms_p90")
OPTIONAL_COLUMNS += [*ONNX_COLUMNS, *GPU_COLUMNS, "gpu_latency_device"]
_OPTIONAL_STR_COLUMNS = ("gpu_latency_device",)

_STR_COLUMNS = ("variant", "method", "kind", "scope", "latency_device")
_INT_COLUMNS = ("ratio", "params_total", "params_nonzero")
_BOOL_COLUMNS = ("finetuned",)
_FLOAT_COLUMNS = tuple(
    c for c in SUMMARY_COLUMNS if c not in _STR_COLUMNS + _INT_COLUMNS + _BOOL_COLUMNS
)
# pycocotools reports -1 for an AP it cannot compute (no ground truth); that is "missing", not
# a terrible score, so it becomes NaN before it can drag averages or plots down.
_AP_COLUMNS = ("mAP", "mAP50", "mAP75", "AP_Car", "AP_Pedestrian", "AP_Cyclist")

_CSV_FLOAT_FORMAT = "%.6g"
_PLOT_DPI = 120
_FIGSIZE_PLOT = (8.0, 5.0)
_FIGSIZE_WIDE = (11.0, 4.5)
_PAGE_PORTRAIT = (8.27, 11.69)  # A4
_PAGE_LANDSCAPE = (11.69, 8.27)
_TABLE_ROWS_PER_PAGE = 25
_TEXT_LINES_PER_PAGE = 58

PLOT_NAMES: tuple[str, ...] = (
    "map_vs_ratio.png",
    "gmacs_vs_ratio.png",
    "latency_vs_ratio.png",
    "accuracy_vs_latency.png",
    "size_vs_ratio.png",
    "gmacs_by_part.png",
    "sparsity_by_part.png",
)
# Drawn when the iterative prune/fine-tune loop ran (its per-step table is given).
ITERATIVE_PLOT = "iterative_steps.png"
STEP_COLUMNS_REQUIRED = (
    "step",
    "cumulative_ratio",
    "gmacs",
    "mAP_before_finetune",
    "mAP_after_finetune",
    "map_drop",
    "selected",
)
_PARTS = ("backbone", "neck", "encoder", "decoder", "head", "other")
_SPARSITY_PARTS = ("backbone", "neck", "encoder", "decoder", "head", "sampling_offsets", "other")

# Fixed style, independent of any user matplotlibrc, so outputs do not vary between machines.
# Type 42 (TrueType) fonts keep the PDF text extractable; Type 3 glyphs are not.
_RC: dict[str, Any] = {
    "svg.hashsalt": "detrprune",
    "pdf.fonttype": 42,
    "pdf.compression": 6,
    "font.family": "DejaVu Sans",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": _PLOT_DPI,
    "savefig.dpi": _PLOT_DPI,
}

# Short headers so the 17-column table fits a landscape A4 page.
_TABLE_HEADERS: dict[str, str] = {
    "variant": "variant",
    "scope": "scope",
    "ratio": "ratio %",
    "finetuned": "ft",
    "mAP": "mAP",
    "mAP50": "mAP50",
    "mAP75": "mAP75",
    "AP_Car": "AP Car",
    "AP_Pedestrian": "AP Ped",
    "AP_Cyclist": "AP Cyc",
    "latency_ms_median": "lat med ms",
    "latency_ms_p90": "lat p90 ms",
    "gmacs": "GMACs",
    "params_total": "params",
    "params_nonzero": "nonzero",
    "checkpoint_mb": "ckpt MB",
    "compression_ratio": "compr x",
}

_SUMMARY_NOTE = (
    "ratio % = pruning ratio; ft = fine-tuned; lat = latency per image (batch 1); "
    "GMACs: fvcore, 1 multiply-add = 1 MAC; compr x = compression ratio; n/a = not available."
)
# KITTI-style AP (moderate), where the compute is, and how small the sparse checkpoint gets.
_DETAIL_HEADERS: dict[str, str] = {
    "variant": "variant",
    "kitti_AP_Car_moderate": "KITTI Car",
    "kitti_AP_Pedestrian_moderate": "KITTI Ped",
    "kitti_AP_Cyclist_moderate": "KITTI Cyc",
    "kitti_mAP_moderate": "KITTI mAP",
    **{f"gmacs_{part}": f"G {part}" for part in ("backbone", "neck", "encoder", "decoder", "head")},
    "sparsity_sampling_offsets": "sp. offsets",
    "checkpoint_mb": "dense MB",
    "sparse_mb": "sparse MB",
    "sparse_bound_mb": "bound MB",
    "onnx_max_abs_diff": "ONNX diff",
    "onnx_latency_ms_median": "ORT ms",
    "torch_forward_latency_ms_median": "torch ms",
    "gpu_latency_ms_median": "GPU ms",
}
_DETAIL_NOTE = (
    "KITTI = KITTI-style 2D AP, moderate difficulty, R40 (Car IoU 0.7, Ped/Cyc 0.5); "
    "G <part> = GMACs of that model part; sp. offsets = sparsity of deformable attention's "
    "sampling_offsets;\nsparse MB = bitmask + non-zero values format; bound MB = n_weights/8 "
    "bytes + 4 bytes per non-zero value.\nONNX diff = largest |onnxruntime - PyTorch| over real "
    "frames; ORT ms / torch ms = the same tensor forward (no pre/post-processing) in onnxruntime "
    "and PyTorch, CPU; GPU ms = test_step on the GPU named below, CUDA events (n/a: no GPU)."
)
_STEP_HEADERS: dict[str, str] = {
    "step": "step",
    "step_ratio": "step ratio",
    "cumulative_ratio": "total ratio",
    "gmacs": "GMACs",
    "params_nonzero": "nonzero",
    "mAP_before_finetune": "mAP pruned",
    "mAP_after_finetune": "mAP ft",
    "mAP50_after_finetune": "mAP50 ft",
    "map_drop": "drop",
    "within_budget": "in budget",
    "selected": "kept",
}
_STEP_NOTE = (
    "Each step prunes, evaluates, fine-tunes and evaluates again; drop = baseline mAP - "
    "fine-tuned mAP; the loop stops after the first step over budget; kept = the model evaluated "
    "as 'iterative'."
)

# Parts of config.yaml printed on the title page, as paths into the nested config.
_CONFIG_PATHS: tuple[tuple[str, ...], ...] = (
    ("seed",),
    ("dataset", "source"),
    ("dataset", "synthetic", "num_scenes"),
    ("dataset", "val_fraction"),
    ("model",),
    ("train", "max_iters"),
    ("train", "batch_size"),
    ("evaluate", "threads"),
    ("evaluate", "latency"),
)


class ReportError(ValueError):
    """Raised when metrics files or the summary table cannot be turned into a report."""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic_path(out: Path) -> Iterator[Path]:
    """One output written atomically (see :func:`detrprune.jobs.atomic_output`)."""
    with atomic_output(out) as (tmp,):
        yield tmp


def _style() -> ExitStack:
    """Return a context manager applying the fixed report style on top of matplotlib defaults."""
    stack = ExitStack()
    stack.enter_context(plt.style.context("default"))
    stack.enter_context(matplotlib.rc_context(_RC))
    return stack


def _save_png(fig: Figure, out: Path) -> None:
    """Save ``fig`` as a deterministic PNG (no Software/timestamp metadata), atomically."""
    with _atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=_PLOT_DPI, metadata={"Software": None})


def _is_number(value: object) -> bool:
    """True for int/float JSON values; bool is excluded although it subclasses int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_record(record: object, path: Path) -> dict[str, Any]:
    """Check one parsed metrics.json and return its summary columns with normalised types."""
    if not isinstance(record, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(record).__name__}")
    row: dict[str, Any] = {}
    for key in SUMMARY_COLUMNS:
        if key not in record:
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
        if key in record and key in _OPTIONAL_STR_COLUMNS:
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


def _check_summary(summary: pd.DataFrame) -> None:
    """Raise ReportError if ``summary`` is not a non-empty table with all summary columns."""
    for column in SUMMARY_COLUMNS:
        if column not in summary.columns:
            raise ReportError(f"summary table: missing column '{column}'")
    if summary.empty:
        raise ReportError("summary table: no rows")


def _baseline_row(summary: pd.DataFrame) -> pd.Series | None:
    """Return the (non fine-tuned if possible) baseline row, or None when there is none."""
    base = summary[summary["method"] == BASELINE_METHOD]
    if base.empty:
        return None
    plain = base[~base["finetuned"].astype(bool)]
    return (plain if not plain.empty else base).iloc[0]


def _series(summary: pd.DataFrame) -> list[tuple[str, bool, pd.DataFrame]]:
    """Split non-baseline rows into (method, finetuned) series, each sorted by ratio."""
    rows = summary[summary["method"] != BASELINE_METHOD]
    out: list[tuple[str, bool, pd.DataFrame]] = []
    for (method, finetuned), group in rows.groupby(["method", "finetuned"], sort=True):
        out.append((str(method), bool(finetuned), group.sort_values("ratio")))
    return out


def _method_colours(summary: pd.DataFrame) -> dict[str, Any]:
    """Give each pruning method a fixed colour (fine-tuned twins share their method's colour)."""
    methods = sorted(m for m in summary["method"].unique() if m != BASELINE_METHOD)
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _series_label(method: str, finetuned: bool) -> str:
    """Legend label of a series."""
    return f"{method} (fine-tuned)" if finetuned else method


def _linestyle(finetuned: bool) -> str:
    """Fine-tuned series are dashed so they read as twins of the solid one-shot series."""
    return "--" if finetuned else "-"


def _plot_metric_vs_ratio(
    ax: Axes,
    summary: pd.DataFrame,
    column: str,
    colours: Mapping[str, Any],
    baseline: pd.Series | None,
) -> None:
    """Draw ``column`` against pruning ratio: one line per series plus the baseline reference."""
    for method, finetuned, group in _series(summary):
        ax.plot(
            group["ratio"],
            group[column],
            marker="o",
            linestyle=_linestyle(finetuned),
            color=colours[method],
            label=_series_label(method, finetuned),
        )
    if baseline is not None and not pd.isna(baseline[column]):
        value = float(baseline[column])
        ax.axhline(value, color="black", linestyle=":", linewidth=1.0, label="baseline")
        ax.plot([0], [value], marker="*", markersize=12, color="black", linestyle="none")
    ax.set_xlabel("pruning ratio (%)")
    ax.legend(fontsize=8)


def _fmt(value: object, digits: int = 4) -> str:
    """Format a table / text value: ``digits`` significant digits, SI suffix for big integers."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        magnitude = abs(int(value))
        if magnitude >= 1_000_000_000:
            return f"{value / 1e9:.{digits}g}G"
        if magnitude >= 1_000_000:
            return f"{value / 1e6:.{digits}g}M"
        if magnitude >= 10_000:
            return f"{value / 1e3:.{digits}g}k"
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}"
    return str(value)


def _flatten(mapping: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """Flatten a nested mapping into (dotted.key, value) pairs, keeping insertion order."""
    items: list[tuple[str, object]] = []
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, dotted))
        else:
            items.append((dotted, value))
    return items


def _config_value(value: object) -> str:
    """Render one config value for the title page (lists comma-joined)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_config_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"  # as config.yaml spells it
    return str(value)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def aggregate(
    metrics_paths: Sequence[Path], out_csv: Path, onnx_paths: Sequence[Path] = ()
) -> pd.DataFrame:
    """Merge per-variant ``metrics.json`` files into one summary table and write it as CSV.

    Args:
        metrics_paths: one metrics.json per evaluated variant.
        out_csv: where the CSV goes (written atomically, byte-stable float format).
        onnx_paths: ``onnx.json`` records of exported variants; their parity and latency
            columns (:data:`ONNX_COLUMNS`) join the row of the same ``variant``.

    Returns:
        The summary table: one row per file, columns :data:`SUMMARY_COLUMNS` in that order,
        sorted baseline first, then by method, finetuned, ratio. AP values of -1 become NaN.

    Raises:
        ReportError: unreadable file, missing/mistyped key, or two files describing the same
            (method, ratio, finetuned) variant.
    """
    if not metrics_paths:
        raise ReportError(f"{out_csv}: no metrics files given")
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int, bool], Path] = {}
    for raw_path in metrics_paths:
        path = Path(raw_path)
        row = _validate_record(_read_json(path, "metrics"), path)
        identity = (row["method"], row["ratio"], row["finetuned"])
        if identity in seen:
            raise ReportError(
                f"{path}: duplicate (method, ratio, finetuned) = {identity}, "
                f"already given by {seen[identity]}"
            )
        seen[identity] = path
        rows.append(row)

    _merge_onnx(rows, onnx_paths)
    rows.sort(key=_sort_key)
    optional = [c for c in OPTIONAL_COLUMNS if any(c in row for row in rows)]
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS + optional)
    summary = summary.astype(
        {
            **{c: "int64" for c in _INT_COLUMNS},
            **{c: "bool" for c in _BOOL_COLUMNS},
            **{c: "float64" for c in _FLOAT_COLUMNS},
            **{c: "float64" for c in optional if c not in _OPTIONAL_STR_COLUMNS},
        }
    )

    with _atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False, float_format=_CSV_FLOAT_FORMAT, lineterminator="\n")
    log.info("wrote %s (%d variants)", out_csv, len(summary))
    return summary


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read {what} JSON ({exc})") from exc


def _merge_onnx(rows: list[dict[str, Any]], onnx_paths: Sequence[Path]) -> None:
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


def make_plots(
    summary: pd.DataFrame, plots_dir: Path, steps: pd.DataFrame | None = None
) -> list[Path]:
    """Draw the trade-off plots of the summary table as deterministic PNGs.

    Args:
        summary: the table returned by :func:`aggregate` (or read back from its CSV).
        plots_dir: output folder (created if needed).
        steps: the iterative loop's per-step table, when it ran.

    Returns:
        Paths of the :data:`PLOT_NAMES` PNGs in that order, then :data:`ITERATIVE_PLOT` when
        ``steps`` is given.

    Raises:
        ReportError: the table lacks a summary column or has no rows.
    """
    _check_summary(summary)
    plots_dir = Path(plots_dir)
    colours = _method_colours(summary)
    baseline = _baseline_row(summary)
    builders = [
        _fig_map,
        _fig_gmacs,
        _fig_latency,
        _fig_accuracy_vs_latency,
        _fig_size,
        _fig_gmacs_by_part,
        _fig_sparsity_by_part,
    ]
    names = list(PLOT_NAMES)
    if steps is not None:
        _check_steps(steps)
        builders.append(lambda *_: _fig_iterative(steps, baseline))
        names.append(ITERATIVE_PLOT)
    paths: list[Path] = []
    with _style():
        for name, build in zip(names, builders, strict=True):
            fig = build(summary, colours, baseline)
            try:
                fig.tight_layout()
                _save_png(fig, plots_dir / name)
            finally:
                plt.close(fig)
            paths.append(plots_dir / name)
            log.info("wrote %s", plots_dir / name)
    return paths


def _fig_map(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """mAP and mAP50 vs pruning ratio, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=_FIGSIZE_WIDE, sharex=True)
    for ax, column, label in zip(axes, ("mAP", "mAP50"), ("mAP@[.5:.95]", "mAP@.5"), strict=True):
        _plot_metric_vs_ratio(ax, summary, column, colours, baseline)
        ax.set_ylabel(f"{label} (COCO AP, 0-1)")
        ax.set_title(f"{label} vs pruning ratio")
    return fig


def _fig_gmacs(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """GMACs vs pruning ratio."""
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    _plot_metric_vs_ratio(ax, summary, "gmacs", colours, baseline)
    ax.set_ylabel("compute (GMACs, fvcore: 1 multiply-add = 1 MAC)")
    ax.set_title("GMACs vs pruning ratio")
    return fig


def _fig_latency(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Median latency vs pruning ratio, with an upper error bar reaching the p90."""
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    for method, finetuned, group in _series(summary):
        median = group["latency_ms_median"].to_numpy(dtype=float)
        upper = np.clip(group["latency_ms_p90"].to_numpy(dtype=float) - median, 0.0, None)
        ax.errorbar(
            group["ratio"],
            median,
            yerr=[np.zeros_like(upper), upper],
            marker="o",
            capsize=3,
            linestyle=_linestyle(finetuned),
            color=colours[method],
            label=_series_label(method, finetuned),
        )
    if baseline is not None:
        b_med = float(baseline["latency_ms_median"])
        b_up = max(float(baseline["latency_ms_p90"]) - b_med, 0.0)
        ax.axhline(b_med, color="black", linestyle=":", linewidth=1.0, label="baseline")
        ax.errorbar(
            [0],
            [b_med],
            yerr=[[0.0], [b_up]],
            marker="*",
            markersize=12,
            capsize=3,
            color="black",
            linestyle="none",
        )
    ax.set_xlabel("pruning ratio (%)")
    ax.set_ylabel("latency per image, batch 1 (ms)")
    ax.set_title("Latency (median, bar to p90) vs pruning ratio")
    ax.legend(fontsize=8)
    return fig


def _fig_accuracy_vs_latency(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Scatter of mAP vs median latency, each point labelled with its ratio."""
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    for method, finetuned, group in _series(summary):
        ax.scatter(
            group["latency_ms_median"],
            group["mAP"],
            marker="s" if finetuned else "o",
            color=colours[method],
            label=_series_label(method, finetuned),
            zorder=3,
        )
        for _, row in group.iterrows():
            if pd.isna(row["mAP"]) or pd.isna(row["latency_ms_median"]):
                continue
            ax.annotate(
                f"r{int(row['ratio'])}",
                (row["latency_ms_median"], row["mAP"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=colours[method],
            )
    if baseline is not None and not pd.isna(baseline["mAP"]):
        ax.scatter(
            [baseline["latency_ms_median"]],
            [baseline["mAP"]],
            marker="*",
            s=220,
            color="black",
            edgecolors="gold",
            label="baseline",
            zorder=2,  # under the variants: a near-baseline variant must stay visible
        )
    ax.set_xlabel("median latency per image (ms)")
    ax.set_ylabel("mAP@[.5:.95] (COCO AP, 0-1)")
    ax.set_title("mAP vs median latency")
    ax.legend(fontsize=8)
    return fig


def _fig_size(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Checkpoint size and non-zero parameter fraction vs pruning ratio, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=_FIGSIZE_WIDE, sharex=True)
    _plot_metric_vs_ratio(axes[0], summary, "checkpoint_mb", colours, baseline)
    axes[0].set_ylabel("checkpoint size (MB)")
    axes[0].set_title("Checkpoint size vs pruning ratio")

    frac = summary.copy()
    if baseline is not None and int(baseline["params_nonzero"]) > 0:
        denominator: Any = float(baseline["params_nonzero"])
        ylabel = "non-zero params (fraction of baseline)"
    else:
        # Without a baseline the best available reference is each variant's own size.
        denominator = frac["params_total"].astype(float)
        ylabel = "non-zero params (fraction of own total)"
    frac["nonzero_fraction"] = frac["params_nonzero"].astype(float) / denominator
    base_frac = frac.loc[baseline.name] if baseline is not None else None
    _plot_metric_vs_ratio(axes[1], frac, "nonzero_fraction", colours, base_frac)
    axes[1].set_ylabel(ylabel)
    axes[1].set_title("Non-zero parameters vs pruning ratio")
    return fig


def _bar_labels(rows: pd.DataFrame) -> list[str]:
    return [str(v).replace("/r", " r") for v in rows["variant"]]


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _fig_gmacs_by_part(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Stacked GMACs per model part for every structurally different variant.

    Weight pruning and fine-tuning leave the dense count unchanged, so only the baseline, the
    zero-shot variants of other kinds and the iterative result are drawn: this is where filter
    pruning removed work, and where it did not.
    """
    fig, ax = plt.subplots(figsize=(11.0, 5.5))
    columns = [f"gmacs_{part}" for part in _PARTS]
    structural = summary["kind"] != "weight"
    rows = summary[
        structural & (~summary["finetuned"].astype(bool) | (summary["method"] == "iterative"))
    ]
    if any(c not in rows.columns for c in columns) or rows.empty:
        _no_data(ax, "no per-part GMACs in the metrics")
        return fig
    positions = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    cmap = plt.get_cmap("tab10")
    for i, (part, column) in enumerate(zip(_PARTS, columns, strict=True)):
        values = rows[column].fillna(0.0).to_numpy(dtype=float)
        ax.bar(positions, values, bottom=bottom, color=cmap(i), label=part)
        bottom += values
    ax.set_xticks(positions, _bar_labels(rows), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GMACs (fvcore, 1 multiply-add = 1 MAC)")
    ax.set_title("Where the compute is: GMACs by model part")
    ax.legend(fontsize=8, ncols=3)
    return fig


def _fig_sparsity_by_part(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Achieved sparsity per model part of every weight-pruned variant (grouped bars)."""
    fig, ax = plt.subplots(figsize=(11.0, 5.5))
    columns = [f"sparsity_{part}" for part in _SPARSITY_PARTS if f"sparsity_{part}" in summary]
    rows = summary[summary["kind"] == "weight"]
    if rows.empty or not columns:
        _no_data(ax, "no weight-pruned variant")
        return fig
    width = 0.8 / len(columns)
    positions = np.arange(len(rows))
    cmap = plt.get_cmap("tab10")
    for i, column in enumerate(columns):
        ax.bar(
            positions + (i - (len(columns) - 1) / 2) * width,
            rows[column].fillna(0.0).to_numpy(dtype=float),
            width=width,
            color=cmap(i),
            label=column.removeprefix("sparsity_"),
        )
    ax.set_xticks(positions, _bar_labels(rows), rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of zero weights (Conv/Linear)")
    ax.set_title("Achieved sparsity per model part (weight pruning)")
    ax.legend(fontsize=8, ncols=4)
    return fig


def _check_steps(steps: pd.DataFrame) -> None:
    for column in STEP_COLUMNS_REQUIRED:
        if column not in steps.columns:
            raise ReportError(f"iterative steps table: missing column '{column}'")
    if steps.empty:
        raise ReportError("iterative steps table: no rows")


def _fig_iterative(steps: pd.DataFrame, baseline: pd.Series | None) -> Figure:
    """mAP before/after each step's fine-tune (left axis) and GMACs (right axis) vs step."""
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    step = steps["step"].to_numpy()
    ax.plot(step, steps["mAP_before_finetune"], marker="o", color="tab:red", label="mAP pruned")
    ax.plot(step, steps["mAP_after_finetune"], marker="o", color="tab:blue", label="mAP fine-tuned")
    if baseline is not None:
        ax.axhline(float(baseline["mAP"]), color="black", linestyle=":", label="baseline mAP")
    selected = steps[steps["selected"].astype(str).str.lower() == "true"]
    if not selected.empty:
        ax.plot(
            selected["step"],
            selected["mAP_after_finetune"],
            marker="*",
            markersize=16,
            color="tab:blue",
            linestyle="none",
            label="kept",
        )
    ax.set_xlabel("step (cumulative pruning ratio)")
    ratios = steps["cumulative_ratio"].to_numpy(dtype=float)
    ax.set_xticks(step, [f"{s}\n({100 * r:.0f} %)" for s, r in zip(step, ratios, strict=True)])
    ax.set_ylabel("mAP@[.5:.95]")
    macs = ax.twinx()
    macs.plot(step, steps["gmacs"], marker="s", color="tab:green", label="GMACs")
    macs.set_ylabel("GMACs", color="tab:green")
    macs.grid(False)
    handles = ax.get_legend_handles_labels()[0] + macs.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ax.set_title("Iterative prune / fine-tune")
    return fig


def summarize_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Pick the parts of the workflow config worth printing on the report's title page.

    Keeps seed, dataset source/size/validation split, the model section, training length and
    batch size, the pruning ratios of every method, and the latency settings (including the
    evaluation thread count, which latency depends on). Missing or
    malformed sections are skipped rather than failing: the report must not break because an
    optional key is absent.

    Args:
        config: the whole config dict as loaded from config.yaml.

    Returns:
        A nested dict mirroring the config's structure, holding only the selected keys.
    """
    summary: dict[str, Any] = {}
    if not isinstance(config, Mapping):
        return summary

    def lookup(path: Sequence[str]) -> tuple[bool, Any]:
        node: Any = config
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return False, None
            node = node[key]
        return True, node

    def store(path: Sequence[str], value: Any) -> None:
        node = summary
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # Plain containers only, so later mutation of the caller's config cannot leak in.
        node[path[-1]] = json.loads(json.dumps(value, default=str))

    for path in _CONFIG_PATHS:
        found, value = lookup(path)
        if found and value is not None:
            store(path, value)

    found, methods = lookup(("pruning", "methods"))
    if found and isinstance(methods, Mapping):
        for method, settings in methods.items():
            if isinstance(settings, Mapping):
                store(("pruning", "methods", str(method)), dict(settings))
    for section in ("finetune", "iterative"):
        found, value = lookup(("pruning", section))
        if found and isinstance(value, Mapping):
            store(("pruning", section), dict(value))
    return summary


def write_report(
    summary: pd.DataFrame,
    plot_paths: Sequence[Path],
    config_summary: Mapping[str, object],
    out_pdf: Path,
    steps: pd.DataFrame | None = None,
) -> None:
    """Write the multi-page PDF report, byte-identical for identical inputs.

    Pages: a title page (config summary, baseline numbers, how to read), the summary table
    and the detail table (KITTI AP, GMACs by part, sparse sizes; split every 25 rows), the
    iterative loop's step table when ``steps`` is given, then one page per plot.

    Args:
        summary: the table returned by :func:`aggregate`.
        plot_paths: PNGs from :func:`make_plots`, one page each, in the given order.
        config_summary: nested dict (e.g. from :func:`summarize_config`), printed with dotted keys.
        out_pdf: output path, written atomically.
        steps: the iterative loop's per-step table, when it ran.
    """
    _check_summary(summary)
    if steps is not None:
        _check_steps(steps)
    for plot in plot_paths:
        if not Path(plot).is_file():
            raise ReportError(f"{plot}: plot file not found (key 'plot_paths')")

    text_pages = _title_lines(summary, config_summary)
    metadata = {
        "CreationDate": None,
        "ModDate": None,
        "Producer": f"detrprune {__version__} (matplotlib {matplotlib.__version__})",
        "Creator": "detrprune",
        "Title": REPORT_TITLE,
    }
    with _style(), _atomic_path(Path(out_pdf)) as tmp:
        with PdfPages(tmp, metadata=metadata) as pdf:
            for index, lines in enumerate(text_pages):
                fig = _text_page(lines, first=index == 0)
                pdf.savefig(fig)
                plt.close(fig)
            tables = _table_pages(summary, _TABLE_HEADERS, "Summary table", _SUMMARY_NOTE)
            tables += _table_pages(summary, _DETAIL_HEADERS, "Detail table", _DETAIL_NOTE)
            if steps is not None:
                tables += _table_pages(steps, _STEP_HEADERS, "Iterative steps", _STEP_NOTE)
            for fig in tables:
                pdf.savefig(fig)
                plt.close(fig)
            for plot in plot_paths:
                fig = _plot_page(Path(plot))
                pdf.savefig(fig)
                plt.close(fig)
    log.info("wrote %s", out_pdf)


# --------------------------------------------------------------------------------------------
# report pages
# --------------------------------------------------------------------------------------------


def _title_lines(summary: pd.DataFrame, config_summary: Mapping[str, object]) -> list[list[str]]:
    """Body text of the title page(s), split into pages of at most ``_TEXT_LINES_PER_PAGE``."""
    lines: list[str] = ["Configuration"]
    flat = _flatten(config_summary) if config_summary else []
    if flat:
        lines += [f"  {key}: {_config_value(value)}" for key, value in flat]
    else:
        lines.append("  (no configuration given)")

    lines += ["", "Baseline"]
    baseline = _baseline_row(summary)
    if baseline is None:
        lines.append("  (no baseline row in the summary)")
    else:
        lines += [
            f"  variant: {baseline['variant']}",
            f"  mAP: {_fmt(baseline['mAP'])}    mAP50: {_fmt(baseline['mAP50'])}"
            f"    mAP75: {_fmt(baseline['mAP75'])}",
            f"  AP Car / Pedestrian / Cyclist: {_fmt(baseline['AP_Car'])} / "
            f"{_fmt(baseline['AP_Pedestrian'])} / {_fmt(baseline['AP_Cyclist'])}",
            f"  compute: {_fmt(baseline['gmacs'])} GMACs",
            f"  latency: {_fmt(baseline['latency_ms_median'])} ms median, "
            f"{_fmt(baseline['latency_ms_p90'])} ms p90 per image (batch 1)",
            f"  params: {_fmt(int(baseline['params_total']))} total, "
            f"{_fmt(int(baseline['params_nonzero']))} non-zero",
            f"  checkpoint size: {_fmt(baseline['checkpoint_mb'])} MB",
        ]

    devices = sorted(str(d) for d in summary["latency_device"].unique())
    n_variants = int((summary["method"] != BASELINE_METHOD).sum())
    lines += [
        "",
        "How to read",
        f"  {n_variants} pruned variant(s) plus baseline; one row per evaluated model.",
        "  GMACs = fvcore count, where one multiply-add counts as one MAC",
        "    (multiply by 2 for FLOPs).",
        "  Latency = wall-clock time per image at batch 1, median and 90th percentile, on:",
        *[f"    {device}" for device in devices],
        "    On shared or virtual CPUs repeated runs of one model can differ by 20-30 %:",
        "    read small latency differences as noise, not as a speedup or a slowdown.",
        "  AP values are COCO AP in [0, 1]; n/a = no ground truth for that class (-1 in COCO).",
        "  compression_ratio = baseline non-zero parameters / variant's non-zero parameters",
        "    (credits removed channels and zeroed weights; the dense checkpoint MB only",
        "    shrinks for removed channels).",
        "  Fine-tuned variants (ft = yes) are drawn dashed in the plots.",
    ]
    return [lines[i : i + _TEXT_LINES_PER_PAGE] for i in range(0, len(lines), _TEXT_LINES_PER_PAGE)]


def _text_page(lines: Sequence[str], *, first: bool) -> Figure:
    """A portrait page of monospace text; the first one carries the report title."""
    fig = plt.figure(figsize=_PAGE_PORTRAIT)
    top = 0.95
    if first:
        fig.text(0.5, top, REPORT_TITLE, ha="center", va="top", fontsize=18, weight="bold")
        fig.text(
            0.5, top - 0.03, f"detrprune {__version__} report", ha="center", va="top", fontsize=10
        )
        top -= 0.07
    else:
        fig.text(0.08, top, f"{REPORT_TITLE} (continued)", va="top", fontsize=11, weight="bold")
        top -= 0.04
    step = 0.0145
    for i, line in enumerate(lines):
        # Section headings are the unindented non-empty lines.
        heading = bool(line) and not line.startswith(" ")
        fig.text(
            0.08,
            top - i * step,
            line,
            va="top",
            fontsize=10 if heading else 8.5,
            weight="bold" if heading else "normal",
            family="DejaVu Sans Mono",
        )
    return fig


def _table_pages(
    table_rows: pd.DataFrame, headers: Mapping[str, str], heading: str, note: str
) -> list[Figure]:
    """A table on landscape pages of at most ``_TABLE_ROWS_PER_PAGE`` rows each.

    Columns of ``headers`` missing from ``table_rows`` (metrics older than the column) show n/a.
    """
    columns = list(headers)
    frame = table_rows.reindex(columns=columns)
    cells = [[_fmt(value) for value in row] for row in frame.itertuples(index=False)]
    for column, label in (("latency_device", "Latency device"), ("gpu_latency_device", "GPU")):
        if column in table_rows:
            devices = sorted(str(d) for d in table_rows[column].dropna().unique())
            note = note + f"\n{label}: " + ("; ".join(devices) or "none")
    n_pages = max(1, math.ceil(len(cells) / _TABLE_ROWS_PER_PAGE))
    figures: list[Figure] = []
    for page in range(n_pages):
        chunk = cells[page * _TABLE_ROWS_PER_PAGE : (page + 1) * _TABLE_ROWS_PER_PAGE]
        fig = plt.figure(figsize=_PAGE_LANDSCAPE)
        ax = fig.add_axes((0.03, 0.10, 0.94, 0.80))
        ax.axis("off")
        title = heading
        if n_pages > 1:
            title += f" ({page + 1}/{n_pages})"
        ax.set_title(title, fontsize=14, weight="bold", loc="left")
        table = ax.table(
            cellText=chunk,
            colLabels=[headers[c] for c in columns],
            loc="upper center",
            cellLoc="right",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7.5)
        table.auto_set_column_width(list(range(len(columns))))
        table.scale(1.0, 1.3)
        for (row, _col), cell in table.get_celld().items():
            if row == 0:
                cell.set_text_props(weight="bold")
                cell.set_facecolor("#e8e8e8")
        fig.text(0.03, 0.05, note, fontsize=7, va="bottom")
        figures.append(fig)
    return figures


def _plot_page(plot: Path) -> Figure:
    """A landscape page showing one plot PNG, titled with its file stem."""
    image = mpimg.imread(plot)
    fig = plt.figure(figsize=_PAGE_LANDSCAPE)
    ax = fig.add_axes((0.04, 0.04, 0.92, 0.86))
    # "none" embeds the PNG pixels unresampled instead of re-rasterising at the page dpi.
    ax.imshow(image, interpolation="none")
    ax.axis("off")
    ax.set_title(plot.stem, fontsize=14, weight="bold")
    return fig
