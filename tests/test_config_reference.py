"""docs/configuration.md is the schema's, and the schema describes every key the configs set."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from detrprune.config import load_schema
from detrprune.config_reference import PAGE, render
from detrprune.constants import DEFAULT_GRADIENT_IMAGES, DEFAULT_ROUND_TO

from .conftest import REPO

SCHEMA = load_schema()
CONFIGS = ["config.yaml", "configs/kitti.yaml"]


def resolve(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` followed, its own keys (description, default) winning."""
    schema = dict(schema)
    while "$ref" in schema:
        schema = {**SCHEMA["$defs"][schema.pop("$ref").rsplit("/", 1)[1]], **schema}
    return schema


def config_keys(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    path: tuple[str, ...] = (),
    named: bool = False,
) -> Iterator[tuple[tuple[str, ...], Any, dict[str, Any] | None, bool]]:
    """``(path, value, schema or None when the schema has no such key, named)`` for every key of
    ``config``, nested ones included; ``named`` in and below an entry of a mapping of named
    entries (a method), whose values are no defaults of the schema's."""
    schema = resolve(schema)
    properties = schema.get("properties", {})
    entries = isinstance(schema.get("additionalProperties"), Mapping)
    for key, value in config.items():
        sub = properties.get(key, schema["additionalProperties"] if entries else None)
        here = (*path, key)
        if sub is None:
            yield here, value, None, named
            continue
        sub = resolve(sub)
        yield here, value, sub, named or entries
        if isinstance(value, Mapping):
            yield from config_keys(value, sub, here, named or entries)


def schema_keys(schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple]:
    """``(path, schema)`` of every key the schema defines (``<name>`` for named entries)."""
    schema = resolve(schema)
    for key, sub in schema.get("properties", {}).items():
        yield (*path, key), resolve(sub)
        yield from schema_keys(sub, (*path, key))
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield (*path, "<name>"), resolve(schema["additionalProperties"])
        yield from schema_keys(schema["additionalProperties"], (*path, "<name>"))


def test_the_configuration_page_is_generated_from_the_schema():
    assert PAGE.read_text() == render(), (
        "docs/configuration.md is stale: regenerate it with "
        ".venv/bin/python -m detrprune.config_reference > docs/configuration.md"
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_every_key_a_config_sets_is_in_the_schema_with_a_description(name):
    config = yaml.safe_load((REPO / name).read_text())
    unknown = [".".join(path) for path, _, sub, _ in config_keys(config, SCHEMA) if sub is None]
    assert not unknown, f"{name}: not in schemas/config.schema.yaml: {unknown}"
    undescribed = [
        ".".join(path)
        for path, _, sub, _ in config_keys(config, SCHEMA)
        if not (sub or {}).get("description")
    ]
    assert not undescribed, f"{name}: keys without a description in the schema: {undescribed}"


def test_every_schema_key_has_a_description():
    undescribed = [
        ".".join(path) for path, sub in schema_keys(SCHEMA) if not sub.get("description")
    ]
    assert not undescribed


def test_the_schema_defaults_are_config_yamls_values():
    """Every value config.yaml gives is the schema's default there, or below it (a mapping's
    keys, or the mapping as a whole where its keys are a shared definition's)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    covered: list[tuple[str, ...]] = []
    for path, value, sub, named in config_keys(config, SCHEMA):
        if named or any(path[: len(done)] == done for done in covered):
            continue
        if "default" in sub:
            assert sub["default"] == value, (".".join(path), sub["default"], value)
            assert type(sub["default"]) is type(value), ".".join(path)
            covered.append(path)
        else:
            assert isinstance(value, Mapping), f"{'.'.join(path)}: no default in the schema"


def test_the_documented_defaults_of_optional_keys_are_the_codes():
    method = SCHEMA["properties"]["pruning"]["properties"]["methods"]["additionalProperties"]
    assert method["properties"]["round_to"]["default"] == DEFAULT_ROUND_TO
    assert method["properties"]["gradient_images"]["default"] == DEFAULT_GRADIENT_IMAGES
    assert method["properties"]["criterion"]["default"] == "l1"
    pruning = SCHEMA["properties"]["pruning"]["properties"]
    assert pruning["replace_methods"]["default"] is False
    assert pruning["finetune"]["properties"]["replicate_seeds"]["default"] == []


def test_the_defaults_and_examples_are_valid_values():
    """What the page shows as a default or an example is a value the schema accepts."""
    from detrprune.config import ConfigValidator

    for path, sub in schema_keys(SCHEMA):
        for value in [*([sub["default"]] if "default" in sub else []), *sub.get("examples", [])]:
            errors = list(ConfigValidator({**sub, "$defs": SCHEMA["$defs"]}).iter_errors(value))
            assert not errors, (".".join(path), value, errors[0].message)
