"""Check the pruning study's measured goals against ``results/summary.csv``.

Run after the workflow (``make demo``)::

    .venv/bin/python bench/pruning_goals.py                 # summary numbers only
    .venv/bin/python bench/pruning_goals.py --retime        # plus an interleaved re-timing

It prints one table row per variant (GMACs, FLOPs reduction, latency, speedup, achieved GMAC/s,
sparse checkpoint size against its bound) and a verdict per goal:

a. filter pruning at 50 % keeps >= 90 % of the baseline mAP after fine-tuning (per scope);
b. CPU latency falls by at least 0.8x the fraction FLOPs fall (every filter variant);
c. filter scope ``backbone+ffn`` cuts more FLOPs than ``backbone`` at equal ratio (zero-shot);
d. every sparse checkpoint is <= 1.1x its information bound, and at >= 90 % weight pruning it is
   >= 6x smaller than the dense checkpoint.

Verdicts are ``met``, ``not met`` or ``not measured`` (a row or column the summary lacks). They are
measurements, not assertions: the exit status is 0 whatever they are, and non-zero (with a
one-line error) only when the summary cannot be read.

``--retime`` re-times the baseline and the variants in one process, round-robin, so that the
drift of a shared machine between workflow jobs does not masquerade as a speedup; goal b is then
judged on the re-timed numbers as well. Everything goes to a JSON file (``--out``).

Rows are keyed on the summary's ``kind`` / ``scope`` / ``ratio`` / ``finetuned`` columns, never on
the user-chosen method name.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detrprune.jobs import write_json

# --------------------------------------------------------------------------------------------
# goal thresholds
# --------------------------------------------------------------------------------------------

FILTER_GOAL_RATIO = 50  # goal a: the filter ratio (percent) checked after fine-tuning
MAP_KEEP = 0.90  # goal a: share of the baseline mAP to keep
LATENCY_SHARE = 0.80  # goal b: latency must fall by this share of the FLOPs fall
SCOPE_NARROW, SCOPE_WIDE = "backbone", "backbone+ffn"  # goal c: the filter scopes compared
SPARSE_BOUND_SLACK = 1.10  # goal d: sparse_mb <= this x sparse_bound_mb
WEIGHT_HIGH_RATIO = 90  # goal d: weight ratio (percent, and above) for the dense/sparse check
DENSE_OVER_SPARSE_MIN = 6.0  # goal d: checkpoint_mb / sparse_mb at that ratio

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"

DEFAULT_SUMMARY = Path("results/summary.csv")
DEFAULT_RESULTS = Path("results")
DEFAULT_OUT = Path("results/bench/pruning_goals.json")
DEFAULT_CONFIG = Path("config.yaml")
DEFAULT_VAL_JSON = Path("data/coco/val.json")
DEFAULT_DATA_ROOT = Path("data/kitti")

# Columns read as text; every other column is read as a number (blank -> NaN).
_TEXT_COLUMNS = ("variant", "method", "kind", "scope", "latency_device", "finetuned")
# Old summaries (before ``kind`` existed) named the kind in ``method``.
_KNOWN_KINDS = ("baseline", "filter", "weight")
# pycocotools writes -1 for an AP it could not compute: that is "missing", not a score.
_AP_COLUMNS = ("mAP", "mAP50", "mAP75", "kitti_mAP_moderate")


class SummaryError(ValueError):
    """The summary file is missing or unreadable, or an input ``--retime`` needs is missing."""


# --------------------------------------------------------------------------------------------
# the summary table
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One evaluated model of the summary: its identity and its numeric columns."""

    variant: str
    kind: str
    scope: str  # "" when the summary does not record it
    ratio: int | None
    finetuned: bool
    latency_device: str
    values: dict[str, float] = field(default_factory=dict)

    def get(self, column: str) -> float:
        """The numeric ``column`` of this row, NaN when the summary lacks it."""
        return self.values.get(column, math.nan)


def _number(text: str | None) -> float:
    """A CSV cell as a float; blank or non-numeric cells are NaN."""
    if text is None or not text.strip():
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _boolean(text: str | None) -> bool:
    """A CSV truth value (pandas writes ``True``/``False``)."""
    return (text or "").strip().lower() in ("true", "1", "yes", "t")


