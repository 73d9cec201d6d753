"""The report's appendix, text pages after the plots: the baseline's numbers, how to read the
numbers and every recovery claim in words (:func:`~detrprune.report.findings.findings`), then
the study's settings (the parts of the config :func:`summarize_config` picks) and the study it
reproduces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune import __version__
from detrprune.constants import CLASSES
from detrprune.report.convergence import judge_convergence
from detrprune.report.findings import findings
from detrprune.report.pdf.layout import (
    _PAGE_PORTRAIT,
    REPORT_TITLE,
    REPRODUCED_STUDY,
    _fmt,
    _monospace,
)
from detrprune.report.summary import BASELINE_METHOD, baseline_row
from detrprune.variants import is_control

_TEXT_LINES_PER_PAGE = 58


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
