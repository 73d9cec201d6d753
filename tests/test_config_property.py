"""Property: a config the schema allows is refused at start-up in one line, or it plans.

Configs are drawn from the micro study by changing a few keys at a time to values the schema
allows, as JSON Schema reads it (2024.0 is an integer to JSON Schema, an empty array has no items
to fail), walking the schema with a seeded ``random.Random``. Each one must then be refused by
:func:`~detrprune.config.validate_config` with a one-line :class:`~detrprune.config.ConfigError`,
or be accepted and then planned: the cheap checks run on many configs (the names the rules put in
paths, the iterative schedule, the data split), a Snakemake dry run on a few. A value the schema
lets through and the workflow cannot run is then found here, not inside a job.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import yaml

from detrprune.config import ConfigError, load_schema, validate_config

from .conftest import REPO, micro_config, run_snakemake

SCHEMA = load_schema()
MICRO = micro_config()
SEED = 35
# Keys changed per config: few enough that a refusal names one cause, enough to combine two.
MAX_CHANGES = 3
FAST_CONFIGS = 1000
DRY_RUNS = 16
BUILT_MODELS = 6
# The model keys whose limits mmdet and mmcv set (the rest size layers freely). num_queries
# stays: a two-stage model ranks its queries among the encoder's tokens, as many as the input
# image has (504 at the micro input), which no config value says.
MODEL_KEYS = (
    "depth",
    "embed_dims",
    "num_levels",
    "num_heads",
    "num_points",
    "dropout",
    "neck_gn_groups",
    "box_refine",
    "two_stage",
    "max_per_img",
)

KeyPath = tuple[Any, ...]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` (to ``#/$defs/<name>``) followed."""
    while "$ref" in schema:
        target = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        schema = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
    return schema


def types_of(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def random_integer(schema: dict[str, Any], rng: random.Random) -> int | float:
    """An integer in the schema's range, mostly near its low end where the limits are; now and
    then as a whole-number float, which JSON Schema counts as an integer."""
    low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
    high = schema.get("maximum", schema.get("exclusiveMaximum", low + 1000) - 1)
    value = rng.choice(
        [low, low + 1, high, rng.randint(low, min(high, low + 64)), rng.randint(low, high)]
    )
    return float(value) if rng.random() < 0.15 else value


def random_number(schema: dict[str, Any], rng: random.Random) -> int | float:
    """A finite number in the schema's range, its bounds included where they are; now and then a
    whole number (an int is a number too)."""
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0.0))
    high = schema.get("maximum", schema.get("exclusiveMaximum", low + 10.0))
    choices = [rng.uniform(low, high)]
    choices += [low] if "minimum" in schema else []
    choices += [high] if "maximum" in schema else []
    whole = [n for n in range(int(low), int(high) + 1) if low < n < high or n in choices]
    choices += [rng.choice(whole)] if whole else []
    return rng.choice(choices)


def random_array(schema: dict[str, Any], rng: random.Random, names: list[str]) -> list[Any]:
    """Between ``minItems`` and a few items, distinct when ``uniqueItems`` asks for it."""
    low = schema.get("minItems", 0)
    high = schema.get("maxItems", low + 3)
    size = rng.randint(low, high)
    items = []
    for _ in range(20 * (size + 1)):
        if len(items) == size:
            break
        item = random_value(schema["items"], rng, names)
        if not schema.get("uniqueItems") or item not in items:
            items.append(item)
    return items


def random_object(schema: dict[str, Any], rng: random.Random, names: list[str]) -> dict:
    """The required properties and a random share of the optional ones."""
    properties = schema.get("properties", {})
    optional = [key for key in properties if key not in schema.get("required", [])]
    chosen = [*schema.get("required", []), *rng.sample(optional, rng.randint(0, len(optional)))]
    if not chosen and schema.get("minProperties"):
        chosen = rng.sample(optional, schema["minProperties"])
    return {key: random_value(properties[key], rng, names) for key in chosen}


def random_value(schema: dict[str, Any], rng: random.Random, names: list[str]) -> Any:
    """A value ``schema`` allows. Free strings are names: of the config's methods (the one
    kind of free string that is not a path or URL), or one that names none."""
    schema = resolve(schema)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kinds = types_of(schema)
    if "null" in kinds and rng.random() < 0.3:
        return None
    if "boolean" in kinds:
        return rng.random() < 0.5
    if "integer" in kinds:
        return random_integer(schema, rng)
    if "number" in kinds:
        return random_number(schema, rng)
    if "array" in kinds:
        return random_array(schema, rng, names)
    if "object" in kinds:
        return random_object(schema, rng, names)
    return rng.choice([*names, "no_such_method"])