def read_summary(path: Path) -> list[Row]:
    """Parse ``summary.csv`` into rows.

    Only ``variant`` and one of ``kind`` / ``method`` are required; every other column may be
    missing (its numbers are then NaN). Without a ``kind`` column, a ``method`` named
    ``baseline``, ``filter`` or ``weight`` (the summary format before ``kind`` existed) gives it.

    Raises:
        SummaryError: missing/unreadable file, no header, no rows, or a required column missing.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            records = list(reader)
    except FileNotFoundError as exc:
        raise SummaryError(f"{path}: no such file (run the workflow first: make demo)") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SummaryError(f"{path}: cannot read the summary ({exc})") from exc
    if not columns:
        raise SummaryError(f"{path}: empty file, expected a CSV header")
    if "variant" not in columns:
        raise SummaryError(f"{path}: missing column 'variant' (is this the summary CSV?)")
    if "kind" not in columns and "method" not in columns:
        raise SummaryError(f"{path}: missing column 'kind' (and no 'method' to derive it from)")
    if not records:
        raise SummaryError(f"{path}: no rows")

    rows: list[Row] = []
    for record in records:
        variant = (record.get("variant") or "").strip()
        if not variant:
            raise SummaryError(f"{path}: a row has an empty 'variant'")
        if "kind" in columns:
            kind = (record.get("kind") or "").strip()
        else:
            method = (record.get("method") or "").strip()
            kind = method if method in _KNOWN_KINDS else ""
        ratio = _number(record.get("ratio"))
        values = {
            column: _number(record.get(column)) for column in columns if column not in _TEXT_COLUMNS
        }
        for column in _AP_COLUMNS:
            if values.get(column, math.nan) < 0:
                values[column] = math.nan
        rows.append(
            Row(
                variant=variant,
                kind=kind,
                scope=(record.get("scope") or "").strip(),
                ratio=None if math.isnan(ratio) else int(ratio),
                finetuned=_boolean(record.get("finetuned")),
                latency_device=(record.get("latency_device") or "").strip(),
                values=values,
            )
        )
    return rows


def baseline_row(rows: Sequence[Row]) -> Row | None:
    """The baseline (kind ``baseline``, not fine-tuned if there is such a row), or None."""
    candidates = [r for r in rows if r.kind == "baseline"]
    plain = [r for r in candidates if not r.finetuned]
    chosen = plain or candidates
    return chosen[0] if chosen else None


# --------------------------------------------------------------------------------------------
# derived numbers
# --------------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is missing or the denominator is not > 0."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def gmacs_per_second(gmacs: float, latency_ms: float) -> float:
    """Achieved throughput: GMACs of one image over its latency in seconds."""
    return _ratio(gmacs, latency_ms / 1000.0)


def derived_numbers(
    row: Row, base: Row | None, latency_ms: float, base_latency_ms: float
) -> dict[str, float]:
    """Per-variant numbers relative to the baseline, with the latency given explicitly.

    ``flops_reduction`` and ``latency_reduction`` are fractions (0.3 = 30 % fewer); ``speedup``
    is baseline latency / latency.
    """
    gmacs = row.get("gmacs")
    base_gmacs = base.get("gmacs") if base is not None else math.nan
    base_map = base.get("mAP") if base is not None else math.nan
    return {
        "gmacs": gmacs,
        "flops_reduction": 1.0 - _ratio(gmacs, base_gmacs),
        "latency_ms_median": latency_ms,
        "latency_reduction": 1.0 - _ratio(latency_ms, base_latency_ms),
        "speedup": _ratio(base_latency_ms, latency_ms),
        "gmacs_per_s": gmacs_per_second(gmacs, latency_ms),
        "map_retained": _ratio(row.get("mAP"), base_map),
    }


def size_numbers(row: Row) -> dict[str, float]:
    """Sparse checkpoint size against its information bound and against the dense file."""
    return {
        "checkpoint_mb": row.get("checkpoint_mb"),
        "sparse_mb": row.get("sparse_mb"),
        "sparse_bound_mb": row.get("sparse_bound_mb"),
        "sparse_over_bound": _ratio(row.get("sparse_mb"), row.get("sparse_bound_mb")),
        "dense_over_sparse": _ratio(row.get("checkpoint_mb"), row.get("sparse_mb")),
    }


# --------------------------------------------------------------------------------------------
# goals
# --------------------------------------------------------------------------------------------


def _missing(*values: float) -> bool:
    return any(math.isnan(v) for v in values)


def _check(subject: str, verdict: str, measured: Mapping[str, Any], reason: str = "") -> dict:
    """One checked item of a goal (a scope, a variant, a ratio)."""
    check: dict[str, Any] = {"subject": subject, "verdict": verdict, "measured": dict(measured)}
    if reason:
        check["reason"] = reason
    return check


def _goal(description: str, checks: list[dict], empty_reason: str) -> dict[str, Any]:
    """A goal's verdict from its checks: ``not met`` if any check fails, ``not measured`` if any
    (or every) check could not be measured, ``met`` only when every check was measured and met."""
    verdicts = {c["verdict"] for c in checks}
    if not checks:
        verdict = NOT_MEASURED
    elif NOT_MET in verdicts:
        verdict = NOT_MET
    elif NOT_MEASURED in verdicts:
        verdict = NOT_MEASURED
    else:
        verdict = MET
    goal: dict[str, Any] = {"description": description, "verdict": verdict, "checks": checks}
    if not checks:
        goal["reason"] = empty_reason
    return goal


def goal_a(rows: Sequence[Row], base: Row | None) -> dict[str, Any]:
    """Filter pruning at 50 % keeps >= 90 % of the baseline mAP after fine-tuning, per scope."""
    description = (
        f"filter pruning at {FILTER_GOAL_RATIO} % after fine-tuning keeps >= "
        f"{100 * MAP_KEEP:g} % of the baseline mAP (each filter scope)"
    )
    base_map = base.get("mAP") if base is not None else math.nan
    filters = [r for r in rows if r.kind == "filter"]
    checks = []
    for scope in sorted({r.scope for r in filters}):
        label = scope or "(scope not recorded)"
        candidates = [
            r for r in filters if r.scope == scope and r.finetuned and r.ratio == FILTER_GOAL_RATIO
        ]
        if not candidates:
            checks.append(
                _check(
                    label,
                    NOT_MEASURED,
                    {"baseline_mAP": base_map},
                    f"no fine-tuned filter row at ratio {FILTER_GOAL_RATIO} for this scope",
                )
            )
            continue
        for row in candidates:
            value = row.get("mAP")
            measured = {
                "variant": row.variant,
                "mAP": value,
                "baseline_mAP": base_map,
                "map_retained": _ratio(value, base_map),
                "required": MAP_KEEP,
            }
            if _missing(value, base_map):
                checks.append(_check(label, NOT_MEASURED, measured, "mAP or baseline mAP missing"))
            elif base_map <= 0:
                # A share of nothing: an untrained baseline cannot show what pruning keeps.
                checks.append(_check(label, NOT_MEASURED, measured, "baseline mAP is 0"))
            else:
                ok = value >= MAP_KEEP * base_map
                checks.append(_check(label, MET if ok else NOT_MET, measured))
    return _goal(description, checks, "no filter-pruned rows in the summary")


def goal_b(
    rows: Sequence[Row], base: Row | None, latency: Callable[[Row], float], source: str
) -> dict[str, Any]:
    """Latency falls by at least 0.8x the FLOPs fall, for every filter variant.

    ``latency`` gives a row's median latency in ms (summary or re-timed); ``source`` names it.
    """
    description = (
        f"latency falls by >= {LATENCY_SHARE:g}x the fraction FLOPs fall, each filter variant "
        f"({source} latency)"
    )
    base_gmacs = base.get("gmacs") if base is not None else math.nan
    base_latency = latency(base) if base is not None else math.nan
    checks = []
    for row in rows:
        if row.kind != "filter":
            continue
        gmacs, lat = row.get("gmacs"), latency(row)
        flops_fall = 1.0 - _ratio(gmacs, base_gmacs)
        latency_fall = 1.0 - _ratio(lat, base_latency)
        measured = {
            "gmacs": gmacs,
            "baseline_gmacs": base_gmacs,
            "latency_ms": lat,
            "baseline_latency_ms": base_latency,
            "flops_reduction": flops_fall,
            "latency_reduction": latency_fall,
            "required_latency_reduction": LATENCY_SHARE * flops_fall,
        }
        if _missing(flops_fall, latency_fall):
            checks.append(
                _check(
                    row.variant, NOT_MEASURED, measured, "GMACs or latency (or baseline) missing"
                )
            )
        else:
            ok = latency_fall >= LATENCY_SHARE * flops_fall
            checks.append(_check(row.variant, MET if ok else NOT_MET, measured))
    return _goal(description, checks, "no filter-pruned rows in the summary")


def goal_c(rows: Sequence[Row]) -> dict[str, Any]:
    """Scope backbone+ffn cuts more FLOPs than backbone at every ratio both have (zero-shot)."""
    description = (
        f"filter scope {SCOPE_WIDE} has fewer GMACs than {SCOPE_NARROW} at equal ratio "
        "(zero-shot rows, every ratio both scopes have)"
    )
    zero_shot = [r for r in rows if r.kind == "filter" and not r.finetuned]
    narrow: dict[int, list[Row]] = {}
    wide: dict[int, list[Row]] = {}
    for row in zero_shot:
        if row.scope in (SCOPE_NARROW, SCOPE_WIDE) and row.ratio is not None:
            group = narrow if row.scope == SCOPE_NARROW else wide
            group.setdefault(row.ratio, []).append(row)
    checks = []
    for ratio in sorted(set(narrow) & set(wide)):
        # Two methods with the same kind, scope and ratio: every pair is compared.
        for a in wide[ratio]:
            for b in narrow[ratio]:
                measured = {
                    "ratio": ratio,
                    f"gmacs_{SCOPE_WIDE}": a.get("gmacs"),
                    f"gmacs_{SCOPE_NARROW}": b.get("gmacs"),
                    "variants": [a.variant, b.variant],
                }
                if _missing(a.get("gmacs"), b.get("gmacs")):
                    checks.append(_check(f"r{ratio}", NOT_MEASURED, measured, "GMACs missing"))
                else:
                    ok = a.get("gmacs") < b.get("gmacs")
                    checks.append(_check(f"r{ratio}", MET if ok else NOT_MET, measured))
    goal = _goal(
        description,
        checks,
        f"no ratio has zero-shot filter rows of both scopes {SCOPE_NARROW} and {SCOPE_WIDE}",
    )
    unpaired = sorted(set(narrow) ^ set(wide))
    if unpaired:
        goal["unpaired_ratios"] = unpaired
    return goal


def goal_d(rows: Sequence[Row]) -> dict[str, Any]:
    """Sparse checkpoint <= 1.1x its bound (every variant) and, at >= 90 % weight pruning,
    >= 6x smaller than the dense checkpoint."""
    description = (
        f"sparse checkpoint <= {SPARSE_BOUND_SLACK:g}x its bound (every variant); at weight "
        f"ratio >= {WEIGHT_HIGH_RATIO} % it is >= {DENSE_OVER_SPARSE_MIN:g}x smaller than dense"
    )
    bound_checks = []
    for row in rows:
        sizes = size_numbers(row)
        measured = {
            "sparse_mb": sizes["sparse_mb"],
            "sparse_bound_mb": sizes["sparse_bound_mb"],
            "sparse_over_bound": sizes["sparse_over_bound"],
            "required_max": SPARSE_BOUND_SLACK,
        }
        if math.isnan(sizes["sparse_over_bound"]):
            reason = "sparse_mb or sparse_bound_mb missing"
            bound_checks.append(_check(row.variant, NOT_MEASURED, measured, reason))
        else:
            ok = sizes["sparse_over_bound"] <= SPARSE_BOUND_SLACK
            bound_checks.append(_check(row.variant, MET if ok else NOT_MET, measured))
    ratio_checks = []
    for row in rows:
        if row.kind != "weight" or row.ratio is None or row.ratio < WEIGHT_HIGH_RATIO:
            continue
        sizes = size_numbers(row)
        measured = {
            "ratio": row.ratio,
            "checkpoint_mb": sizes["checkpoint_mb"],
            "sparse_mb": sizes["sparse_mb"],
            "dense_over_sparse": sizes["dense_over_sparse"],
            "required_min": DENSE_OVER_SPARSE_MIN,
        }
        if math.isnan(sizes["dense_over_sparse"]):
            reason = "checkpoint_mb or sparse_mb missing"
            ratio_checks.append(_check(row.variant, NOT_MEASURED, measured, reason))
        else:
            ok = sizes["dense_over_sparse"] >= DENSE_OVER_SPARSE_MIN
            ratio_checks.append(_check(row.variant, MET if ok else NOT_MET, measured))
    bound = _goal(
        f"sparse checkpoint <= {SPARSE_BOUND_SLACK:g}x its bound", bound_checks, "no rows"
    )
    dense = _goal(
        f"weight ratio >= {WEIGHT_HIGH_RATIO} %: dense/sparse >= {DENSE_OVER_SPARSE_MIN:g}",
        ratio_checks,
        f"no weight-pruned row at ratio >= {WEIGHT_HIGH_RATIO}",
    )
    goal = _goal(description, bound["checks"] + dense["checks"], "no rows")
    if not dense["checks"]:  # a missing high-ratio row leaves the goal unmeasured
        goal["verdict"] = NOT_MET if bound["verdict"] == NOT_MET else NOT_MEASURED
    goal["parts"] = {"bound": bound, "dense_over_sparse": dense}
    return goal


# --------------------------------------------------------------------------------------------
# re-timing
# --------------------------------------------------------------------------------------------


def _p90(times_ms: Sequence[float]) -> float:
    """The p90 as :func:`detrprune.evaluate.metrics.cpu_latency` takes it."""
    ordered = sorted(times_ms)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def retime(
    models: Mapping[str, Path],
    batches: Sequence[Mapping[str, Any]],
    *,
    threads: int,
    rounds: int,
    runs_per_round: int,
    warmup: int,
    switch_warmup: int,
) -> dict[str, dict[str, Any]]:
    """Time every model in one process, interleaved: each round times each model a few runs.

    Each model gets ``warmup`` untimed runs once, then in each of ``rounds`` rounds
    ``switch_warmup`` untimed runs (caches after switching models) and ``runs_per_round`` timed
    runs of ``model.test_step`` (pre- and post-processing included, images cycled, as
    :func:`detrprune.evaluate.metrics.cpu_latency` does). The model order rotates by one each
    round so no model is always timed right after the same one. Returns per model the median and p90
    over all timed runs, the median of each round (drift shows there) and the run count.
    """
    import torch
    from tqdm import tqdm

    from detrprune.train.checkpoint import load_detector

    if rounds < 1 or runs_per_round < 1:
        raise ValueError("--rounds and the runs per round must be >= 1")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = {}
        for name, path in tqdm(models.items(), desc="load models", unit="model", leave=False):
            loaded[name] = load_detector(path)[0].to("cpu").eval()
        names = list(loaded)
        times: dict[str, list[float]] = {name: [] for name in names}
        round_medians: dict[str, list[float]] = {name: [] for name in names}
        runs_done = dict.fromkeys(names, 0)
        with torch.no_grad():
            for name in names:
                for i in range(warmup):
                    loaded[name].test_step(batches[i % len(batches)])
            progress = tqdm(total=rounds * len(names), desc="retime", unit="chunk")
            with progress:
                for round_index in range(rounds):
                    shift = round_index % len(names)
                    for name in names[shift:] + names[:shift]:
                        progress.set_postfix_str(f"round {round_index + 1}/{rounds} {name}")
                        model = loaded[name]
                        for i in range(switch_warmup):
                            model.test_step(batches[i % len(batches)])
                        chunk = []
                        for _ in range(runs_per_round):
                            batch = batches[runs_done[name] % len(batches)]
                            start = time.perf_counter()
                            model.test_step(batch)
                            chunk.append(1000.0 * (time.perf_counter() - start))
                            runs_done[name] += 1
                        times[name].extend(chunk)
                        round_medians[name].append(statistics.median(chunk))
                        progress.update(1)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        name: {
            "latency_ms_median": statistics.median(times[name]),
            "latency_ms_p90": _p90(times[name]),
            "latency_runs": len(times[name]),
            "round_medians_ms": round_medians[name],
        }
        for name in names
    }


def _config(path: Path | None) -> dict[str, Any]:
    """The workflow config (for input scale and threads), {} when there is none."""
    if path is None or not path.is_file():
        return {}
    import yaml

    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    return loaded if isinstance(loaded, dict) else {}


def run_retime(args: argparse.Namespace, rows: Sequence[Row], base: Row | None) -> dict[str, Any]:
    """Re-time the baseline and the variants of ``--retime-kinds`` whose model files exist.

    Variants without a model file are listed under ``not_measured``; with none at all nothing is
    timed (``models`` is empty) and the re-timed goal is "not measured".
    """
    from detrprune.evaluate.metrics import cpu_description, load_val_batches

    config = _config(args.config)
    if args.input_scale:
        input_scale = (int(args.input_scale[0]), int(args.input_scale[1]))
    else:
        scale = config.get("model", {}).get("input_scale")
        if not scale:
            raise SummaryError(
                f"{args.config}: no model.input_scale to re-time with (give --input-scale W H)"
            )
        input_scale = (int(scale[0]), int(scale[1]))
    threads = args.threads or int(config.get("evaluate", {}).get("threads", 2))
    kinds = set(args.retime_kinds)
    chosen = [r for r in rows if r is base or "all" in kinds or r.kind in kinds]
    models: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for row in chosen:
        path = args.results / row.variant / "model.pth"
        if path.is_file():
            models[row.variant] = path
        else:
            skipped[row.variant] = f"{path}: no model file"
    for variant, reason in skipped.items():
        print(f"retime: {variant} not measured ({reason})", file=sys.stderr)
    runs_per_round = max(1, math.ceil(args.runs / args.rounds))
    timings: dict[str, dict[str, Any]] = {}
    batches: list[dict[str, Any]] = []
    if models:
        for path in (args.val_json, args.data_root):
            if not path.exists():
                raise SummaryError(f"{path}: no such file or folder (needed by --retime)")
        batches = load_val_batches(args.val_json, args.data_root, input_scale, args.images)
        timings = retime(
            models,
            batches,
            threads=threads,
            rounds=args.rounds,
            runs_per_round=runs_per_round,
            warmup=args.warmup,
            switch_warmup=args.switch_warmup,
        )
    else:
        print("retime: no model files found, nothing re-timed", file=sys.stderr)
    return {
        "latency_device": cpu_description(threads),
        "threads": threads,
        "rounds": args.rounds,
        "runs_per_round": runs_per_round,
        "warmup": args.warmup,
        "switch_warmup": args.switch_warmup,
        "images": len(batches),
        "input_scale": list(input_scale),
        "models": timings,
        "not_measured": skipped,
    }


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def _fmt(value: float | int | str | None, spec: str = ".3g") -> str:
    """A table cell: ``n/a`` for a missing number."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, spec)


