"""The workflow config: its layers resolved, validated against ``schemas/config.schema.yaml``.

A run's config is ``config.yaml`` (the embedded default), then each ``--configfile`` in order,
then ``--config``: merged key by key, as Snakemake merges them (:func:`resolve_layers`), except
that a layer with ``pruning.replace_methods: true`` gives the whole method set, so that a study
file such as ``configs/kitti.yaml`` runs its own methods and none of the demo's. The Snakefile
resolves the layers again with :func:`load_config`, which also refuses a value a layer changes
that the chosen options ignore (:data:`IGNORED_KEYS`).

Snakemake's own ``validate()`` prints the whole schema on failure; a user wants one line that
names the key and what is wrong with it, so the schema is applied here with jsonschema directly.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from detrprune.constants import (
    CLASSES,
    nm_pattern,
)
from detrprune.prune.spec import MethodSpec, MethodSpecError
from detrprune.train.pretrained_files import (
    CHECKPOINT_DIR,
    INIT_KEYS,
    is_url,
    url_file_name,
    url_problem,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

# ``train`` values that change how a run is logged or checkpointed, not what it computes.
# They are not in any rule's params, so changing one reruns no job (the scripts read them from
# the config), and a training work folder is resumed, not wiped, when only they differ.
# num_workers is not one of them: mmengine seeds each data-loader worker by its index, so the
# worker count changes the random augmentation (and a resumed run would go on another stream).
RUN_ONLY_TRAIN_KEYS = ("log_interval", "checkpoint_interval", "threads")


def train_result_settings(train: Mapping[str, Any]) -> dict[str, Any]:
    """``train`` without :data:`RUN_ONLY_TRAIN_KEYS`: the values that decide a training result."""
    return {key: value for key, value in train.items() if key not in RUN_ONLY_TRAIN_KEYS}


def cpu_latency(latency: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate.latency`` as the CPU timings use it: ``cpu``'s warmup, runs and rounds (when
    set) in place of the shared ones."""
    return {**{k: v for k, v in latency.items() if k != "cpu"}, **(latency.get("cpu") or {})}


