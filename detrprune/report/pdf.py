"""The PDF report. Page 1 answers the study's question for this run: how far each kind of pruning
went with no significant mAP drop against its control of equal training, what that bought in
speed and size, what collapsed and on which machine (:func:`detrprune.report.findings.answer`),
beside the accuracy-vs-speed figure with its Pareto front (:func:`detrprune.report.plots.
draw_tradeoff`). Then the recovery, summary, detail, latency-elasticity, 2:4-on-GPU, seed and
iterative-step tables, one page per plot, and the appendix: the baseline, how to read the
numbers, every recovery claim in words, the study's settings and the study it reproduces.
Byte-identical for identical inputs: no creation dates, fixed fonts (TrueType, so the text stays
extractable)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from detrprune import __version__
from detrprune.constants import CLASSES, GMACS_PARTS
from detrprune.evaluate.analysis import derived_numbers
from detrprune.jobs import atomic_output
from detrprune.report.convergence import judge_convergence
from detrprune.report.findings import answer, findings
from detrprune.report.plots import draw_tradeoff, report_style
from detrprune.report.summary import (
    BASELINE_METHOD,
    ReportError,
    baseline_row,
    check_steps,
    check_summary,
)
from detrprune.variants import is_control

log = logging.getLogger(__name__)

REPORT_TITLE = "Pruning Deformable DETR on KITTI"
# The study this workflow reproduces (as CITATION.cff names it).
REPRODUCED_STUDY = (
    'Reproduces "Pruning Deformable DETR on KITTI" by Bohra, Shashidhar, Royce, Ungarala and '
    "Shahbas V S",
    "(https://github.com/ebcoders/Road-Object-Detection).",
)

_PAGE_PORTRAIT = (8.27, 11.69)  # A4
_PAGE_LANDSCAPE = (11.69, 8.27)
_TABLE_ROWS_PER_PAGE = 25
_TEXT_LINES_PER_PAGE = 58
# Page 1: its monospace answer lines (page fractions) and the least height its figure keeps.
_ANSWER_TOP = 0.895
_ANSWER_STEP = 0.0097
_ANSWER_FONTSIZE = 6.5
_FIGURE_MIN_HEIGHT = 0.36

# Short headers so the 17-column table fits a landscape A4 page.
_TABLE_HEADERS: dict[str, str] = {
    "variant": "variant",
    "scope": "scope",
    "ratio": "ratio %",
    "finetuned": "ft",
    "mAP": "mAP",
    "mAP50": "mAP50",
    "mAP75": "mAP75",
    **{f"AP_{cls}": f"AP {cls[:3]}" for cls in CLASSES},
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
    **{f"kitti_AP_{cls}_moderate": f"KITTI {cls[:3]}" for cls in CLASSES},
    "kitti_mAP_moderate": "KITTI mAP",
    **{f"gmacs_{part}": f"G {part}" for part in GMACS_PARTS if part != "other"},
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
    "and PyTorch, CPU; GPU ms = test_step on the GPU named below, timed as the CPU latency "
    "(n/a: no GPU)."
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
# Each row against its control of equal training (detrprune.variants).
_RECOVERY_HEADERS: dict[str, str] = {
    "variant": "variant",
    "mAP": "mAP",
    "mAP_ci95_low": "mAP low",
    "mAP_ci95_high": "mAP high",
    "control": "control",
    "control_mAP": "control mAP",
    "map_kept": "kept",
    "delta_mAP": "delta",
    "delta_mAP_ci95_low": "delta low",
    "delta_mAP_ci95_high": "delta high",
    "significant": "significant",
}
_RECOVERY_NOTE = (
    "control = the model of equal training: the baseline for zero-shot pruning, the baseline "
    "fine-tuned on the same schedule for fine-tuned models (finetune/baseline) and for the "
    "iterative result\n(control/iterative); kept = mAP / control mAP; delta = mAP - control mAP "
    "with its paired 95 % bootstrap interval over the validation images (the same resamples for "
    "both). A change is called\nsignificant only when that interval excludes 0; mAP low/high = "
    "the variant's own 95 % interval."
)
# The fine-tuned rows with seed replicates (report.seeds): the comparison over training runs
# beside the single run's interval over images.
_SEED_HEADERS: dict[str, str] = {
    "variant": "variant",
    "control": "control",
    "seeds": "seeds",
    "mAP_seed_mean": "mAP mean",
    "mAP_seed_sd": "mAP sd",
    "delta_mAP_seed_mean": "delta mean",
    "delta_mAP_seed_ci95_low": "delta low",
    "delta_mAP_seed_ci95_high": "delta high",
    "delta_mAP": "delta (own seed)",
    "delta_mAP_ci95_low": "images low",
    "delta_mAP_ci95_high": "images high",
}
_SEED_NOTE = (
    "Every fine-tuned model and its control fine-tuned again with other training seeds "
    "(pruning.finetune.replicate_seeds; seeds counts the study's own seed too). delta = mAP - "
    "control mAP within each seed;\ndelta mean and its 95 % Student t interval over the seeds "
    "(low/high) show how much the comparison moves between training runs. images low/high = "
    "the own seed's paired bootstrap interval\nover the validation images, which leaves that "
    "randomness out. sd = the standard deviation of the model's mAP over the seeds."
)
# Each filter variant's latency change against its GMACs change (the baseline first, as the
# reference both are relative to).
_ELASTICITY_HEADERS: dict[str, str] = {
    "variant": "variant",
    "scope": "scope",
    "ratio": "ratio %",
    "finetuned": "ft",
    "gmacs": "GMACs",
    "gmacs_change": "GMACs chg %",
    "latency_ms_median": "lat med ms",
    "latency_change": "lat chg %",
    "speedup": "speedup x",
    "speedup_ci95_low": "sp low",
    "speedup_ci95_high": "sp high",
    "elasticity": "elasticity",
}
_ELASTICITY_NOTE = (
    "GMACs chg % / lat chg % = change vs the baseline (first row); elasticity = relative latency "
    "drop / relative GMACs drop (1: latency falls in proportion to the GMACs; 0: not at all);\n"
    "speedup x = baseline median / row median; sp low/high = its paired 95 % interval. Every "
    "model was timed in one process, round-robin (rule time_models),\nso drift hits all alike; "
    "the interval resamples whole rounds, keeping each model paired with the baseline's runs."
)
# The 2:4 variants' GPU timing (evaluate.semi_structured): dense fp16 against the same model with
# its 2:4 Linears on the sparse tensor cores, or why it was not timed.
_SEMI_STRUCTURED_HEADERS: dict[str, str] = {
    "variant": "variant",
    "finetuned": "ft",
    "mAP": "mAP",
    "delta_mAP": "dmAP",
    "linears_2to4": "2:4 Linears",
    "gpu_latency_ms_median_dense_fp16": "dense fp16 ms",
    "gpu_latency_ms_median_2to4": "2:4 ms",
    "gpu_speedup_2to4": "speedup",
    "gpu_2to4_backend": "kernel",
}
_SEMI_STRUCTURED_NOTE = (
    "Timed on the GPU by the evaluate rule: the model in fp16 with its 2:4 Linears compressed "
    "for the sparse tensor cores against the same model dense in fp16, interleaved, CUDA "
    "events;\nspeedup = dense / 2:4 (end to end). Per-layer speedups, grouped by kind, are in "
    "results/eval/<variant>/metrics.json."
)
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
    validations: pd.DataFrame | None = None,
) -> None:
    """Write the multi-page PDF report, byte-identical for identical inputs.

    Pages: the answer (:func:`_answer_page`: this run's answer in words beside the
    accuracy-vs-speed figure with its Pareto front), the recovery table (each model against its
    control of equal training, with intervals), the summary table and the detail table (KITTI
    AP, GMACs by part, sparse sizes; split every 25 rows), the latency elasticity of each filter
    variant (:func:`elasticity_table`; only when there is one), the 2:4 variants' GPU timing
    (:func:`semi_structured_table`; only when there is one), the training-seed replicates
    (:func:`seed_table`; only when there are some), the iterative loop's step table when
    ``steps`` is given, one page per plot, then the appendix: the baseline, how to read the
    numbers and every recovery claim in words, the configuration and the reproduced study.

    Args:
        summary: the table returned by :func:`~detrprune.report.summary.aggregate`.
        plot_paths: PNGs of :func:`~detrprune.report.plots.make_plots`, a page each, in order.
        config_summary: nested dict (e.g. from :func:`summarize_config`), printed with dotted keys
            in the appendix.
        out_pdf: output path, written atomically.
        steps: the iterative loop's per-step table, when it ran.
        validations: the baseline's validations during training, when recorded.
    """
    check_summary(summary)
    if steps is not None:
        check_steps(steps)
    for plot in plot_paths:
        if not Path(plot).is_file():
            raise ReportError(f"{plot}: plot file not found (key 'plot_paths')")

    appendix = _appendix_lines(summary, config_summary, validations)
    metadata = {
        "CreationDate": None,
        "ModDate": None,
        "Producer": f"detrprune {__version__} (matplotlib {matplotlib.__version__})",
        "Creator": "detrprune",
        "Title": REPORT_TITLE,
    }
    with report_style(), atomic_output(Path(out_pdf)) as (tmp,):
        with PdfPages(tmp, metadata=metadata) as pdf:
            fig = _answer_page(summary, validations)
            pdf.savefig(fig)
            plt.close(fig)
            tables = _table_pages(
                recovery_table(summary), _RECOVERY_HEADERS, "Recovery table", _RECOVERY_NOTE
            )
            tables += _table_pages(summary, _TABLE_HEADERS, "Summary table", _SUMMARY_NOTE)
            tables += _table_pages(summary, _DETAIL_HEADERS, "Detail table", _DETAIL_NOTE)
            elastic = elasticity_table(summary)
            if elastic["kind"].eq("filter").any():  # no structured variant: nothing to show
                tables += _table_pages(
                    elastic,
                    _ELASTICITY_HEADERS,
                    "Latency elasticity per filter variant",
                    _ELASTICITY_NOTE,
                )
            two_four = semi_structured_table(summary)
            if not two_four.empty:
                tables += _table_pages(
                    two_four,
                    _SEMI_STRUCTURED_HEADERS,
                    "2:4 semi-structured sparsity on the GPU",
                    _SEMI_STRUCTURED_NOTE + _not_timed_note(two_four),
                )
            replicated = seed_table(summary)
            if not replicated.empty:
                tables += _table_pages(
                    replicated, _SEED_HEADERS, "Training-seed replicates", _SEED_NOTE
                )
            if steps is not None:
                tables += _table_pages(steps, _STEP_HEADERS, "Iterative steps", _STEP_NOTE)
            for fig in tables:
                pdf.savefig(fig)
                plt.close(fig)
            for plot in plot_paths:
                fig = _plot_page(Path(plot))
                pdf.savefig(fig)
                plt.close(fig)
            for lines in appendix:
                fig = _text_page(lines)
                pdf.savefig(fig)
                plt.close(fig)
    log.info("wrote %s", out_pdf)


# --------------------------------------------------------------------------------------------
# report pages
# --------------------------------------------------------------------------------------------


def recovery_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows that have a control, with the control's mAP beside their own."""
    controls = summary["control"].fillna("").astype(str)
    rows = summary[controls != ""].copy()
    maps = summary.set_index("variant")["mAP"]
    rows["control_mAP"] = rows["control"].map(maps)
    return rows


