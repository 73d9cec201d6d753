"""Numbers derived from the study's summary table (``results/summary.csv``).

Pure functions over the summary as a :class:`pandas.DataFrame` (:func:`read_summary`):

- :func:`derived_numbers`: per variant, against the baseline (:func:`baseline_row`), the GMACs
  and latency reductions, the speedup, the latency elasticity, the achieved throughput
  (:func:`gmacs_per_second`) and the share of the baseline mAP kept;
- :func:`elasticity`: the relative latency drop per relative GMACs drop, and
  :func:`speedup_to_elasticity` to turn a speedup (or a speedup interval's ends) into one;
- :func:`part_changes`: an elasticity explained by model part, each part's GMACs and latency
  against the baseline's same part (``latency_ms_<part>``, where the summary has it);
- :func:`size_numbers`: the sparse checkpoint against its information bound and the dense file.

Missing numbers are NaN (:func:`safe_ratio`), never an error. Rows are keyed on the ``kind`` /
``scope`` / ``ratio`` / ``finetuned`` columns, never on the user-chosen method name. Nothing here
imports torch: the re-timing lives in :mod:`detrprune.evaluate.retime`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from detrprune.constants import LATENCY_PARTS

# Columns kept as text (stripped); ``finetuned`` is read as a truth value.
TEXT_COLUMNS = (
    "variant",
    "method",
    "kind",
    "scope",
    "control",
    "latency_device",
    "gpu_latency_device",
)
TRUE_WORDS = ("true", "1", "yes", "t")
# Numeric columns read cell by cell: always in the table (NaN when the file lacks them), and a
# cell that is neither blank nor a number is an error. Other columns are numbers or NaN.
CHECKED_COLUMNS = (
    "ratio",
    "mAP",
    "gmacs",
    "latency_ms_median",
    "checkpoint_mb",
    "sparse_mb",
    "sparse_bound_mb",
)
# Old summaries (before ``kind`` existed) named the kind in ``method``.
KNOWN_KINDS = ("baseline", "filter", "weight")
# pycocotools writes -1 for an AP it could not compute: that is "missing", not a score.
AP_COLUMNS = ("mAP", "mAP50", "mAP75", "kitti_mAP_moderate")


class SummaryError(ValueError):
    """The summary file is missing or unreadable, or an input the re-timing needs is missing."""


# --------------------------------------------------------------------------------------------
# the summary table
# --------------------------------------------------------------------------------------------


def read_summary(path: Path) -> pd.DataFrame:
    """Read ``summary.csv`` into a table with one row per evaluated model.

    Only ``variant`` and one of ``kind`` / ``method`` are required. Without a ``kind`` column, a
    ``method`` named ``baseline``, ``filter`` or ``weight`` (the format before ``kind`` existed)
    gives it. The table has the :data:`TEXT_COLUMNS` the file has plus ``kind``, ``scope``,
    ``control`` and ``latency_device`` as text, ``finetuned`` as bool, ``ratio`` as nullable
    ``Int64`` and every other column (:data:`CHECKED_COLUMNS` always) as float, NaN where missing; a
    negative AP is NaN.

    Raises:
        SummaryError: a one-line message naming ``path``: missing/unreadable file, no header, no
            rows, a required column missing, an empty ``variant`` or a bad number in a checked
            column (with its line, counting the header as line 1).
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except FileNotFoundError as exc:
        raise SummaryError(f"{path}: no such file (run the workflow first: make demo)") from exc
    except pd.errors.EmptyDataError as exc:
        raise SummaryError(f"{path}: empty file, expected a CSV header") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = " ".join(str(exc).split())  # the C parser's messages end in a newline
        raise SummaryError(f"{path}: cannot read the summary ({reason})") from exc
    columns = list(raw.columns)
    if "variant" not in columns:
        raise SummaryError(f"{path}: missing column 'variant' (is this the summary CSV?)")
    if "kind" not in columns and "method" not in columns:
        raise SummaryError(f"{path}: missing column 'kind' (and no 'method' to derive it from)")
    if raw.empty:
        raise SummaryError(f"{path}: no rows")
    raw = raw.reset_index(drop=True).apply(lambda column: column.str.strip())

    def text(column: str) -> pd.Series:
        return raw[column] if column in raw else pd.Series("", index=raw.index, dtype=str)

    def line(position: int) -> int:
        return position + 2  # the header is line 1

    empty = raw.index[raw["variant"] == ""]
    if len(empty):
        raise SummaryError(f"{path}: line {line(empty[0])} has an empty 'variant'")
    table = raw[[c for c in TEXT_COLUMNS if c in raw]].copy()
    if "kind" not in raw:
        method = text("method")
        table["kind"] = method.where(method.isin(KNOWN_KINDS), "")
    for column in ("scope", "control", "latency_device"):
        table[column] = text(column)
    table["finetuned"] = text("finetuned").str.lower().isin(TRUE_WORDS)
    numeric = [c for c in columns if c not in TEXT_COLUMNS and c != "finetuned"]
    for column in numeric + [c for c in CHECKED_COLUMNS if c not in numeric]:
        cells = text(column)
        numbers = pd.to_numeric(cells, errors="coerce").astype(float)
        if column in CHECKED_COLUMNS:
            bad = raw.index[numbers.isna() & (cells != "") & (cells.str.lower() != "nan")]
            if len(bad):
                raise SummaryError(
                    f"{path}: line {line(bad[0])}, column '{column}': "
                    f"{cells[bad[0]]!r} is not a number"
                )
        table[column] = numbers.mask(numbers < 0) if column in AP_COLUMNS else numbers
    # a percentage: 20.0 (or 20.5, as int() did) is ratio 20; an infinite one is missing
    table["ratio"] = np.trunc(table["ratio"].where(np.isfinite(table["ratio"]))).astype("Int64")
    return table