def gpu_latency(latency: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate.latency`` as the GPU timings use it: the shared schedule, without ``cpu``."""
    return {k: v for k, v in latency.items() if k != "cpu"}


def latency_params(latency: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate.latency`` as rule params: without ``cpu`` while it is null, so that a config
    that leaves it out keeps the params (and the results) it had before the key existed."""
    return {k: v for k, v in latency.items() if not (k == "cpu" and v is None)}


class ConfigError(ValueError):
    """A config value the study cannot run with; the message is one line naming the key."""


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _is_integer(checker: Any, instance: Any) -> bool:
    """A Python ``int``, not ``bool``: JSON Schema also counts 2024.0 as an integer, which then
    fails inside a job (``range``, tensor sizes) or names a path ``r30.0`` no rule makes."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    """A finite ``int`` or ``float``, not ``bool``: NaN passes every minimum and maximum."""
    return (
        isinstance(instance, int | float)
        and not isinstance(instance, bool)
        and math.isfinite(instance)
    )


# Draft 2020-12 with the study's meaning of "integer" and "number".
ConfigValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


@functools.lru_cache(maxsize=4)
def _validator(schema_path: Path) -> jsonschema.protocols.Validator:
    """The schema at ``schema_path``, read once per process (tests validate thousands)."""
    return ConfigValidator(load_schema(schema_path))


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, said plainly for the float type errors (``2024.0 is not of type
    'integer'`` reads as a contradiction to whoever wrote 2024.0 for a whole number)."""
    value = error.instance
    if error.validator != "type" or not isinstance(value, float):
        return error.message
    types = error.validator_value
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if value.is_integer() and "integer" in ([types] if isinstance(types, str) else types):
        return f"{value} is not an integer: write {int(value)}"
    return error.message


def key_path(path: Any) -> str:
    """``['pruning', 'filter', 'ratios', 0]`` -> ``pruning.filter.ratios[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def validate_config(
    config: Mapping[str, Any], source: str = "config", schema_path: Path = SCHEMA_PATH
) -> None:
    """Raise :class:`ConfigError` for the most relevant schema violation (jsonschema's choice),
    then for the first value the schema cannot rule out but the study cannot run with."""
    for name, spec in (config.get("pruning") or {}).get("methods", {}).items():
        scope = spec.get("scope") if isinstance(spec, Mapping) else None
        if isinstance(scope, int) and not isinstance(scope, bool):
            # YAML 1.1 reads an unquoted 2:4 as the base-60 number 124.
            raise ConfigError(
                f"{source}: pruning.methods.{name}.scope: {spec['scope']} is a number: write an "
                'N:M scope in quotes, scope: "2:4"'
            )
    error = jsonschema.exceptions.best_match(_validator(schema_path).iter_errors(dict(config)))
    if error is not None:
        raise ConfigError(f"{source}: {key_path(error.absolute_path)}: {_message(error)}")
    dataset = config["dataset"]
    if dataset["source"] == "synthetic" and "synthetic" not in dataset:
        # The data rules read its sizes when the workflow loads.
        raise ConfigError(
            f"{source}: dataset: 'synthetic' is a required property when dataset.source is "
            "synthetic"
        )
    _check_model(config["model"], source)
    _check_pruning(config["pruning"], config["seed"], source)


def _check_model(model: Mapping[str, Any], source: str) -> None:
    """Sizes mmdet and mmcv can build; pretrained starts exist; frozen layers and frozen BN
    statistics need one."""
    embed_dims = model["embed_dims"]
    if embed_dims % 4:
        # mmdet's sine positional encoding (and the two-stage proposal embedding) gives each
        # image axis embed_dims / 2 channels, which it fills with sine and cosine pairs.
        raise ConfigError(
            f"{source}: model.embed_dims: {embed_dims} is not a multiple of 4: the positional "
            "encoding gives half of the channels to each image axis, in sine and cosine pairs"
        )
    for key, why in (
        ("num_heads", "every attention head gets embed_dims / num_heads channels"),
        ("neck_gn_groups", "the neck's GroupNorm splits its embed_dims channels into equal groups"),
    ):
        if embed_dims % model[key]:
            raise ConfigError(
                f"{source}: model.{key}: {model[key]} does not divide model.embed_dims "
                f"({embed_dims}): {why}"
            )
    if model["max_per_img"] > model["num_queries"] * len(CLASSES):
        # The head's top-k runs over every (query, class) score.
        raise ConfigError(
            f"{source}: model.max_per_img: {model['max_per_img']} is more detections than "
            f"model.num_queries x {len(CLASSES)} classes ({model['num_queries'] * len(CLASSES)}) "
            "can give"
        )
    init = model["init"]
    for key in INIT_KEYS:
        value = init[key]
        if value is None:
            continue
        if is_url(value):
            problem = url_problem(value, (init["sha256"] or {}).get(key))
            if problem:
                raise ConfigError(f"{source}: model.init.{key}: {value}: {problem}")
        elif not Path(value).is_file():
            raise ConfigError(f"{source}: model.init.{key}: {value}: no such file")
    names = [url_file_name(init[key]) for key in INIT_KEYS if init[key] and is_url(init[key])]
    if len(names) != len(set(names)):
        raise ConfigError(
            f"{source}: model.init: backbone and detector URLs end in the same file name "
            f"({names[0]}): both would be downloaded to {CHECKPOINT_DIR / names[0]}"
        )
    if init["backbone"] is None and init["detector"] is None:
        # mmdet's ResNet freezes the stem from frozen_stages 0 on.
        if model["frozen_stages"] >= 0:
            raise ConfigError(
                f"{source}: model.frozen_stages: {model['frozen_stages']} freezes layers that "
                "would keep their random initialisation: give model.init.backbone or "
                "model.init.detector, or set it to -1"
            )
        if model["norm_eval"]:
            raise ConfigError(
                f"{source}: model.norm_eval: true keeps BatchNorm's initial statistics (0 and "
                "1) without a pretrained start: give model.init.backbone or "
                "model.init.detector, or set it to false"
            )


def scratch_settings(pruning: Mapping[str, Any]) -> tuple[dict[str, list[int]], list[str]]:
    """``pruning.scratch`` as (targets: method -> ratios, budgets), its defaults filled in."""
    scratch = pruning.get("scratch") or {}
    targets = {
        name: [int(r) for r in ratios] for name, ratios in scratch.get("targets", {}).items()
    }
    return targets, list(scratch.get("budgets", ["e"]))


def _check_pruning(pruning: Mapping[str, Any], seed: int, source: str) -> None:
    """Cross-field rules the schema cannot say in one readable line."""
    for name, method in pruning["methods"].items():
        where = f"{source}: pruning.methods.{name}"
        try:
            spec = MethodSpec.from_config(method)
        except MethodSpecError as error:
            raise ConfigError(f"{where}{error}") from None
        if spec.nm is not None:
            sparsity = 100 * (1 - spec.nm[0] / spec.nm[1])
            if any(ratio != sparsity for ratio in method["ratios"]):
                raise ConfigError(
                    f"{where}.ratios: scope {spec.scope} zeroes {sparsity:g} % of the weights "
                    f"it prunes: its ratios must be [{sparsity:g}], got {method['ratios']}"
                )
    replicate_seeds = pruning["finetune"].get("replicate_seeds", [])
    if seed in replicate_seeds:
        raise ConfigError(
            f"{source}: pruning.finetune.replicate_seeds: {seed} is the study's own seed, whose "
            "fine-tuning every target already has: list other seeds"
        )
    targets, _ = scratch_settings(pruning)
    for name, ratios in targets.items():
        where = f"{source}: pruning.scratch.targets.{name}"
        method = pruning["methods"].get(name)
        if method is None:
            raise ConfigError(
                f"{where}: not a method under pruning.methods ({', '.join(pruning['methods'])})"
            )
        if method["kind"] != "filter":
            raise ConfigError(
                f"{where}: a {method['kind']} method keeps the baseline's shapes: only a filter "
                "method's pruned architecture can be trained from scratch"
            )
        missing = [ratio for ratio in ratios if ratio not in method["ratios"]]
        if missing:
            raise ConfigError(
                f"{where}: {missing} not among the method's ratios {method['ratios']}"
            )
    if targets and not pruning["finetune"]["enabled"]:
        raise ConfigError(
            f"{source}: pruning.scratch.targets: a scratch twin is compared with the fine-tuned "
            "target and trains for the baseline's plus the fine-tune's iterations: set "
            "pruning.finetune.enabled"
        )
    iterative = pruning["iterative"]
    if iterative["enabled"] and iterative["method"] not in pruning["methods"]:
        raise ConfigError(
            f"{source}: pruning.iterative.method: {iterative['method']!r} is not a method under "
            f"pruning.methods ({', '.join(pruning['methods'])})"
        )
    if iterative["enabled"] and "part_ratios" in pruning["methods"][iterative["method"]]:
        # Whole heads and points do not split into equal steps the way channel fractions do.
        raise ConfigError(
            f"{source}: pruning.iterative.method: {iterative['method']!r} has part_ratios, which "
            "the iterative loop does not split into steps: choose a method without them"
        )
    if iterative["enabled"]:
        spec = pruning["methods"][iterative["method"]]
        pattern = nm_pattern(spec["scope"]) if spec["kind"] == "weight" else None
        # Every step prunes to a sparsity of its own, and an N:M pattern has just one.
        if pattern is not None and (
            iterative["steps"] != 1
            or iterative["target_ratio"] != 100 * (1 - pattern[0] / pattern[1])
        ):
            raise ConfigError(
                f"{source}: pruning.iterative.method: {iterative['method']!r} has the N:M scope "
                f"{spec['scope']}, whose sparsity is fixed: the iterative loop cannot step it up "
                "(choose another method)"
            )


# --- Layers: config.yaml, then each --configfile, then --config ------------------------------

DEFAULT_CONFIG = "config.yaml"
OVERRIDES_SOURCE = "--config"

KeyPath = tuple[str, ...]
_MISSING = object()


@dataclass
class ResolvedConfig:
    """The merged config, and each value a layer after the first changed: ``(source, path)``."""

    config: dict[str, Any]
    changes: list[tuple[str, KeyPath]] = field(default_factory=list)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One config file (YAML, or JSON, which YAML reads); an empty file is no values."""
    try:
        with open(path) as handle:
            values = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: {' '.join(str(error).split())}") from None
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, not {values!r}")
    return dict(values)


def _shown(path: str | Path) -> str:
    """``path`` as a message names it: relative to the working directory when inside it."""
    relative = os.path.relpath(os.path.abspath(path))
    return str(path) if relative.startswith("..") else relative


def config_layers(
    default: str | Path | None,
    configfiles: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> list[tuple[str, Mapping[str, Any]]]:
    """``(source, values)`` of each layer, in the order they apply: ``default`` (config.yaml;
    None when there is none), each of ``configfiles`` (``--configfile``), then ``overrides``
    (``--config``)."""
    paths = ([default] if default is not None else []) + list(configfiles)
    layers = [(_shown(path), read_config_file(path)) for path in paths]
    if overrides:
        layers.append((OVERRIDES_SOURCE, overrides))
    return layers


def _merge(
    base: dict[str, Any],
    override: Mapping[str, Any],
    path: KeyPath,
    changed: list[KeyPath],
) -> dict[str, Any]:
    """Snakemake's ``update_config``: nested mappings key by key, anything else replaced (a
    mapping replaces a non-mapping whole). Appends to ``changed`` each value that differs."""
    for key, value in override.items():
        if isinstance(value, Mapping):
            below = base.get(key)
            base[key] = _merge(
                below if isinstance(below, dict) else {}, value, (*path, key), changed
            )
        else:
            if base.get(key, _MISSING) != value:
                changed.append((*path, key))
            base[key] = copy.deepcopy(value)
    return base


def resolve_layers(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> ResolvedConfig:
    """Merge ``layers`` (see :func:`config_layers`) in order, key by key, except that the
    ``pruning.methods`` of a layer that sets ``pruning.replace_methods: true`` replace all the
    methods before it (later layers then merge into them as usual)."""
    resolved = ResolvedConfig({})
    for index, (source, values) in enumerate(layers):
        changed: list[KeyPath] = []
        _merge(resolved.config, values, (), changed)
        pruning = values.get("pruning")
        if isinstance(pruning, Mapping) and pruning.get("replace_methods") is True:
            if not isinstance(pruning.get("methods"), Mapping):
                raise ConfigError(
                    f"{source}: pruning.replace_methods: true replaces the method set with this "
                    "file's pruning.methods, and it gives none"
                )
            resolved.config["pruning"]["methods"] = copy.deepcopy(dict(pruning["methods"]))
        if index > 0:
            resolved.changes += [(source, key) for key in changed]
    return resolved


def resolve_config(
    default: str | Path | None,
    configfiles: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config a run with these layers gets (see :func:`config_layers`), not validated."""
    return resolve_layers(config_layers(default, configfiles, overrides)).config


def load_config(
    default: str | Path | None,
    configfiles: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    schema_path: Path = SCHEMA_PATH,
) -> dict[str, Any]:
    """What the Snakefile runs: the layers resolved, validated (:func:`validate_config`), and
    checked for values a layer changes that the chosen options ignore
    (:func:`check_ignored_keys`). Raises :class:`ConfigError`."""
    resolved = resolve_layers(config_layers(default, configfiles, overrides))
    validate_config(resolved.config, source="config", schema_path=schema_path)
    check_ignored_keys(resolved)
    return resolved.config


class IgnoredKey(NamedTuple):
    """A key (and the keys below it) that a choice of other options leaves unused: ``holds``
    tells whether the resolved config made that ``choice``, ``instead`` what to do."""

    prefix: KeyPath
    choice: str
    holds: Callable[[Mapping[str, Any]], bool]
    instead: str


# A layer after config.yaml that changes one of these while its choice holds is refused: the
# change would do nothing. (config.yaml itself carries them for the choices that use them.)
IGNORED_KEYS: tuple[IgnoredKey, ...] = (
    IgnoredKey(
        ("dataset", "val_fraction"),
        "kitti.split standard (the standard frame lists decide the split)",
        lambda config: data_split(config)["split"] == "standard",
        "remove it, or set kitti.split: random",
    ),
    IgnoredKey(
        ("kitti",),
        "dataset.source synthetic",
        lambda config: config["dataset"]["source"] == "synthetic",
        "remove it, or set dataset.source: kitti",
    ),
    IgnoredKey(
        ("dataset", "synthetic"),
        "dataset.source kitti",
        lambda config: config["dataset"]["source"] == "kitti",
        "remove it, or set dataset.source: synthetic",
    ),
)


def check_ignored_keys(resolved: ResolvedConfig) -> None:
    """Raise :class:`ConfigError` for the first value a layer after the first changed that the
    resolved config's options ignore (:data:`IGNORED_KEYS`), naming the layer and key."""
    for source, path in resolved.changes:
        for ignored in IGNORED_KEYS:
            if path[: len(ignored.prefix)] == ignored.prefix and ignored.holds(resolved.config):
                value: Any = resolved.config
                for key in path:
                    value = value[key]
                raise ConfigError(
                    f"{source}: {key_path(path)}: {value!r} has no effect with "
                    f"{ignored.choice}: {ignored.instead}"
                )


def data_split(config: Mapping[str, Any]) -> dict[str, Any]:
    """How ``kitti_to_coco`` splits the frames: ``split`` (``kitti.split`` for the real archives,
    always random for synthetic frames), and the random split's ``val_fraction`` and ``seed``,
    None under the standard split, which uses neither."""
    split = config["kitti"]["split"] if config["dataset"]["source"] == "kitti" else "random"
    random = split == "random"
    return {
        "split": split,
        "val_fraction": config["dataset"]["val_fraction"] if random else None,
        "seed": config["seed"] if random else None,
    }
