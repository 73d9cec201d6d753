"""The study's variants (a model's folder under ``results/``) and the control each one is
compared with.

A pruned model's accuracy means little beside a baseline trained for fewer iterations: every
comparison is with the control of equal training. A zero-shot pruned model (``prune/...``) is
compared with the baseline; a fine-tuned one (``finetune/<method>/r<ratio>``) with the baseline
fine-tuned on the same schedule (``finetune/baseline``); the iterative loop's result with the
baseline fine-tuned as the loop fine-tuned up to the step it kept (``control/iterative``). The
two controls are themselves compared with the baseline: how much the extra training alone gives.

A filter target's scratch twin (``scratch/<method>/r<ratio>``, :mod:`detrprune.train.scratch`)
is its pruned architecture trained from a fresh initialisation as long as the baseline and the
fine-tune together: its control is the fine-tuned baseline, which saw as many images; the
fine-tuned target is compared with it too. ``scratch_b/...`` trains for the same compute.

A fine-tuned model and its control can be fine-tuned again with other training seeds
(``pruning.finetune.replicate_seeds``): ``replicate/s<seed>/<variant>``, evaluated like the others
and paired with the control's replicate of the same seed (:mod:`detrprune.report.seeds`).
"""

from __future__ import annotations

import re

BASELINE = "baseline"
FINETUNED_BASELINE = "finetune/baseline"
ITERATIVE = "iterative"
ITERATIVE_CONTROL = "control/iterative"
REPLICATE = "replicate"
# The variant folder of each scratch budget: results/<folder>/<method>/r<ratio>.
SCRATCH_FOLDERS: dict[str, str] = {"e": "scratch", "b": "scratch_b"}
_REPLICATE_PATTERN = re.compile(rf"{REPLICATE}/s(0|[1-9][0-9]*)/(finetune/.+)")


def control_of(variant: str) -> str | None:
    """The variant of equal training ``variant`` is compared with (None for the baseline)."""
    if variant == BASELINE:
        return None
    if variant == ITERATIVE:
        return ITERATIVE_CONTROL
    if variant.startswith("finetune/") and variant != FINETUNED_BASELINE:
        return FINETUNED_BASELINE
    if variant.split("/", 1)[0] in SCRATCH_FOLDERS.values():
        return FINETUNED_BASELINE
    return BASELINE


def scratch_variant(budget: str, method: str, ratio: int) -> str:
    """The variant name of a scratch twin: ``scratch/<method>/r<ratio>`` for budget ``e``."""
    return f"{SCRATCH_FOLDERS[budget]}/{method}/r{ratio}"


def is_control(variant: str) -> bool:
    """True for the baseline's fine-tuned twins, which exist to be compared with."""
    return variant in (FINETUNED_BASELINE, ITERATIVE_CONTROL)


def replicate_of(variant: str, seed: int) -> str:
    """The variant fine-tuned again with training seed ``seed``: ``replicate/s<seed>/<variant>``."""
    if not variant.startswith("finetune/"):
        raise ValueError(f"{variant}: only fine-tuned variants have seed replicates")
    return f"{REPLICATE}/s{seed}/{variant}"


def split_replicate(name: str) -> tuple[str, int] | None:
    """``replicate/s<seed>/<variant>`` -> (variant, seed); None for a name that is not one."""
    match = _REPLICATE_PATTERN.fullmatch(name)
    return None if match is None else (match.group(2), int(match.group(1)))
