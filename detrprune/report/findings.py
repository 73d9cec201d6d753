"""The report's findings in words, each one only as strong as its interval allows.

A change is called a gain or a drop only when the paired 95 % interval of the mAP difference to
the control of equal training excludes 0 (``significant``); otherwise the words are "no
significant difference", whatever the point estimate. A model with training-seed replicates
(:mod:`detrprune.report.seeds`) gets the same words for its mean difference over the seeds, whose
interval also covers the fine-tuning's own randomness.
"""

from __future__ import annotations

import textwrap

import pandas as pd

from detrprune.variants import SCRATCH_FOLDERS, is_control


def _verdict(delta: float, low: float, high: float) -> str:
    """The words for a difference and its interval."""
    if pd.isna(low) or pd.isna(high):
        return "not compared"
    if low <= 0 <= high:
        return "no significant difference"
    return "significant gain" if delta > 0 else "significant drop"


def _seed_line(row: pd.Series) -> list[str]:
    """The difference over training seeds, when the row has replicates."""
    if pd.isna(row.get("seeds", float("nan"))):
        return []
    mean, low, high = (row[f"delta_mAP_seed_{key}"] for key in ("mean", "ci95_low", "ci95_high"))
    return [
        f"  over {int(row['seeds'])} training seeds {mean:+.3f} [{low:+.3f}, {high:+.3f}]: "
        f"{_verdict(mean, low, high)}"
    ]


def findings(summary: pd.DataFrame) -> list[str]:
    """Two lines per fine-tuned model and control (the recovery claims), in table order: the
    share of the control's mAP kept, then the difference with its interval and the verdict; a
    third with the difference over training seeds where the row has seed replicates."""
    needed = {"control", "map_kept", "delta_mAP", "delta_mAP_ci95_low", "significant"}
    if not needed <= set(summary.columns):
        return ["(no comparisons with controls in this summary)"]
    rows = summary[summary["finetuned"].astype(bool) | summary["variant"].map(is_control)]
    rows = rows[rows["control"].fillna("").astype(str) != ""]
    lines = []
    for _, row in rows.iterrows():
        kept = "n/a" if pd.isna(row["map_kept"]) else f"{100 * row['map_kept']:.0f} %"
        lines += [
            f"{row['variant']}: {kept} of the mAP of {row['control']}",
            f"  difference {row['delta_mAP']:+.3f} [{row['delta_mAP_ci95_low']:+.3f}, "
            f"{row['delta_mAP_ci95_high']:+.3f}]: "
            f"{_verdict(row['delta_mAP'], row['delta_mAP_ci95_low'], row['delta_mAP_ci95_high'])}",
            *_seed_line(row),
        ]
    return lines or ["(no fine-tuned model has a control in this summary)"]


# --------------------------------------------------------------------------------------------
# the answer on the report's first page
# --------------------------------------------------------------------------------------------

# What a ratio counts, by kind, and the heading of each kind's block.
_KIND_HEADINGS: dict[str, str] = {
    "filter": "Filter pruning (structured; ratio = % of channels removed)",
    "weight": "Weight pruning (unstructured and 2:4; ratio = % of weights zeroed)",
}
ITERATIVE_METHOD = "iterative"
_WIDTH = 112  # characters per line of the first page
# A model that kept less than this share of its control's mAP has collapsed.
COLLAPSED_KEPT = 0.5
_HOW_TO_READ = (
    "Each model against its control of equal training: the mAP difference with its paired 95 % "
    "interval over the validation images, a drop or a gain only when the interval excludes 0. "
    "ft = fine-tuned, 0-shot = pruned only. highest ratio = the highest with no significant drop "
    "(max: the highest tested; none (r): every ratio dropped, the numbers are the lowest's, r). "
    "speedup = the baseline's median latency / the model's: faster or slower only when its 95 % "
    "interval excludes 1 (n.s.: it does not). Sizes are against the baseline."
)
_HEADER = (
    f"  {'method':<17}{'training':<9}{'highest ratio':<14}{'delta mAP [95 % CI]':<25}"
    f"{'speedup [95 % CI]':<27}size"
)