def _pct(value: float) -> str:
    # + 0.0 turns -0.0 (an unchanged baseline) into 0.0
    return "n/a" if math.isnan(value) else f"{100 * value + 0.0:+.1f}%"


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others, two spaces between columns."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in body)])


_MAIN_HEADER = (
    "variant",
    "kind",
    "scope",
    "ratio",
    "ft",
    "mAP",
    "mAP/base",
    "GMACs",
    "FLOPs chg",
    "lat ms",
    "speedup",
    "GMAC/s",
    "sparse MB",
    "/bound",
    "dense/sparse",
)


def _main_cells(entry: Mapping[str, Any]) -> list[str]:
    summary, sizes = entry["summary"], entry["sizes"]
    return [
        entry["variant"],
        entry["kind"] or "?",
        entry["scope"] or "-",
        _fmt(entry["ratio"], "d"),
        "yes" if entry["finetuned"] else "no",
        _fmt(entry["mAP"]),
        _share(summary["map_retained"]),
        _fmt(summary["gmacs"], ".4g"),
        _pct(-summary["flops_reduction"]),
        _fmt(summary["latency_ms_median"], ".4g"),
        _times(summary["speedup"]),
        _fmt(summary["gmacs_per_s"], ".4g"),
        _fmt(sizes["sparse_mb"], ".3g"),
        _times(sizes["sparse_over_bound"]),
        _times(sizes["dense_over_sparse"]),
    ]