def elasticity_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The baseline and every filter (structured) row: GMACs and median latency change vs the
    baseline in percent, the speedup with its paired interval, and the latency elasticity (relative
    latency drop / relative GMACs drop, :func:`detrprune.evaluate.analysis.elasticity`).

    Rows keep the summary's order and columns (so ``latency_device`` still names the device);
    without a baseline row the changes and elasticities are NaN.
    """
    base = baseline_row(summary)
    rows = summary[summary["kind"].eq("filter")]
    if base is not None:
        rows = pd.concat([summary.loc[[base.name]], rows])
    # derived_numbers looks the baseline up by its index label, so it needs the whole summary.
    numbers = derived_numbers(summary, base).loc[rows.index]
    table = rows.copy()
    # A change, not a reduction; + 0.0 turns the baseline's -0.0 into 0.
    table["gmacs_change"] = -100.0 * numbers["flops_reduction"] + 0.0
    table["latency_change"] = -100.0 * numbers["latency_reduction"] + 0.0
    table["elasticity"] = numbers["elasticity"]
    return table


def semi_structured_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows whose model has 2:4 Linears (``linears_2to4``), timed on a GPU or not."""
    if "linears_2to4" not in summary:
        return summary.iloc[0:0]
    return summary[summary["linears_2to4"].notna()]