def variable_keys(config: Any, schema: dict[str, Any], path: KeyPath = ()) -> Iterator[KeyPath]:
    """Paths of the keys a random config may change: every value, present or optional, but
    free strings (paths, URLs, digests: what is at them is no config value to draw)."""
    schema = resolve(schema)
    if "properties" in schema and isinstance(config, dict):
        for key, sub in schema["properties"].items():
            sub = resolve(sub)
            if isinstance(config.get(key), dict):
                yield from variable_keys(config[key], sub, (*path, key))
            elif "enum" in sub or "string" not in types_of(sub) or key == "method":
                yield (*path, key)
        return
    if isinstance(config, dict) and isinstance(schema.get("additionalProperties"), dict):
        # Named entries (pruning methods): each one's keys.
        for name, entry in config.items():
            yield from variable_keys(entry, schema["additionalProperties"], (*path, name))


def schema_at(path: KeyPath) -> dict[str, Any]:
    """The schema of the value at ``path`` in a config."""
    schema = SCHEMA
    for key in path:
        schema = resolve(schema)
        properties = schema.get("properties", {})
        schema = properties[key] if key in properties else schema["additionalProperties"]
    return resolve(schema)


def required_at(path: KeyPath) -> bool:
    return path[-1] in schema_at(path[:-1]).get("required", [])


def random_config(rng: random.Random) -> tuple[dict, list[str]]:
    """The micro config with 1 to :data:`MAX_CHANGES` random changes, and what they were."""
    config = copy.deepcopy(MICRO)
    changes = []
    for _ in range(rng.randint(1, MAX_CHANGES)):
        methods = config["pruning"]["methods"]
        names = list(methods)
        roll = rng.random()
        if roll < 0.1:
            name = rng.choice(["extra", "extra_2"])
            methods[name] = random_value(schema_at(("pruning", "methods", name)), rng, names)
            changes.append(f"pruning.methods.{name} = {methods[name]}")
            continue
        if roll < 0.15 and len(names) > 1:
            del methods[rng.choice(names)]
            changes.append(f"pruning.methods: {sorted(methods)}")
            continue
        path = rng.choice(list(variable_keys(config, SCHEMA)))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        if path[-1] in parent and not required_at(path) and rng.random() < 0.3:
            del parent[path[-1]]
            changes.append(f"{'.'.join(path)} removed")
            continue
        parent[path[-1]] = random_value(schema_at(path), rng, names)
        changes.append(f"{'.'.join(path)} = {parent[path[-1]]!r}")
    return config, changes


def json_schema_errors(config: dict) -> list[str]:
    """What stock JSON Schema (any whole number an integer) finds wrong with ``config``: nothing
    for a drawn one, so that every refusal below is the check's, not the walk's."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [error.message for error in validator.iter_errors(config)]


def wildcard_patterns() -> dict[str, re.Pattern[str]]:
    """The rules' wildcard constraints (``rules/common.smk``): what a name in a path must be."""
    text = (REPO / "rules" / "common.smk").read_text()
    block = text.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    return {
        name: re.compile(pattern)
        for name, pattern in re.findall(r'^\s+(\w+)=r"([^"]+)",$', block, flags=re.MULTILINE)
    }


def check_planning(config: dict, patterns: dict[str, re.Pattern[str]]) -> None:
    """What the rules make of an accepted config without running it: every ratio, method name
    and seed fits its wildcard, each method has a last target, the iterative schedule prunes
    something at each step, and the data split leaves both halves non-empty."""
    from detrprune.data.coco import split_ids
    from detrprune.jobs import percent_to_fraction
    from detrprune.prune.iterative import step_plan

    pruning = config["pruning"]
    for name, spec in pruning["methods"].items():
        assert patterns["method"].fullmatch(name), name
        assert spec["ratios"], f"{name}: no ratio, no final model"
        for ratio in spec["ratios"]:
            assert patterns["ratio"].fullmatch(str(ratio)), f"{name}: r{ratio}"
            assert 0 < percent_to_fraction(ratio) < 1
    for seed in [config["seed"], *pruning["finetune"].get("replicate_seeds", [])]:
        assert patterns["seed"].fullmatch(str(seed)), f"s{seed}"
    iterative = pruning["iterative"]
    if iterative["enabled"]:
        plan = step_plan(iterative["target_ratio"], iterative["steps"])
        assert len(plan) == iterative["steps"]
        assert all(0 < row["step_ratio"] < 1 for row in plan)
    if config["dataset"]["source"] == "synthetic":
        frames = [f"{i:06d}" for i in range(config["dataset"]["synthetic"]["num_scenes"])]
        train, val = split_ids(frames, config["dataset"]["val_fraction"], config["seed"])
        assert train and val