def no_significant_drop(row: pd.Series) -> bool | None:
    """Whether the paired interval of the mAP difference to the control does not lie below 0
    (None where there is no interval)."""
    low, high = row.get("delta_mAP_ci95_low"), row.get("delta_mAP_ci95_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return None
    return bool(high >= 0)


def speed_words(row: pd.Series) -> str:
    """The speedup with its interval and what the interval says: faster / slower only when it
    excludes 1, else "n.s." (no significant change)."""
    speedup = row.get("speedup")
    if speedup is None or pd.isna(speedup):
        return "n/a"
    low, high = row.get("speedup_ci95_low"), row.get("speedup_ci95_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{speedup:.2f}x (no interval)"
    word = "faster" if low > 1 else "slower" if high < 1 else "n.s."
    return f"{speedup:.2f}x [{low:.2f}, {high:.2f}] {word}"


def _delta_words(row: pd.Series) -> str:
    if pd.isna(row.get("delta_mAP_ci95_low")) or pd.isna(row.get("delta_mAP_ci95_high")):
        return "not compared" if pd.isna(row.get("delta_mAP")) else f"{row['delta_mAP']:+.3f}"
    return (
        f"{row['delta_mAP']:+.3f} [{row['delta_mAP_ci95_low']:+.3f}, "
        f"{row['delta_mAP_ci95_high']:+.3f}]"
    )


def _share(value: object, reference: object) -> float:
    try:
        value, reference = float(value), float(reference)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return value / reference if reference > 0 else float("nan")


def size_words(row: pd.Series, base: pd.Series | None) -> str:
    """A model's size against the baseline: a filter-pruned model's parameters and dense
    checkpoint, a weight-pruned one's non-zero parameters and sparse checkpoint."""
    reference = None if base is None else base["params_nonzero"]
    nonzero = _share(row["params_nonzero"], reference)
    if row["kind"] == "weight":
        sparse = row.get("sparse_mb")
        stored = f", {sparse:.1f} MB sparse" if sparse is not None and not pd.isna(sparse) else ""
        return f"{100 * nonzero:.0f} % non-zero{stored}" if not pd.isna(nonzero) else "n/a"
    params = row.get("params_fraction")
    if params is None or pd.isna(params):
        params = _share(row["params_total"], None if base is None else base["params_total"])
    words = f"{100 * params:.0f} % params" if not pd.isna(params) else "params n/a"
    return f"{words}, {row['checkpoint_mb']:.1f} MB"


def furthest(rows: pd.DataFrame) -> tuple[str, pd.Series | None]:
    """The highest ratio of ``rows`` with no significant drop and that row (the fastest of those
    at that ratio). "none" with the lowest ratio's row where every ratio dropped significantly;
    "n/a" with the highest ratio's row where none has an interval."""
    if rows.empty:
        return "-", None
    verdicts = rows.apply(no_significant_drop, axis=1)
    speed = rows["speedup"] if "speedup" in rows else pd.Series(0.0, index=rows.index)
    order = pd.DataFrame({"ratio": rows["ratio"], "speed": speed.fillna(0.0)})
    compared = verdicts.notna()
    if not compared.any():
        return "n/a", rows.loc[order.sort_values(["ratio", "speed"]).index[-1]]
    kept = verdicts[compared].astype(bool)
    ok = kept.index[kept]
    if len(ok) == 0:
        lowest = order.loc[compared[compared].index].sort_values(["ratio", "speed"])
        return f"none ({int(lowest['ratio'].iloc[0])} %)", rows.loc[lowest.index[0]]
    best = order.loc[ok].sort_values(["ratio", "speed"]).index[-1]
    ratio = int(rows.loc[best, "ratio"])
    tested = int(rows.loc[compared[compared].index, "ratio"].max())
    return (f"{ratio} % (max)" if ratio == tested else f"{ratio} %"), rows.loc[best]


def _method_line(name: str, rows: pd.DataFrame, base: pd.Series | None) -> list[str]:
    """One line per training of one method: the furthest it went with no significant drop."""
    lines = []
    for finetuned, training in ((True, "ft"), (False, "0-shot")):
        group = rows[rows["finetuned"].astype(bool) == finetuned]
        label, row = furthest(group)
        if row is None:
            continue
        lines.append(
            f"  {name:<17}{training:<9}{label:<14}{_delta_words(row):<25}"
            f"{speed_words(row):<27}{size_words(row, base)}"
        )
    return lines


def _kind_sentence(rows: pd.DataFrame, base: pd.Series | None) -> list[str]:
    """What a kind of pruning bought without a significant drop: the fastest such model and
    the smallest one (by non-zero parameters)."""
    verdicts = rows.apply(no_significant_drop, axis=1)
    ok = rows[verdicts.eq(True)]
    if verdicts.isna().all():
        return ["    (no paired comparison with the controls: no claim on accuracy)"]
    if ok.empty:
        return ["    Every model of this kind lost mAP significantly against its control."]
    if "speedup_ci95_low" in ok and ok["speedup_ci95_low"].gt(1).any():
        fast = ok.loc[ok["speedup"].astype(float).idxmax()]
        speed = f"fastest {fast['variant']}, {speed_words(fast)};"
    else:
        speed = "none of them significantly faster than the baseline;"
    small = ok.loc[ok["params_nonzero"].astype(float).idxmin()]
    return [
        f"    Of its {len(ok)} model(s) with no significant drop: {speed}",
        f"    smallest {small['variant']}, {size_words(small, base)}.",
    ]


def is_scratch(method: object) -> bool:
    """Whether a summary ``method`` is a scratch twin's (``scratch/<method>``, ...)."""
    return str(method).split("/", 1)[0] in SCRATCH_FOLDERS.values()


_SCRATCH_WORDS = {
    "significant gain": "pruning beat training the small model",
    "significant drop": "training the small model did better",
    "no significant difference": "no significant difference",
    "not compared": "not compared",
}
# What each scratch budget holds equal (detrprune.train.scratch).
_BUDGET_WORDS = {"e": "as many training images", "b": "the same training compute"}


def scratch_lines(summary: pd.DataFrame) -> list[str]:
    """Prune, or train the small model? One line per fine-tuned target and scratch twin: the
    target's mAP minus the twin's with its paired interval, in words only as strong as the
    interval allows (none when no row has a twin)."""
    lines = []
    for key, folder in SCRATCH_FOLDERS.items():
        budget = _BUDGET_WORDS[key]
        column = f"delta_vs_{folder}_mAP"
        if column not in summary:
            continue
        maps = summary.set_index("variant")["mAP"]
        for _, row in summary[summary[column].notna()].iterrows():
            twin = f"{folder}/{row['variant'].removeprefix('finetune/')}"
            delta, low, high = (row[f"{column}{end}"] for end in ("", "_ci95_low", "_ci95_high"))
            twin_map = maps.get(twin, float("nan"))
            verdict = _SCRATCH_WORDS[_verdict(delta, low, high)]
            lines += [
                f"  {row['variant']} {row['mAP']:.3f} vs {twin} {twin_map:.3f} ({budget}):",
                f"    {delta:+.3f} [{low:+.3f}, {high:+.3f}]: {verdict}",
            ]
    if not lines:
        return []
    return [
        "Prune, or train the small model? (pruned + fine-tuned vs the same shapes from scratch)"
    ] + lines


def collapsed(summary: pd.DataFrame) -> pd.DataFrame:
    """The models that kept less than half of their control's mAP (a significant drop, where
    there is an interval)."""
    if "map_kept" not in summary:
        return summary.iloc[0:0]
    low = summary["map_kept"].astype(float) < COLLAPSED_KEPT
    drop = summary.apply(no_significant_drop, axis=1).ne(True)
    return summary[low & drop]


def _two_four_lines(rows: pd.DataFrame) -> list[str]:
    """The 2:4 models' GPU timing (dense fp16 / 2:4 kernels, one timing without an interval), or
    why they were not timed."""
    if "linears_2to4" not in rows or rows["linears_2to4"].isna().all():
        return []
    timed = rows[rows["gpu_speedup_2to4"].notna()] if "gpu_speedup_2to4" in rows else rows[:0]
    if timed.empty:
        reasons = rows.get("gpu_2to4_skipped_reason", pd.Series(dtype=object)).dropna()
        why = f": {sorted(set(reasons.astype(str)))[0]}" if not reasons.empty else ""
        text = f"2:4 sparse kernels not timed on a GPU{why}."
        return textwrap.wrap(text, _WIDTH, initial_indent="  ", subsequent_indent="    ")
    speeds = [f"{row['variant']} {row['gpu_speedup_2to4']:.2f}x" for _, row in timed.iterrows()]
    heading = "  2:4 on the GPU, dense fp16 time / 2:4 kernels' (one timing each, no interval):"
    return [heading, *_wrap(speeds, "    ")]


def _reference_lines(summary: pd.DataFrame, base: pd.Series | None) -> list[str]:
    """Where the latency was timed, and the baseline every ratio of speed and size is against."""
    devices = sorted(str(d) for d in summary["latency_device"].dropna().unique())
    timed = f"  Latency: median per image at batch 1, timed on {'; '.join(devices) or 'n/a'}"
    if "gpu_latency_device" in summary:
        gpus = sorted(str(d) for d in summary["gpu_latency_device"].dropna().unique())
        if gpus:
            timed += f" (GPU: {'; '.join(gpus)})"
    lines = [timed + "."]
    if base is not None:
        interval = ""
        if not pd.isna(base.get("mAP_ci95_low", float("nan"))):
            interval = f" [{base['mAP_ci95_low']:.3f}, {base['mAP_ci95_high']:.3f}]"
        lines.append(
            f"  Baseline: mAP {base['mAP']:.3f}{interval}, {base['latency_ms_median']:.1f} ms, "
            f"{base['params_total'] / 1e6:.2f}M params, {base['checkpoint_mb']:.1f} MB checkpoint."
        )
    return lines


def answer(
    summary: pd.DataFrame, base: pd.Series | None = None, training: str | None = None
) -> list[str]:
    """The study's answer for this run, in words: per kind of pruning and method, the highest
    ratio with no significant mAP drop against the control of equal training (with the
    difference's interval), what that model gained in speed (only an interval that excludes 1
    is a speedup) and size; the models that collapsed; the machine the latency was timed on.

    ``base`` is the baseline row (sizes are relative to it); ``training`` the verdict on the
    baseline's convergence (:mod:`detrprune.report.convergence`), when there is one. Each line
    fits the first page.
    """
    methods = summary[summary["method"] != "baseline"]
    twins = methods["method"].map(is_scratch)
    methods = methods[~twins]
    lines = [
        "This run",
        *_reference_lines(summary, base),
        *(
            textwrap.wrap(
                f"Baseline training: {training}",
                _WIDTH,
                initial_indent="  ",
                subsequent_indent="    ",
            )
            if training
            else []
        ),
        *textwrap.wrap(_HOW_TO_READ, _WIDTH, initial_indent="  ", subsequent_indent="  "),
        "",
        _HEADER,
    ]
    blocks = [
        (_KIND_HEADINGS.get(kind, f"{kind} pruning"), methods[methods["kind"] == kind])
        for kind in [*_KIND_HEADINGS, *sorted(set(methods["kind"]) - set(_KIND_HEADINGS))]
    ]
    for heading, rows in blocks:
        rows = rows[rows["method"] != ITERATIVE_METHOD]
        if rows.empty:
            continue
        lines.append(heading)
        for method, group in rows.groupby("method", sort=True):
            lines += _method_line(str(method), group, base)
        lines += _kind_sentence(rows, base)
    lines += _two_four_lines(methods)
    loop = methods[methods["method"] == ITERATIVE_METHOD]
    if not loop.empty:
        lines.append("Iterative prune / fine-tune loop (against control/iterative)")
        lines += _method_line(ITERATIVE_METHOD, loop, base)
    lines += scratch_lines(summary)
    gone = collapsed(methods)
    if not gone.empty:
        names = [f"{row['variant']} ({row['mAP']:.3f})" for _, row in gone.iterrows()]
        lines.append(
            f"Collapsed: {len(names)} model(s) kept under {100 * COLLAPSED_KEPT:.0f} % of their "
            "control's mAP (mAP in brackets):"
        )
        lines += _wrap(names, "  ")
    return lines


def _wrap(items: list[str], indent: str, width: int = _WIDTH) -> list[str]:
    """Comma-join ``items`` into lines of at most ``width`` characters."""
    lines: list[str] = []
    line = indent
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece + " "
    lines.append(line.rstrip())
    return lines