def seed_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows with seed replicates (``seeds``), in the summary's order."""
    if "seeds" not in summary:
        return summary.iloc[0:0]
    return summary[summary["seeds"].notna()]


def _not_timed_note(rows: pd.DataFrame) -> str:
    """Why rows of the 2:4 table have no GPU numbers (each distinct reason once)."""
    if "gpu_2to4_skipped_reason" not in rows:
        return ""
    reasons = sorted(set(rows["gpu_2to4_skipped_reason"].dropna().astype(str)))
    return "".join(f"\nNot timed: {reason}" for reason in reasons)


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


def _pages(lines: list[str]) -> list[list[str]]:
    """``lines`` split into pages of at most ``_TEXT_LINES_PER_PAGE``."""
    return [lines[i : i + _TEXT_LINES_PER_PAGE] for i in range(0, len(lines), _TEXT_LINES_PER_PAGE)]


def _appendix_lines(
    summary: pd.DataFrame,
    config_summary: Mapping[str, object],
    validations: pd.DataFrame | None = None,
) -> list[list[str]]:
    """The appendix's pages: the baseline, how to read the numbers and every recovery claim in
    words; then, on pages of their own, the study's settings and the study it reproduces."""
    lines: list[str] = ["Appendix A: the baseline and how to read the numbers", ""]
    lines += ["Baseline"]
    baseline = baseline_row(summary)
    if baseline is None:
        lines.append("  (no baseline row in the summary)")
    else:
        lines += [
            f"  variant: {baseline['variant']}",
            f"  mAP: {_fmt(baseline['mAP'])}    mAP50: {_fmt(baseline['mAP50'])}"
            f"    mAP75: {_fmt(baseline['mAP75'])}",
            f"  AP {' / '.join(CLASSES)}: "
            + " / ".join(_fmt(baseline[f"AP_{cls}"]) for cls in CLASSES),
            f"  compute: {_fmt(baseline['gmacs'])} GMACs",
            f"  latency: {_fmt(baseline['latency_ms_median'])} ms median, "
            f"{_fmt(baseline['latency_ms_p90'])} ms p90 per image (batch 1)",
            f"  params: {_fmt(int(baseline['params_total']))} total, "
            f"{_fmt(int(baseline['params_nonzero']))} non-zero",
            f"  checkpoint size: {_fmt(baseline['checkpoint_mb'])} MB",
        ]
        if "mAP_ci95_low" in baseline.index:
            lines.append(
                f"  mAP 95 % interval (bootstrap over val images): "
                f"[{_fmt(baseline['mAP_ci95_low'])}, {_fmt(baseline['mAP_ci95_high'])}]"
            )
    if validations is not None:
        lines.append(f"  training: {judge_convergence(validations).sentence()}")

    devices = sorted(str(d) for d in summary["latency_device"].unique())
    n_variants = int((summary["method"] != BASELINE_METHOD).sum())
    n_controls = int(summary["variant"].map(is_control).sum())
    lines += [
        "",
        "How to read",
        f"  {n_variants} pruned variant(s) plus baseline and {n_controls} control(s) of equal",
        "    training (the baseline fine-tuned as the pruned models were); one row per model.",
        "  Each model is compared with its control (recovery table): 'significant' only when",
        "    the paired 95 % interval of the mAP difference excludes 0. Intervals are",
        "    bootstraps over the validation images (accuracy: BCa for one model, percentile",
        "    for paired differences) and over the timed rounds (latency); they do not",
        "    include the training seed's spread. On a small validation set mAP itself reads",
        "    high (in simulated 100-image sets by 0.3-0.8 of its standard deviation).",
        "  Every number comes from one machine (the latency device below). Training on other",
        "    hardware gives other numbers (CPU kernels differ: one config gave baseline mAP50",
        "    0.712 on one machine and 0.748 on another): a difference between machines inside",
        "    the training-seed spread is not a result.",
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
        "  Page 1's figure: mAP against the speedup over the baseline, every model a point with",
        "    its 95 % intervals; the Pareto front joins the models no other model beats on both",
        "    (point estimates). The figure is also results/plots/accuracy_vs_latency.png.",
    ]
    lines += ["", "Findings (fine-tuned models and controls against their control)"]
    lines += [f"  {line}" for line in findings(summary)]

    settings: list[str] = ["Appendix B: the study's settings", "", "Configuration"]
    flat = _flatten(config_summary) if config_summary else []
    if flat:
        settings += [f"  {key}: {_config_value(value)}" for key, value in flat]
    else:
        settings.append("  (no configuration given)")
    settings += [
        "",
        "The reproduced study",
        *[f"  {line}" for line in REPRODUCED_STUDY],
        f"  This report: detrprune {__version__}.",
    ]
    return _pages(lines) + _pages(settings)