def drawn_configs(count: int, accept: Callable[[dict], bool]) -> Iterator[tuple[dict, list]]:
    """``count`` random configs (fewer if they take long to find) that ``accept`` takes."""
    rng = random.Random(SEED)
    found = 0
    for _ in range(50 * count):
        config, changes = random_config(rng)
        assert not json_schema_errors(config), (changes, json_schema_errors(config))
        if accept(config):
            yield config, changes
            found += 1
            if found == count:
                return


def refused(config: dict) -> str | None:
    """The check's one line for ``config``, or None when it accepts it."""
    try:
        validate_config(config)
    except ConfigError as error:
        return str(error)
    return None


def test_the_check_refuses_in_one_line_or_the_rules_can_plan():
    """Many configs: a one-line refusal naming a key, or names and schedules the rules take.
    Any other exception from the check (a KeyError, a TypeError) fails here too."""
    patterns = wildcard_patterns()
    outcomes = {"refused": 0, "accepted": 0}
    for config, changes in drawn_configs(FAST_CONFIGS, lambda config: True):
        message = refused(config)
        if message is not None:
            assert message.startswith("config: ") and "\n" not in message, (changes, message)
            outcomes["refused"] += 1
            continue
        try:
            check_planning(config, patterns)
        except AssertionError as error:
            raise AssertionError(f"accepted {changes}, cannot be planned: {error}") from None
        outcomes["accepted"] += 1
    # The walk reaches both sides of the check, or it tests nothing.
    assert sum(outcomes.values()) == FAST_CONFIGS
    assert min(outcomes.values()) >= FAST_CONFIGS // 10, outcomes


def test_accepted_configs_pass_a_snakemake_dry_run(tmp_path):
    """A few accepted configs through the real workflow's planning (``snakemake -n``)."""
    accepted = drawn_configs(DRY_RUNS, lambda config: refused(config) is None)
    runs = 0
    for index, (config, changes) in enumerate(accepted):
        workdir = tmp_path / str(index)
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        run = run_snakemake(workdir, "-n", timeout=120)
        output = run.stdout + run.stderr
        assert run.returncode == 0, f"accepted {changes}, dry run failed:\n{output[-3000:]}"
        runs += 1
    assert runs == DRY_RUNS


def test_accepted_model_sections_build_and_run():
    """Model sizes the check accepts make a detector mmdet builds and runs (eval, one image)."""
    import torch

    from detrprune.train.model import build_detector, model_config, synthetic_batch

    rng = random.Random(SEED)
    built = 0
    for _ in range(50 * BUILT_MODELS):
        config = copy.deepcopy(MICRO)
        model = config["model"]
        for key in rng.sample(MODEL_KEYS, rng.randint(1, MAX_CHANGES)):
            model[key] = random_value(schema_at(("model", key)), rng, [])
        if isinstance(model["embed_dims"], int) and rng.random() < 0.7:
            # Mostly heads and groups that divide the width, or few draws get past the
            # divisibility check to the limits behind it.
            divisors = [
                d for d in range(1, model["embed_dims"] + 1) if model["embed_dims"] % d == 0
            ]
            model.update(num_heads=rng.choice(divisors), neck_gn_groups=rng.choice(divisors))
        if refused(config) is not None:
            continue
        torch.manual_seed(0)
        detector = build_detector(model_config(model))
        detector.init_weights()
        detector.eval()
        width, height = model["input_scale"]
        with torch.no_grad():
            (result,) = detector.test_step(synthetic_batch((height, width)))
        assert len(result.pred_instances) == model["max_per_img"], model
        built += 1
        if built == BUILT_MODELS:
            break
    assert built == BUILT_MODELS
