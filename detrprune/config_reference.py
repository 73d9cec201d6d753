"""docs/configuration.md, generated from ``schemas/config.schema.yaml``.

Every key the schema knows, in its order: type, default (config.yaml's value, which the schema
repeats), the full study's value (configs/kitti.yaml), the values allowed and the description,
with the schema's ``examples``. Regenerate the page after editing the schema or either config:

    .venv/bin/python -m detrprune.config_reference > docs/configuration.md

tests/test_config_reference.py fails while the page differs from :func:`render`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from detrprune.config import IGNORED_KEYS, SCHEMA_PATH, key_path, load_schema

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config.yaml"
FULL_CONFIG = REPO / "configs" / "kitti.yaml"
PAGE = REPO / "docs" / "configuration.md"

# The placeholder a key path shows for named entries (``additionalProperties``), and for the
# entries of a shared definition.
NAME = "<name>"
SHARED_NAMES = {"job_resources": "<rule>"}

HEADER = """\
# Configuration

<!-- Generated from schemas/config.schema.yaml by
     .venv/bin/python -m detrprune.config_reference > docs/configuration.md
     Edit the schema (or the configs), then regenerate: tests/test_config_reference.py fails
     while this page differs from the generator's. -->

Two files configure the study:

- `config.yaml` is the embedded default, the demo: synthetic KITTI-format frames, a tiny
  Deformable DETR, CPU. `snakemake` alone runs it (the Snakefile's `configfile:`).
- `configs/kitti.yaml` is the full study: real KITTI, mmdet's ResNet-50 recipe, GPUs
  ([real-study.md](real-study.md)). It is given on top of `config.yaml`:
  `snakemake --cores all results/report.pdf --configfile configs/kitti.yaml`.

A run's config is `config.yaml`, then each `--configfile` in the order given, then
`--config key=value`. They merge key by key, as Snakemake merges them: a mapping merges into the
one below it, any other value (a list too) replaces it, and a key a file leaves out keeps the
value below. One exception: a file with `pruning.replace_methods: true` gives the whole method
set, in place of the methods below it (later files and `--config` then merge into its methods
as usual). `configs/kitti.yaml` sets it, so the full study runs exactly the methods it lists.
Snakemake reads a nested `--config` value as text (`--config "kitti={archives_dir: /data}"`
works; a number below the top level arrives as a string and is refused), so give nested
numbers in a `--configfile`.

The resolved config is checked when the workflow starts, against the schema
(`schemas/config.schema.yaml`) and the cross-field rules of `detrprune/config.py`; a value the
study cannot run with stops it before any job, with one line naming the key, e.g.
`Invalid configuration: config: pruning.methods.filter.ratios[1]: 150 is greater than the
maximum of 99`. A `--configfile` or `--config` that changes a key the chosen options leave
unused is refused the same way, naming the file and key:

{ignored}

In the tables, **Default** is `config.yaml`'s value (for an optional key it leaves out, the
value the code uses), **Full study** the value `configs/kitti.yaml` sets, where it sets one.
Which jobs a change reruns: [running.md](running.md#what-a-change-reruns); what the methods
do: [methods.md](methods.md); the outputs: [outputs.md](outputs.md).
"""


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` (``#/$defs/<name>``) followed; its own keys win."""
    schema = dict(schema)
    while "$ref" in schema:
        target = root["$defs"][schema.pop("$ref").rsplit("/", 1)[1]]
        schema = {**target, **schema}
    return schema


def _ref_name(schema: Mapping[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) else None


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML flow style (``[10, 20]``, ``{mem_mb: 4000}``, ``null``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """Markdown table cell text: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _kinds(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """The type column: ``integer``, ``string or null``, ``list of integer``, ``mapping``."""
    if "enum" in schema:
        types = sorted({_json_type(value) for value in schema["enum"]})
    else:
        kind = schema.get("type", [])
        types = [kind] if isinstance(kind, str) else list(kind)
    names = []
    for kind in types:
        if kind == "array":
            items = _resolve(schema.get("items", {}), root)
            names.append(f"list of {_kinds(items, root)}" if items else "list")
        elif kind == "object":
            names.append("mapping")
        else:
            names.append(kind)
    return " or ".join(names)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _allowed(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """The allowed column: values, range, pattern, sizes."""
    parts = []
    if "enum" in schema:
        parts.append(", ".join(_code(yaml_value(value)) for value in schema["enum"]))
    low = (
        f">= {schema['minimum']}"
        if "minimum" in schema
        else f"> {schema['exclusiveMinimum']}"
        if "exclusiveMinimum" in schema
        else None
    )
    high = (
        f"<= {schema['maximum']}"
        if "maximum" in schema
        else f"< {schema['exclusiveMaximum']}"
        if "exclusiveMaximum" in schema
        else None
    )
    if "minimum" in schema and "maximum" in schema:
        parts.append(f"{schema['minimum']} to {schema['maximum']}")
    elif low or high:
        parts.append(", ".join(bound for bound in (low, high) if bound))
    if "pattern" in schema:
        parts.append(f"matches {_code(schema['pattern'])}")
    if "minLength" in schema:
        parts.append(f"at least {schema['minLength']} character(s)")
    low_items, high_items = schema.get("minItems"), schema.get("maxItems")
    if low_items is not None and low_items == high_items:
        parts.append(f"{low_items} items")
    else:
        if low_items:
            parts.append(f"at least {low_items} item(s)")
        if high_items is not None:
            parts.append(f"at most {high_items} items")
    if schema.get("uniqueItems"):
        parts.append("no repeats")
    items = _resolve(schema.get("items", {}), root) if "items" in schema else None
    if items:
        inner = _allowed(items, root)
        if inner:
            parts.append(f"each: {inner}")
    if schema.get("minProperties"):
        parts.append(f"at least {schema['minProperties']} key(s)")
    names = schema.get("propertyNames")
    if names:
        text = f"names match {_code(names['pattern'])}" if "pattern" in names else "names"
        excluded = names.get("not", {}).get("enum")
        if excluded:
            text += ", not " + ", ".join(_code(name) for name in excluded)
        parts.append(text)
    return "; ".join(parts)


def _lookup(config: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(config, Mapping) or key not in config:
            return False, None
        config = config[key]
    return True, config


def _shown_value(value: Any, named: bool) -> str:
    """A config value for a table cell: the entry names of a named mapping (the methods)."""
    if named and isinstance(value, Mapping):
        return ", ".join(_code(name) for name in value)
    return _code(yaml_value(value))


def rows(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    path: tuple[str, ...] = (),
    required: bool = True,
    default_config: Mapping[str, Any] | None = None,
    full_config: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, str]]:
    """One row per key at or below ``path``: key, type, default, full, allowed, description."""
    ref = _ref_name(schema)
    schema = _resolve(schema, root)
    named = isinstance(schema.get("additionalProperties"), Mapping)
    properties = schema.get("properties", {})
    # A mapping whose keys get rows of their own shows its values there.
    expands = bool(properties) and ref not in SHARED_NAMES
    if path:
        description = " ".join(schema.get("description", "").split())
        description += "" if not description or description.endswith(".") else "."
        examples = schema.get("examples", [])
        if examples:
            description += (
                f" Example{'s' if len(examples) > 1 else ''}: "
                + ", ".join(_code(yaml_value(example)) for example in examples)
                + "."
            )
        default = _code(yaml_value(schema["default"])) if "default" in schema else ""
        found, value = _lookup(default_config, path)
        if named and found:
            default = _shown_value(value, named)
        found, value = _lookup(full_config, path)
        full = _shown_value(value, named) if found and not expands else ""
        kind = _kinds(schema, root) + ("" if required else ", optional")
        yield {
            "key": ".".join(path),
            "type": kind,
            "default": default,
            "full": full,
            "allowed": _allowed(schema, root),
            "description": description,
        }
    if not expands:
        properties = {}  # a shared definition's keys: once, under its placeholder (section_rows)
    for key, sub in properties.items():
        yield from rows(
            sub,
            root,
            (*path, key),
            key in schema.get("required", []),
            default_config,
            full_config,
        )
    if named:
        yield from rows(schema["additionalProperties"], root, (*path, NAME), True, None, None)


def section_rows(
    key: str,
    root: Mapping[str, Any],
    default_config: Mapping[str, Any],
    full_config: Mapping[str, Any],
) -> list[dict[str, str]]:
    """The rows of one top-level key, and once each the keys of a definition its entries share
    (``resources.<rule>.mem_mb``)."""
    schema = root["properties"][key]
    found = list(
        rows(schema, root, (key,), key in root.get("required", []), default_config, full_config)
    )
    shared = {
        _ref_name(sub)
        for sub in _resolve(schema, root).get("properties", {}).values()
        if _ref_name(sub) in SHARED_NAMES
    }
    for name in sorted(shared):
        definition = root["$defs"][name]
        for sub_key, sub in definition["properties"].items():
            found += rows(
                sub,
                root,
                (key, SHARED_NAMES[name], sub_key),
                sub_key in definition.get("required", []),
            )
    return found


def _table(found: list[dict[str, str]]) -> str:
    lines = [
        "| Key | Type | Default | Full study | Allowed | Description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in found:
        cells = [
            _code(row["key"]),
            row["type"],
            row["default"],
            row["full"],
            row["allowed"],
            row["description"],
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _ignored_list() -> str:
    lines = []
    default = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for ignored in IGNORED_KEYS:
        _, value = _lookup(default, ignored.prefix)
        shown = key_path(ignored.prefix) + (".*" if isinstance(value, Mapping) else "")
        lines.append(f"- {_code(shown)} under {ignored.choice}: {ignored.instead}.")
    return "\n".join(lines)


def render(
    schema_path: Path = SCHEMA_PATH,
    default_path: Path = DEFAULT_CONFIG,
    full_path: Path = FULL_CONFIG,
) -> str:
    """The whole page."""
    root = load_schema(schema_path)
    default_config = yaml.safe_load(default_path.read_text())
    full_config = yaml.safe_load(full_path.read_text())
    parts = [HEADER.replace("{ignored}", _ignored_list())]
    for key in root["properties"]:
        schema = _resolve(root["properties"][key], root)
        found = section_rows(key, root, default_config, full_config)
        parts.append(f"## `{key}`\n")
        if "properties" in schema:
            # The section's own row is this paragraph.
            description = " ".join(schema.get("description", "").split())
            parts.append(description[0].upper() + description[1:] + ".\n")
            found = found[1:]
        parts.append(_table(found) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--output", type=Path, help=f"write the page here (default: stdout), e.g. {PAGE}"
    )
    args = parser.parse_args(argv)
    page = render()
    if args.output is None:
        sys.stdout.write(page)
    else:
        args.output.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