def _retime_cells(entry: Mapping[str, Any]) -> list[str]:
    summary, retimed = entry["summary"], entry["retimed"]
    if retimed is None:
        blank = [""] * (len(_RETIME_HEADER) - 3)
        return [entry["variant"], _fmt(summary["latency_ms_median"], ".4g"), "not measured", *blank]
    rounds = retimed["round_medians_ms"]
    return [
        entry["variant"],
        _fmt(summary["latency_ms_median"], ".4g"),
        _fmt(retimed["latency_ms_median"], ".4g"),
        _fmt(retimed["latency_ms_p90"], ".4g"),
        f"{min(rounds):.4g}-{max(rounds):.4g}",
        _times(retimed["speedup"]),
        _pct(-retimed["latency_reduction"]),
        _fmt(retimed["gmacs_per_s"], ".4g"),
    ]


_RETIME_HEADER = (
    "variant",
    "summary ms",
    "retimed ms",
    "p90 ms",
    "round medians",
    "speedup",
    "lat chg",
    "GMAC/s",
)


def _print_checks(checks: Sequence[Mapping[str, Any]], indent: str) -> None:
    for check in checks:
        measured = ", ".join(
            f"{k}={_fmt(v, '.4g') if isinstance(v, float) else v}"
            for k, v in check["measured"].items()
        )
        reason = f" ({check['reason']})" if "reason" in check else ""
        print(f"{indent}{check['verdict']:<12} {check['subject']}: {measured}{reason}")


