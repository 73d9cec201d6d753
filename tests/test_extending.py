"""docs/extending.md's worked example is real: its criterion module, installed outside the
repository as a distribution with a ``detrprune.criteria`` entry point (on PYTHONPATH), runs
through the whole workflow and reaches summary.csv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from .conftest import REPO, micro_config, run_snakemake

DOC = REPO / "docs" / "extending.md"


def doc_criterion_module() -> tuple[str, str]:
    """(file name, code) of the criterion module docs/extending.md walks through."""
    text = DOC.read_text()
    name = re.search(r"`detrprune/prune/criteria/(\w+\.py)`:\n\n```python\n", text)
    assert name, "docs/extending.md names no criterion module before its code block"
    code = text[name.end() :].split("\n```", 1)[0]
    return name.group(1), code + "\n"


def plugin_folder(root: Path) -> Path:
    """A folder for PYTHONPATH holding the doc's module as an installed distribution: the module
    and a ``.dist-info`` that names it under the ``detrprune.criteria`` entry-point group (what
    ``pip install`` of a package with that entry point leaves in site-packages)."""
    file_name, code = doc_criterion_module()
    module = f"my_criteria_{file_name.removesuffix('.py')}"
    site = root / "site"
    site.mkdir()
    (site / f"{module}.py").write_text(code)
    info = site / "my_criteria-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-criteria\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[detrprune.criteria]\nl2 = {module}\n")
    return site


def test_the_doc_criterion_registers_from_outside_the_repository(tmp_path):
    plugins = plugin_folder(tmp_path)
    script = (
        "from detrprune.prune.criteria import criteria, get_criterion\n"
        "print(sorted(criteria()))\n"
        "print(type(get_criterion('l2').channel_importance('mean')).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    names, importance = run.stdout.split("\n")[:2]
    assert names == "['l1', 'l2', 'random', 'taylor']"
    assert importance == "GroupMagnitudeImportance"


@pytest.mark.slow
def test_a_new_criterion_runs_through_the_workflow_to_the_summary(tmp_path):
    plugins = plugin_folder(tmp_path)
    workdir = tmp_path / "study"
    workdir.mkdir()
    config = micro_config()
    config["pruning"]["methods"] = {
        "filter": {"kind": "filter", "scope": "backbone", "ratios": [50]},
        "filter_l2": {"kind": "filter", "scope": "backbone", "criterion": "l2", "ratios": [50]},
        # The shipped data-driven criterion beside them: its prune job reads the training split.
        "filter_taylor": {
            "kind": "filter",
            "scope": "backbone",
            "criterion": "taylor",
            "gradient_images": 4,
            "ratios": [50],
        },
    }
    config["pruning"]["iterative"]["enabled"] = False
    config["evaluate"]["onnx"]["enabled"] = False
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    run = run_snakemake(workdir, "results/summary.csv", "--cores", "2", env=env, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    summary = pd.read_csv(workdir / "results" / "summary.csv").set_index("variant")
    for variant in ("prune/filter_l2/r50", "finetune/filter_l2/r50"):
        assert summary.loc[variant, "scope"] == "backbone:l2"
        assert summary.loc[variant, "method"] == "filter_l2"
    # Fine-tuned against the same control as L1, with its paired interval.
    tuned = summary.loc["finetune/filter_l2/r50"]
    assert tuned["control"] == summary.loc["finetune/filter/r50", "control"]
    assert tuned["delta_mAP_ci95_low"] <= tuned["delta_mAP"] <= tuned["delta_mAP_ci95_high"]
    assert summary.loc["finetune/filter_taylor/r50", "scope"] == "backbone:taylor:images4"
    log = (workdir / "logs" / "prune" / "filter_taylor" / "r50.log").read_text()
    assert "gradients: 4 of the" in log and "train.json" in log
    # Another ranking, other channels: the two pruned models differ in their weights.
    l1 = torch.load(workdir / "results/prune/filter/r50/model.pth", weights_only=True)
    l2 = torch.load(workdir / "results/prune/filter_l2/r50/model.pth", weights_only=True)
    assert any(
        not torch.equal(tensor, l2["state_dict"][name]) for name, tensor in l1["state_dict"].items()
    )
