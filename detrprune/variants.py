"""The study's variants (a model's folder under ``results/``) and the control each one is
compared with.

A pruned model's accuracy means little beside a baseline trained for fewer iterations: every
comparison is with the control of equal training. A zero-shot pruned model (``prune/...``) is
compared with the baseline; a fine-tuned one (``finetune/<method>/r<ratio>``) with the baseline
fine-tuned on the same schedule (``finetune/baseline``); the iterative loop's result with the
baseline fine-tuned as the loop fine-tuned up to the step it kept (``control/iterative``). The
two controls are themselves compared with the baseline: how much the extra training alone gives.
"""

from __future__ import annotations

BASELINE = "baseline"
FINETUNED_BASELINE = "finetune/baseline"
ITERATIVE = "iterative"
ITERATIVE_CONTROL = "control/iterative"


def control_of(variant: str) -> str | None:
    """The variant of equal training ``variant`` is compared with (None for the baseline)."""
    if variant == BASELINE:
        return None
    if variant == ITERATIVE:
        return ITERATIVE_CONTROL
    if variant.startswith("finetune/") and variant != FINETUNED_BASELINE:
        return FINETUNED_BASELINE
    return BASELINE


def is_control(variant: str) -> bool:
    """True for the baseline's fine-tuned twins, which exist to be compared with."""
    return variant in (FINETUNED_BASELINE, ITERATIVE_CONTROL)
