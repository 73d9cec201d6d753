"""profiles/slurm without a cluster: the GPU model it asks for (DETRPRUNE_SLURM_GPU_MODEL), and
that every rule declaring a `gpu` resource gets the GPU rules' SLURM settings.

The profile is rendered as Snakemake renders it (YTE) and its resources are handed to the
installed SLURM plugin's own `set_gres_string`, the function that writes sbatch's --gpus.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from .conftest import REPO

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
ENV = (
    "DETRPRUNE_SLURM_PARTITION",
    "DETRPRUNE_SLURM_GPU_PARTITION",
    "DETRPRUNE_SLURM_GPU_MODEL",
    "DETRPRUNE_SLURM_ACCOUNT",
)

RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:")
USE_RULE = re.compile(r"^use\s+rule\s+(\w+)\s+as\s+(\w+)\s+with\s*:")
GPU = re.compile(r"^\s+gpu\s*=")  # a `gpu=` resource (not gpu_model=, not a comment)
RESOURCES = re.compile(r"^\s+resources\s*:")


def render(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """The profile as Snakemake reads it, with only ``env`` of the DETRPRUNE_SLURM_* set."""
    import yte

    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(PROFILE) as handle:
        return yte.process_yaml(handle, require_use_yte=True)


def declared_rules() -> dict[str, bool]:
    """{rule name: whether it declares a `gpu` resource} of the Snakefile and rules/*.smk.

    A rule's block runs from its `rule NAME:` line to the next unindented line; a `use rule A as
    B with:` inherits A's resources unless its block has a `resources:` of its own.
    """
    own: dict[str, bool] = {}
    parents: dict[str, str] = {}
    for source in RULE_FILES:
        name = None
        for line in source.read_text().splitlines():
            if line and not line[0].isspace() and not line.startswith("#"):
                name = None
                if match := RULE.match(line):
                    name = match.group(1)
                elif match := USE_RULE.match(line):
                    name = match.group(2)
                    parents[name] = match.group(1)
                if name:
                    own[name] = False
            elif name and GPU.match(line):
                own[name] = True
            elif name and RESOURCES.match(line):
                parents.pop(name, None)  # own resources: nothing inherited
    gpu = {}
    for rule in own:
        ancestor = rule
        while not own[ancestor] and ancestor in parents:
            ancestor = parents[ancestor]
        gpu[rule] = own[ancestor]
    return gpu


def gpu_rules() -> set[str]:
    return {rule for rule, gpu in declared_rules().items() if gpu}


def cpu_rules() -> set[str]:
    return {rule for rule, gpu in declared_rules().items() if not gpu}


class Resources(dict):
    """A job's resources as the plugin reads them: ``.get`` and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def gres(resources: dict) -> str:
    """The --gpus / --gres part of the sbatch call the plugin builds for ``resources``."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    return set_gres_string(SimpleNamespace(resources=Resources(resources))).strip()


def test_rule_parser_sees_the_workflow():
    """The regex parser finds the rules it must (else the coverage test below checks nothing)."""
    rules = declared_rules()
    # finetune_baseline and finetune_baseline_replicate: `use rule`, gpu inherited
    for rule in ("train_baseline", "finetune", "finetune_baseline_replicate", "time_models"):
        assert rules.get(rule) is True, rule
    for rule in ("prune", "export_onnx", "aggregate", "report"):
        assert rules.get(rule) is False, rule


def test_every_gpu_rule_is_in_the_profile(monkeypatch):
    """A rule that declares `gpu=` (or inherits it with `use rule`) gets the GPU rules' settings:
    a new GPU rule cannot be forgotten here."""
    table = render(monkeypatch, DETRPRUNE_SLURM_GPU_MODEL="h100")["set-resources"]
    missing = gpu_rules() - set(table)
    assert not missing, f"GPU rules missing from profiles/slurm set-resources: {sorted(missing)}"
    unknown = set(table) - set(declared_rules())
    assert not unknown, f"profiles/slurm set-resources names no rule of the workflow: {unknown}"


def test_gpu_model_on_every_gpu_rule(monkeypatch):
    profile = render(monkeypatch, DETRPRUNE_SLURM_GPU_MODEL="h100")
    table = profile["set-resources"]
    for rule in sorted(gpu_rules()):
        assert table.get(rule, {}).get("gpu_model") == "h100", rule
    for rule in sorted(cpu_rules()):  # prune, export_onnx, ...: no GPU, so no GPU model
        assert "gpu_model" not in table.get(rule, {}), rule
    assert "gpu_model" not in profile["default-resources"]


@pytest.mark.parametrize("unset", [None, ""], ids=["unset", "empty"])
def test_no_gpu_model_when_unset(monkeypatch, unset):
    """Unset (or empty), the key is left out, like the other variables' keys; set, the variable
    adds that key and changes nothing else."""
    env = {"DETRPRUNE_SLURM_GPU_PARTITION": "gpu"}
    if unset is not None:
        env["DETRPRUNE_SLURM_GPU_MODEL"] = unset
    profile = render(monkeypatch, **env)
    assert "gpu_model" not in profile["default-resources"]
    for rule, resources in profile["set-resources"].items():
        assert "gpu_model" not in resources, rule
        assert resources["slurm_partition"] == "gpu", rule  # the other variables still apply
    with_model = render(monkeypatch, **{**env, "DETRPRUNE_SLURM_GPU_MODEL": "h100"})
    for resources in with_model["set-resources"].values():
        resources.pop("gpu_model", None)
    assert with_model == profile


@pytest.mark.parametrize(
    "rule, gpus", [("evaluate", 1), ("evaluate_replicate", 1), ("train_baseline", 2)]
)
def test_plugin_asks_for_the_model(monkeypatch, rule, gpus):
    """The plugin turns the rendered rule's resources, with the rule's own `gpu`, into
    --gpus=<model>:<gpu>; without a model, into --gpus=<gpu>."""
    table = render(monkeypatch, DETRPRUNE_SLURM_GPU_MODEL="h100")["set-resources"]
    assert gres({**table[rule], "gpu": gpus}) == f"--gpus=h100:{gpus}"
    table = render(monkeypatch)["set-resources"]
    assert gres({**table[rule], "gpu": gpus}) == f"--gpus={gpus}"


@pytest.mark.parametrize("model", ["h100'", '"a100"', "a100:2", "a100 h100"])
def test_plugin_rejects_a_malformed_model(monkeypatch, model):
    from snakemake_interface_common.exceptions import WorkflowError

    table = render(monkeypatch, DETRPRUNE_SLURM_GPU_MODEL=model)["set-resources"]
    assert table["evaluate"]["gpu_model"] == model  # passed through as given
    with pytest.raises(WorkflowError, match="GPU model"):
        gres({**table["evaluate"], "gpu": 1})
