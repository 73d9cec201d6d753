"""The report's tables: which columns each one shows under which short header, the note under
it, the rows it takes from the summary (recovery against the control, latency elasticity, 2:4
sparsity on the GPU, seed replicates), and how a table is laid out on landscape pages of at most
25 rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune.constants import CLASSES, GMACS_PARTS
from detrprune.evaluate.analysis import derived_numbers
from detrprune.report.pdf.layout import _PAGE_LANDSCAPE, _fmt
from detrprune.report.summary import baseline_row
from detrprune.variants import SCRATCH_FOLDERS

_TABLE_ROWS_PER_PAGE = 25


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


# Prune, or train the small model? Each fine-tuned target beside its scratch twins.
_SCRATCH_HEADERS: dict[str, str] = {
    "variant": "variant",
    "mAP": "mAP",
    "scratch_mAP": "scratch mAP",
    "delta_vs_scratch_mAP": "d vs scratch",
    "delta_vs_scratch_mAP_ci95_low": "95% low",
    "delta_vs_scratch_mAP_ci95_high": "95% high",
    "beats_scratch": "beats",
    "scratch_b_mAP": "scratch_b mAP",
    "delta_vs_scratch_b_mAP": "d vs scratch_b",
    "delta_vs_scratch_b_mAP_ci95_low": "95% low",
    "delta_vs_scratch_b_mAP_ci95_high": "95% high",
    "beats_scratch_b": "beats",
}
_SCRATCH_NOTE = (
    "scratch = the target's pruned shapes, freshly initialised and trained with the baseline's "
    "recipe for the baseline's + the fine-tune's iterations (as many images);\nscratch_b = the "
    "same for the same training compute (those iterations x baseline GMACs / pruned GMACs). "
    "d = the target's mAP - the twin's, paired 95 % interval;\nbeats = the interval lies above "
    "0 (n/a: no such twin)."
)


def scratch_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuned targets with a scratch twin, with each twin's mAP beside their own."""
    columns = [c for c in summary if c.startswith("delta_vs_scratch")]
    if not columns:
        return summary.iloc[0:0]
    rows = summary[summary[columns].notna().any(axis=1)].copy()
    maps = summary.set_index("variant")["mAP"]
    for folder in SCRATCH_FOLDERS.values():
        twins = folder + "/" + rows["variant"].str.removeprefix("finetune/")
        rows[f"{folder}_mAP"] = twins.map(maps)
    return rows


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