def _text_page(lines: Sequence[str]) -> Figure:
    """A portrait page of monospace text under the report's title."""
    fig = plt.figure(figsize=_PAGE_PORTRAIT)
    top = 0.95
    fig.text(0.08, top, f"{REPORT_TITLE}: appendix", va="top", fontsize=11, weight="bold")
    top -= 0.04
    _monospace(fig, lines, top, 0.0145, 8.5)
    return fig


def _monospace(fig: Figure, lines: Sequence[str], top: float, step: float, size: float) -> None:
    """``lines`` in monospace from ``top`` down, ``step`` apart (page fractions); the unindented
    non-empty lines are headings, in bold and a little larger."""
    for i, line in enumerate(lines):
        heading = bool(line) and not line.startswith(" ")
        fig.text(
            0.05 if size < 8 else 0.08,
            top - i * step,
            line,
            va="top",
            fontsize=size + 1.5 if heading else size,
            weight="bold" if heading else "normal",
            family="DejaVu Sans Mono",
            zorder=-1,  # drawn, and so extracted, before any axes on the page
        )


def _answer_page(summary: pd.DataFrame, validations: pd.DataFrame | None = None) -> Figure:
    """Page 1: the study's answer for this run in words (:func:`~detrprune.report.findings.
    answer`, with the baseline's convergence when ``validations`` are given) above the
    accuracy-vs-speed figure with its Pareto front
    (:func:`~detrprune.report.plots.draw_tradeoff`), and the study it reproduces.

    The figure keeps at least ``_FIGURE_MIN_HEIGHT`` of the page: lines beyond what fits above
    it are cut, with a pointer to the tables (a study of many more methods than the workflow's).
    """
    fig = plt.figure(figsize=_PAGE_PORTRAIT)
    # zorder -1: the text is drawn, and so extracted, before the figure's axes.
    fig.text(0.5, 0.975, REPORT_TITLE, ha="center", va="top", fontsize=16, weight="bold", zorder=-1)
    subtitle = f"What this run measured (detrprune {__version__})"
    fig.text(0.5, 0.953, subtitle, ha="center", va="top", fontsize=9, zorder=-1)
    for i, line in enumerate(REPRODUCED_STUDY):
        fig.text(0.5, 0.937 - i * 0.012, line, ha="center", va="top", fontsize=7.5, zorder=-1)
    training = None if validations is None else judge_convergence(validations).sentence()
    lines = answer(summary, baseline_row(summary), training)
    room = int((_ANSWER_TOP - _FIGURE_MIN_HEIGHT - 0.08) / _ANSWER_STEP)
    if len(lines) > room:
        lines = [*lines[: room - 1], "  (more in the recovery and summary tables)"]
    _monospace(fig, lines, _ANSWER_TOP, _ANSWER_STEP, _ANSWER_FONTSIZE)
    # Room for the figure's title and its top axis (the latency) above the spec.
    top = _ANSWER_TOP - len(lines) * _ANSWER_STEP - 0.06
    spec = fig.add_gridspec(1, 1, left=0.08, right=0.97, top=top, bottom=0.02)[0]
    draw_tradeoff(fig, spec, summary, baseline=baseline_row(summary), max_columns=6, fontsize=6.5)
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