def baseline_row(summary: pd.DataFrame) -> pd.Series | None:
    """The baseline (kind ``baseline``, not fine-tuned if there is such a row), or None.

    The row keeps its index label as ``name``, so a per-row Series can be looked up for it.
    """
    candidates = summary[summary["kind"].eq("baseline")]
    plain = candidates[~candidates["finetuned"].astype(bool)]
    chosen = plain if not plain.empty else candidates
    return None if chosen.empty else chosen.iloc[0]


def row_value(row: pd.Series | None, column: str) -> float:
    """``row[column]`` as a float; NaN without a row."""
    return math.nan if row is None else float(row[column])


def ratio_values(summary: pd.DataFrame) -> pd.Series:
    """The ``ratio`` column as floats (NaN where missing), for comparisons."""
    return summary["ratio"].astype("Float64").astype(float)


# --------------------------------------------------------------------------------------------
# derived numbers
# --------------------------------------------------------------------------------------------


def safe_ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, NaN where either is missing or the denominator is not > 0.

    Each side is a number or a Series (the result is a Series if either is).
    """
    if isinstance(denominator, pd.Series):
        return numerator / denominator.where(denominator > 0)
    return numerator / (denominator if denominator > 0 else math.nan)


def gmacs_per_second(gmacs: Any, latency_ms: Any) -> Any:
    """Achieved throughput: GMACs of one image over its latency in seconds."""
    return safe_ratio(gmacs, latency_ms / 1000.0)


def derived_numbers(
    summary: pd.DataFrame, base: pd.Series | None, latency: pd.Series | None = None
) -> pd.DataFrame:
    """Per-variant numbers relative to the baseline, one row per summary row.

    ``latency`` is each row's median latency in ms (default: the summary's; pass the re-timed
    ones instead); the baseline's is taken from it too. ``flops_reduction`` and
    ``latency_reduction`` are fractions (0.3 = 30 % fewer); ``speedup`` is baseline latency /
    latency; ``elasticity`` is :func:`elasticity` of the two reductions; ``map_retained`` is the
    share of the baseline mAP kept.
    """
    latency = summary["latency_ms_median"] if latency is None else latency.astype(float)
    base_latency = math.nan if base is None else float(latency.loc[base.name])
    gmacs = summary["gmacs"]
    flops_reduction = 1.0 - safe_ratio(gmacs, row_value(base, "gmacs"))
    latency_reduction = 1.0 - safe_ratio(latency, base_latency)
    return pd.DataFrame(
        {
            "gmacs": gmacs,
            "flops_reduction": flops_reduction,
            "latency_ms_median": latency,
            "latency_reduction": latency_reduction,
            "speedup": safe_ratio(base_latency, latency),
            "elasticity": elasticity(latency_reduction, flops_reduction),
            "gmacs_per_s": gmacs_per_second(gmacs, latency),
            "map_retained": safe_ratio(summary["mAP"], row_value(base, "mAP")),
        },
        index=summary.index,
    )


def elasticity(latency_reduction: Any, flops_reduction: Any) -> Any:
    """Latency elasticity: the relative latency drop per relative GMACs drop.

    1.0: latency falls in proportion to the GMACs; 0: it does not fall at all; below 0: it rises.
    NaN where the GMACs do not fall (nothing to be elastic to) or a number is missing.
    """
    return safe_ratio(latency_reduction, flops_reduction)


def speedup_to_elasticity(speedup: Any, flops_reduction: Any) -> Any:
    """The elasticity a speedup (baseline latency / latency) gives at ``flops_reduction``.

    Monotone in the speedup, so a speedup interval's ends give the elasticity interval's ends.
    """
    return elasticity(1.0 - safe_ratio(1.0, speedup), flops_reduction)


# Each latency part beside the GMACs part it is compared with: ``rest`` (pre/post-processing,
# proposal selection: the time no module claims) against ``other`` (the GMACs no module claims).
PART_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (part, "other" if part == "rest" else part) for part in LATENCY_PARTS
)


def _column(summary: pd.DataFrame, column: str) -> pd.Series:
    """A numeric column as floats, all NaN when the summary lacks it (older summaries)."""
    if column not in summary:
        return pd.Series(math.nan, index=summary.index, dtype=float)
    return pd.to_numeric(summary[column], errors="coerce").astype(float)


def part_changes(summary: pd.DataFrame, base: pd.Series | None) -> list[dict[str, dict[str, Any]]]:
    """Per row, per latency part: its GMACs and latency against the baseline's same part.

    One mapping per summary row (in order), keyed by the parts of
    :data:`~detrprune.constants.LATENCY_PARTS`, each with ``gmacs_part`` (the GMACs column it
    is compared with, see :data:`PART_PAIRS`), ``baseline_gmacs``, ``gmacs``,
    ``gmacs_reduction``, ``baseline_latency_ms``, ``latency_ms``, ``latency_reduction`` and
    ``elasticity`` (fractions as in :func:`derived_numbers`; NaN where the summary lacks the
    part). A part whose GMACs fall while its latency does not is where a variant's elasticity
    falls short. Latencies are always the summary's: the re-timing times whole models only.
    """
    parts: dict[str, pd.DataFrame] = {}
    for latency_part, gmacs_part in PART_PAIRS:
        gmacs = _column(summary, f"gmacs_{gmacs_part}")
        latency = _column(summary, f"latency_ms_{latency_part}")
        base_gmacs = math.nan if base is None else float(gmacs.loc[base.name])
        base_latency = math.nan if base is None else float(latency.loc[base.name])
        gmacs_reduction = 1.0 - safe_ratio(gmacs, base_gmacs)
        latency_reduction = 1.0 - safe_ratio(latency, base_latency)
        parts[latency_part] = pd.DataFrame(
            {
                "baseline_gmacs": base_gmacs,
                "gmacs": gmacs,
                "gmacs_reduction": gmacs_reduction,
                "baseline_latency_ms": base_latency,
                "latency_ms": latency,
                "latency_reduction": latency_reduction,
                "elasticity": elasticity(latency_reduction, gmacs_reduction),
            },
            index=summary.index,
        )
    records = {part: frame.to_dict("records") for part, frame in parts.items()}
    return [
        {
            latency_part: {"gmacs_part": gmacs_part, **records[latency_part][position]}
            for latency_part, gmacs_part in PART_PAIRS
        }
        for position in range(len(summary))
    ]


def size_numbers(summary: pd.DataFrame) -> pd.DataFrame:
    """Sparse checkpoint size against its information bound and against the dense file."""
    sizes = summary[["checkpoint_mb", "sparse_mb", "sparse_bound_mb"]].astype(float)
    sizes["sparse_over_bound"] = safe_ratio(sizes["sparse_mb"], sizes["sparse_bound_mb"])
    sizes["dense_over_sparse"] = safe_ratio(sizes["checkpoint_mb"], sizes["sparse_mb"])
    return sizes