def _print_goal(key: str, goal: Mapping[str, Any]) -> None:
    """A goal's verdict, then each check with its measured numbers (by part, if it has parts)."""
    print(f"goal {key}: {goal['verdict'].upper()}  -- {goal['description']}")
    if "reason" in goal:
        print(f"    not measured: {goal['reason']}")
    if "parts" in goal:
        for part in goal["parts"].values():
            print(f"    {part['verdict']}: {part['description']}")
            if "reason" in part:
                print(f"        not measured: {part['reason']}")
            _print_checks(part["checks"], "        ")
    else:
        _print_checks(goal["checks"], "    ")
    if goal.get("unpaired_ratios"):
        print(f"    ratios with only one of the two scopes: {goal['unpaired_ratios']}")


def _jsonable(value: Any) -> Any:
    """NaN -> null (JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--summary", type=Path, default=DEFAULT_SUMMARY, help="summary CSV")
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="folder of <variant>/model.pth"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON record written here")
    retime_group = parser.add_argument_group("re-timing")
    retime_group.add_argument(
        "--retime", action="store_true", help="re-time baseline and variants in one process"
    )
    retime_group.add_argument(
        "--retime-kinds",
        nargs="+",
        default=["filter"],
        help="kinds re-timed besides the baseline ('all' for every row)",
    )
    retime_group.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="workflow config (input scale)"
    )
    retime_group.add_argument(
        "--input-scale", type=int, nargs=2, metavar=("W", "H"), help="overrides the config's"
    )
    retime_group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads; none: the config's evaluate.threads",
    )
    retime_group.add_argument("--runs", type=int, default=30, help="timed runs per model")
    retime_group.add_argument("--rounds", type=int, default=5, help="round-robin rounds")
    retime_group.add_argument("--warmup", type=int, default=3, help="untimed runs per model")
    retime_group.add_argument(
        "--switch-warmup", type=int, default=1, help="untimed runs each time a model comes up"
    )
    retime_group.add_argument("--images", type=int, default=5, help="val images cycled")
    retime_group.add_argument(
        "--val-json", type=Path, default=DEFAULT_VAL_JSON, help="COCO json of the val split"
    )
    retime_group.add_argument(
        "--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding training/image_2"
    )
    return parser


def evaluate(
    rows: Sequence[Row], retimed: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-variant numbers and the goals' verdicts (goal b twice when re-timed)."""
    base = baseline_row(rows)
    timings = retimed["models"] if retimed else {}

    def summary_latency(row: Row) -> float:
        return row.get("latency_ms_median")

    def retimed_latency(row: Row) -> float:
        timing = timings.get(row.variant)
        return timing["latency_ms_median"] if timing else math.nan

    entries = []
    for row in rows:
        base_lat = summary_latency(base) if base is not None else math.nan
        entry: dict[str, Any] = {
            "variant": row.variant,
            "kind": row.kind,
            "scope": row.scope,
            "ratio": row.ratio,
            "finetuned": row.finetuned,
            "mAP": row.get("mAP"),
            "latency_device": row.latency_device,
            "summary": derived_numbers(row, base, summary_latency(row), base_lat),
            "sizes": size_numbers(row),
            "retimed": None,
        }
        if row.variant in timings:
            base_retimed = retimed_latency(base) if base is not None else math.nan
            entry["retimed"] = {
                **timings[row.variant],
                **derived_numbers(row, base, retimed_latency(row), base_retimed),
            }
        entries.append(entry)
    goals = {
        "a": goal_a(rows, base),
        "b": goal_b(rows, base, summary_latency, "summary"),
        "c": goal_c(rows),
        "d": goal_d(rows),
    }
    if retimed is not None:
        goals["b_retimed"] = goal_b(rows, base, retimed_latency, "re-timed")
    return entries, goals


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("runs", "rounds", "images"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1")
    if args.warmup < 0 or args.switch_warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--warmup/--switch-warmup must be >= 0 and --threads >= 1")
    try:
        rows = read_summary(args.summary)
        base = baseline_row(rows)
        retimed = run_retime(args, rows, base) if args.retime else None
    except SummaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    entries, goals = evaluate(rows, retimed)
    print(f"summary: {args.summary} ({len(rows)} rows)")
    if base is None:
        print("no baseline row (kind 'baseline'): values relative to it are not measured")
    else:
        print(f"baseline: {base.variant}; latency device: {base.latency_device or 'n/a'}")
    print()
    print(format_table(_MAIN_HEADER, [_main_cells(e) for e in entries]))
    print(
        "FLOPs chg: change vs baseline; mAP/base: share of the baseline mAP kept;\n"
        "speedup = baseline latency / latency; GMAC/s = GMACs / latency (s);\n"
        "/bound = sparse_mb / sparse_bound_mb; dense/sparse = checkpoint_mb / sparse_mb;\n"
        "n/a = not measured."
    )
    if retimed is not None:
        print()
        print(
            f"re-timed in one process: {retimed['rounds']} rounds x {retimed['runs_per_round']} "
            f"runs per model, {retimed['images']} images, {retimed['latency_device']}"
        )
        retime_rows = [e for e in entries if e["kind"] == "baseline" or e["retimed"]]
        print(format_table(_RETIME_HEADER, [_retime_cells(e) for e in retime_rows]))
        print(
            "round medians: lowest-highest per-round median (drift); "
            "lat chg: re-timed latency change vs the re-timed baseline."
        )
    print()
    for key, goal in goals.items():
        _print_goal(key, goal)

    record = {
        "summary": str(args.summary),
        "baseline": base.variant if base is not None else None,
        "thresholds": {
            "filter_goal_ratio": FILTER_GOAL_RATIO,
            "map_keep": MAP_KEEP,
            "latency_share": LATENCY_SHARE,
            "sparse_bound_slack": SPARSE_BOUND_SLACK,
            "weight_high_ratio": WEIGHT_HIGH_RATIO,
            "dense_over_sparse_min": DENSE_OVER_SPARSE_MIN,
        },
        "variants": entries,
        "goals": goals,
        "verdicts": {key: goal["verdict"] for key, goal in goals.items()},
        "retime": retimed,
    }
    write_json(_jsonable(record), args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
