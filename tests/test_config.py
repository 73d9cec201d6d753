"""Config validation: the shipped configs pass, bad values stop with one line naming the key."""

import pytest
import yaml

from detrprune.config import (
    ConfigError,
    check_ignored_keys,
    data_split,
    resolve_layers,
    validate_config,
)
from detrprune.prune.criteria import criteria

from .conftest import default_config, micro_config, planned_jobs, run_snakemake


def test_shipped_and_micro_configs_are_valid():
    validate_config(default_config())
    validate_config(micro_config())


@pytest.mark.parametrize("bad", [0, 100, 150, -5, "abc", 12.5])
def test_bad_ratio_names_the_key(bad):
    config = default_config()
    config["pruning"]["methods"]["filter"]["ratios"] = [10, bad]
    with pytest.raises(ConfigError) as info:
        validate_config(config, source="config.yaml")
    message = str(info.value)
    assert message.startswith("config.yaml: pruning.methods.filter.ratios[1]: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["methods"]["filter"].update(scope="global"),
            "config: pruning.methods.filter.scope: 'global' is not a filter pruning scope "
            "(expected one of backbone, backbone+ffn, backbone+residual, backbone+residual+ffn, "
            "backbone+attention, backbone+ffn+attention, backbone+residual+ffn+attention, "
            "backbone+points, backbone+attention+points)",
        ),
        (
            lambda p: p["methods"]["weight"].update(scope="backbone+ffn"),
            "config: pruning.methods.weight.scope: 'backbone+ffn' is not a weight pruning scope "
            "(expected one of layerwise, global, 2:4, 4:8)",
        ),
        (
            lambda p: p["methods"]["filter"].update(modules=["backbone"]),
            "config: pruning.methods.filter.modules: only weight pruning takes a module choice",
        ),
        (
            lambda p: p["methods"]["weight"].update(modules=["transformer"]),
            "config: pruning.methods.weight.modules[0]: 'transformer' is not one of",
        ),
        (
            lambda p: p["methods"]["filter"].update(layers=["ffn"]),
            "config: pruning.methods.filter.layers: only weight pruning takes a layer choice",
        ),
        (
            lambda p: p["methods"]["weight"].update(layers=["mlp"]),
            "config: pruning.methods.weight.layers[0]: 'mlp' is not one of",
        ),
        (
            lambda p: p["methods"]["weight"].update(modules=["backbone"], layers=["ffn"]),
            "config: pruning.methods.weight.layers: ['ffn'] are transformer layers, and modules "
            "['backbone'] has none of them",
        ),
        (
            lambda p: p["methods"]["weight"].update(criterion="random"),
            "config: pruning.methods.weight.criterion: only filter pruning takes a criterion",
        ),
        (
            lambda p: p["methods"]["filter"].update(criterion="l2"),
            "config: pruning.methods.filter.criterion: 'l2' is not a registered criterion (one of "
            "l1, random, taylor",
        ),
        (
            lambda p: p["methods"]["weight"].update(round_to=8),
            "config: pruning.methods.weight.round_to: only filter pruning takes a round_to",
        ),
        (
            lambda p: p["methods"]["filter"].update(round_to=0),
            "config: pruning.methods.filter.round_to: 0 is less than the minimum of 1",
        ),
        (
            lambda p: p["methods"]["filter"].update(transformer=["encoder"]),
            "config: pruning.methods.filter.transformer: only a filter scope with +ffn, "
            "+attention or +points prunes the transformer (scope is 'backbone')",
        ),
        (
            lambda p: p["methods"]["filter"].update(
                scope="backbone+points", transformer=["encoder", "decoder"]
            ),
            "config: pruning.methods.filter.transformer: scope backbone+points prunes the "
            "sampling points of ['encoder'] only",
        ),
        (
            lambda p: p["methods"]["weight"].update(part_ratios={"attention": 25}),
            "config: pruning.methods.weight.part_ratios: only filter pruning takes part ratios",
        ),
        (
            lambda p: p["methods"]["filter_ffn"].update(part_ratios={"attention": 25}),
            "config: pruning.methods.filter_ffn.part_ratios: attention not in scope 'backbone+ffn'",
        ),
        (
            lambda p: p["methods"]["filter_ffn"].update(part_ratios={"backbone": 25}),
            "config: pruning.methods.filter_ffn.part_ratios: Additional properties are not "
            "allowed ('backbone' was unexpected)",
        ),
        (
            lambda p: p["methods"]["filter_ffn"].update(part_ratios={"ffn": 100}),
            "config: pruning.methods.filter_ffn.part_ratios.ffn: 100 is greater than the maximum "
            "of 99",
        ),
        (
            lambda p: p["methods"]["filter_all"].update(part_ratios={"ffn": 25}),
            "config: pruning.iterative.method: 'filter_all' has part_ratios, which the iterative "
            "loop does not split into steps",
        ),
        (
            lambda p: p["methods"]["filter_ffn"].update(transformer=["neck"]),
            "config: pruning.methods.filter_ffn.transformer[0]: 'neck' is not one of",
        ),
        (
            lambda p: p["finetune"].update(replicate_seeds=[1, 2024]),
            "config: pruning.finetune.replicate_seeds: 2024 is the study's own seed",
        ),
        (
            lambda p: p["finetune"].update(replicate_seeds=[1, 1]),
            "config: pruning.finetune.replicate_seeds: [1, 1] has non-unique elements",
        ),
        (
            lambda p: p["iterative"].update(method="nope"),
            "config: pruning.iterative.method: 'nope' is not a method under pruning.methods",
        ),
        (
            lambda p: p["methods"].update({"Bad-Name": p["methods"]["filter"]}),
            "config: pruning.methods: 'Bad-Name' does not match",
        ),
        (
            lambda p: p["methods"].update({"iterative": p["methods"]["filter"]}),
            "config: pruning.methods: 'iterative' should not be valid",
        ),
    ],
)
def test_pruning_methods_are_checked_with_one_line(change, message):
    config = default_config()
    change(config["pruning"])
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_source_and_missing_key():
    config = default_config()
    config["dataset"]["source"] = "imagenet"
    with pytest.raises(ConfigError, match=r"dataset\.source: 'imagenet' is not one of"):
        validate_config(config)
    config = default_config()
    del config["train"]["max_iters"]
    with pytest.raises(ConfigError, match=r"train: 'max_iters' is a required property"):
        validate_config(config)


def test_snakemake_refuses_bad_config_with_one_line(tmp_path):
    config = default_config()
    config["pruning"]["methods"]["weight"]["ratios"] = [10, 150]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(tmp_path, "-n", timeout=120)
    assert run.returncode != 0
    lines = [
        line for line in (run.stdout + run.stderr).splitlines() if "Invalid configuration" in line
    ]
    assert lines == [
        "Invalid configuration: config: pruning.methods.weight.ratios[1]: 150 is greater than "
        "the maximum of 99"
    ]


def test_provenance_names_versions_commit_and_device():
    from detrprune.jobs import provenance

    record = provenance({"evaluate": {"threads": 2}}, device="cpu (test, 2 threads)", threads=2)
    assert record["settings"] == {"evaluate": {"threads": 2}}
    assert record["packages"]["torch"].startswith("2.13.0")
    assert record["packages"]["mmdet"] == "3.3.0" and record["packages"]["mmcv"] == "2.1.0"
    assert record["device"] == "cpu (test, 2 threads)" and record["threads"] == 2
    commit = record["git_commit"]
    assert commit is None or len(commit.removesuffix("-dirty")) == 40


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"frozen_stages": 1},
            "config: model.frozen_stages: 1 freezes layers that would keep their random "
            "initialisation: give model.init.backbone or model.init.detector, or set it to -1",
        ),
        (
            {"frozen_stages": 0},  # mmdet's ResNet freezes the stem from 0 on
            "config: model.frozen_stages: 0 freezes layers",
        ),
        ({"norm_eval": True}, "config: model.norm_eval: true keeps BatchNorm's initial statistics"),
        (
            {"init": {"backbone": "no/such/r18.pth", "detector": None, "sha256": {}}},
            "config: model.init.backbone: no/such/r18.pth: no such file",
        ),
        (
            {"init": {"backbone": None, "detector": None, "sha256": {"detector": "abc"}}},
            "config: model.init.sha256.detector: 'abc' does not match",
        ),
    ],
)
def test_frozen_layers_need_a_pretrained_start_that_exists(change, message):
    config = default_config()
    config["model"].update(change)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_frozen_layers_with_a_pretrained_start_are_valid(tmp_path):
    config = default_config()
    checkpoint = tmp_path / "resnet18.pth"
    checkpoint.write_bytes(b"")
    config["model"].update(frozen_stages=1, norm_eval=True)
    config["model"]["init"]["backbone"] = str(checkpoint)
    validate_config(config)


def test_the_schema_offers_the_scopes_and_parts_the_code_knows():
    """The schema documents the choices for users; detrprune.constants is where they live."""
    from detrprune.config import load_schema
    from detrprune.constants import (
        FILTER_SCOPES,
        SPARSITY_PARTS,
        WEIGHT_LAYER_KINDS,
        WEIGHT_SCOPES,
    )

    method = load_schema()["properties"]["pruning"]["properties"]["methods"]
    properties = method["additionalProperties"]["properties"]
    assert properties["scope"]["enum"] == [*FILTER_SCOPES, *WEIGHT_SCOPES]
    assert properties["modules"]["items"]["enum"] == list(SPARSITY_PARTS)
    assert properties["layers"]["items"]["enum"] == list(WEIGHT_LAYER_KINDS)
    # Criteria live in their registry (detrprune.prune.criteria), not in a list here: the
    # schema only describes the built-in ones, and the config check asks the registry.
    assert "enum" not in properties["criterion"]
    description = properties["criterion"]["description"]
    assert all(f" {name} (" in description for name in criteria()), description


def _set(path: str, value: object):
    """A change to the micro config: ``value`` at the dotted key ``path``."""

    def change(config: dict) -> None:
        *parents, key = path.split(".")
        for parent in parents:
            config = config[parent]
        config[key] = value

    return change


def _iterate_2to4(config: dict) -> None:
    config["pruning"]["methods"]["w2to4"] = {"kind": "weight", "scope": "2:4", "ratios": [50]}
    config["pruning"]["iterative"]["method"] = "w2to4"


# Values the check once let through to fail inside a job (or silently), each with the start of
# the one line that now names the key.
LATE_FAILURES = [
    # JSON Schema's "integer" is any whole number: 2024.0 reached the jobs.
    pytest.param(
        _set("seed", 2024.0), "config: seed: 2024.0 is not an integer: write 2024", id="seed-float"
    ),
    pytest.param(
        _set("evaluate.latency.runs", 30.0),
        "config: evaluate.latency.runs: 30.0 is not an integer: write 30",
        id="runs-float",
    ),
    pytest.param(
        _set("dataset.synthetic.num_scenes", 12.0),
        "config: dataset.synthetic.num_scenes: 12.0 is not an integer: write 12",
        id="num-scenes-float",
    ),
    pytest.param(
        _set("pruning.methods.filter.ratios", [20, 50.0]),
        "config: pruning.methods.filter.ratios[1]: 50.0 is not an integer: write 50",
        id="ratio-float",
    ),
    pytest.param(
        _set("model.input_scale", [256.0, 96]),
        "config: model.input_scale[0]: 256.0 is not an integer: write 256",
        id="input-scale-float",
    ),
    # Booleans are ints to Python, and NaN passes every minimum and maximum.
    pytest.param(_set("seed", True), "config: seed: True is not of type 'integer'", id="seed-bool"),
    pytest.param(
        _set("model.dropout", False),
        "config: model.dropout: False is not of type 'number'",
        id="dropout-bool",
    ),
    pytest.param(
        _set("model.dropout", float("nan")),
        "config: model.dropout: nan is not a finite number",
        id="dropout-nan",
    ),
    pytest.param(
        _set("train.lr", float("inf")), "config: train.lr: inf is not a finite number", id="lr-inf"
    ),
    # mmengine seeds numpy's legacy generator, which takes 32 bits.
    pytest.param(
        _set("seed", 2**32),
        "config: seed: 4294967296 is greater than the maximum of 4294967295",
        id="seed-33-bits",
    ),
    pytest.param(
        _set("pruning.finetune.replicate_seeds", [2**32]),
        "config: pruning.finetune.replicate_seeds[0]: 4294967296 is greater than the maximum",
        id="replicate-seed-33-bits",
    ),
    # No target: with ONNX export on, max() of nothing while loading; off, the method vanished.
    pytest.param(
        _set("pruning.methods.filter.ratios", []),
        "config: pruning.methods.filter.ratios: [] should be non-empty",
        id="ratios-empty",
    ),
    # The synthetic generator's smallest frame is 320x100.
    pytest.param(
        _set("dataset.synthetic.width", 319),
        "config: dataset.synthetic.width: 319 is less than the minimum of 320",
        id="width-below-generator",
    ),
    pytest.param(
        _set("dataset.synthetic.height", 64),
        "config: dataset.synthetic.height: 64 is less than the minimum of 100",
        id="height-below-generator",
    ),
    pytest.param(
        lambda config: config["dataset"].pop("synthetic"),
        "config: dataset: 'synthetic' is a required property when dataset.source is synthetic",
        id="synthetic-missing",
    ),
    # Sizes mmcv and mmdet cannot build (the micro model has embed_dims 32).
    pytest.param(
        _set("model.num_heads", 5),
        "config: model.num_heads: 5 does not divide model.embed_dims (32)",
        id="heads-not-dividing",
    ),
    pytest.param(
        _set("model.neck_gn_groups", 12),
        "config: model.neck_gn_groups: 12 does not divide model.embed_dims (32)",
        id="gn-groups-not-dividing",
    ),
    pytest.param(
        lambda config: config["model"].update(embed_dims=33, num_heads=3),
        "config: model.embed_dims: 33 is not a multiple of 4",
        id="embed-dims-odd",
    ),
    pytest.param(
        lambda config: config["model"].update(embed_dims=34, num_heads=2, neck_gn_groups=2),
        "config: model.embed_dims: 34 is not a multiple of 4",
        id="embed-dims-not-multiple-of-4",
    ),
    pytest.param(
        _set("model.max_per_img", 31),
        "config: model.max_per_img: 31 is more detections than model.num_queries x 3 classes "
        "(30) can give",
        id="max-per-img-over-scores",
    ),
    # The iterative loop steps the sparsity up; an N:M pattern has one sparsity.
    pytest.param(
        _iterate_2to4,
        "config: pruning.iterative.method: 'w2to4' has the N:M scope 2:4, whose sparsity is fixed",
        id="iterative-n-m",
    ),
]


@pytest.mark.parametrize(("change", "message"), LATE_FAILURES)
def test_values_that_failed_late_stop_at_start_up(change, message):
    config = micro_config()
    change(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            _set("pruning.methods.filter.ratios", []),
            "Invalid configuration: config: pruning.methods.filter.ratios: [] should be non-empty",
        ),
        (
            _set("evaluate.latency.runs", 30.0),
            "Invalid configuration: config: evaluate.latency.runs: 30.0 is not an integer: "
            "write 30",
        ),
    ],
    ids=["empty-ratios", "float-runs"],
)
def test_snakemake_stops_late_failures_before_any_job(tmp_path, change, line):
    """Through Snakemake's own YAML loading: ``30.0`` stays a float, ``[]`` a list."""
    config = micro_config()
    change(config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(tmp_path, "-n", timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert [text for text in output.splitlines() if "Invalid configuration" in text] == [line]
    assert "max() arg" not in output


def test_synthetic_minimum_size_is_the_generators(tmp_path):
    """The schema's smallest synthetic frame is the smallest the generator draws."""
    from detrprune.config import load_schema
    from detrprune.data.synthetic import SynthesisError, synthesize_kitti

    sizes = load_schema()["properties"]["dataset"]["properties"]["synthetic"]["properties"]
    width, height = sizes["width"]["minimum"], sizes["height"]["minimum"]
    for too_small in ((width - 1, height), (width, height - 1)):
        with pytest.raises(SynthesisError):
            synthesize_kitti(
                tmp_path, num_scenes=1, seed=0, width=too_small[0], height=too_small[1]
            )
    images, labels = synthesize_kitti(tmp_path, num_scenes=1, seed=0, width=width, height=height)
    assert images.stat().st_size > 0 and labels.stat().st_size > 0


# --- Layers: config.yaml, --configfile files, --config ----------------------------------------


def _layers(*changes: dict) -> list[tuple[str, dict]]:
    """config.yaml, then each of ``changes`` as a config file ``layer<i>.yaml``."""
    return [("config.yaml", default_config())] + [
        (f"layer{index}.yaml", change) for index, change in enumerate(changes, start=1)
    ]


def test_layers_merge_key_by_key_as_snakemake_merges_them():
    from snakemake.utils import update_config

    changes = [
        {"train": {"max_iters": 7}, "pruning": {"methods": {"filter": {"ratios": [20]}}}},
        {"model": {"input_scale": [256, 96]}, "evaluate": {"latency": {"runs": 40}}},
    ]
    expected = default_config()
    for change in changes:
        update_config(expected, change)
    assert resolve_layers(_layers(*changes)).config == expected


def test_a_file_that_replaces_the_methods_gives_the_whole_set():
    own = {"mine": {"kind": "weight", "scope": "global", "ratios": [40]}}
    tweak = {"pruning": {"methods": {"mine": {"ratios": [60]}}}}
    resolved = resolve_layers(
        _layers({"pruning": {"replace_methods": True, "methods": own}}, tweak)
    ).config
    # Later layers (and --config) merge into the replaced set as usual.
    assert resolved["pruning"]["methods"] == {
        "mine": {"kind": "weight", "scope": "global", "ratios": [60]}
    }
    # Everything else of config.yaml's pruning section stays.
    assert resolved["pruning"]["finetune"] == default_config()["pruning"]["finetune"]
    # Without the flag a file's methods merge into config.yaml's.
    merged = resolve_layers(_layers({"pruning": {"methods": own}})).config["pruning"]["methods"]
    assert set(merged) == {*default_config()["pruning"]["methods"], "mine"}


def test_replace_methods_without_methods_is_refused():
    with pytest.raises(ConfigError, match=r"^layer1.yaml: pruning.replace_methods: true"):
        resolve_layers(_layers({"pruning": {"replace_methods": True}}))


KITTI_STANDARD = {"dataset": {"source": "kitti"}}


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        (
            [KITTI_STANDARD, {"dataset": {"val_fraction": 0.3}}],
            "layer2.yaml: dataset.val_fraction: 0.3 has no effect with kitti.split standard",
        ),
        # In the same file as the source and split it is ignored under.
        (
            [{"dataset": {"source": "kitti", "val_fraction": 0.5}}],
            "layer1.yaml: dataset.val_fraction: 0.5 has no effect with kitti.split standard",
        ),
        (
            [{"kitti": {"split": "random"}}],
            "layer1.yaml: kitti.split: 'random' has no effect with dataset.source synthetic",
        ),
        (
            [KITTI_STANDARD, {"dataset": {"synthetic": {"num_scenes": 20}}}],
            "layer2.yaml: dataset.synthetic.num_scenes: 20 has no effect with dataset.source kitti",
        ),
        # Used: the random split's fraction, config.yaml's own values restated, a KITTI key
        # under the KITTI source.
        ([KITTI_STANDARD, {"kitti": {"split": "random"}, "dataset": {"val_fraction": 0.3}}], None),
        ([KITTI_STANDARD, default_config()], None),
        ([{"dataset": {"val_fraction": 0.3}}], None),
        ([KITTI_STANDARD, {"kitti": {"retries": 5}}], None),
    ],
    ids=[
        "val_fraction-standard",
        "val_fraction-same-file",
        "split-synthetic",
        "synthetic-kitti",
        "val_fraction-random",
        "unchanged-copy",
        "val_fraction-synthetic",
        "kitti-key-kitti",
    ],
)
def test_a_layer_that_changes_an_ignored_key_is_refused(changes, refused):
    resolved = resolve_layers(_layers(*changes))
    if refused is None:
        check_ignored_keys(resolved)
        return
    with pytest.raises(ConfigError) as info:
        check_ignored_keys(resolved)
    assert str(info.value).startswith(refused) and "\n" not in str(info.value)


def test_the_standard_split_carries_no_val_fraction_or_seed():
    config = default_config()
    assert data_split(config) == {
        "split": "random",
        "val_fraction": config["dataset"]["val_fraction"],
        "seed": config["seed"],
    }
    config["dataset"]["source"] = "kitti"
    assert data_split(config) == {"split": "standard", "val_fraction": None, "seed": None}


def test_a_val_fraction_the_standard_split_ignores_reruns_nothing(tmp_path):
    """config.yaml's val_fraction is a parameter of kitti_to_coco only when the split is
    random: under the standard split a change of it (or of the seed) converts nothing again."""
    from .test_kitti_source import kitti_archives

    archives = tmp_path / "archives"
    archives.mkdir()
    for name, content in kitti_archives().items():
        (archives / name.lstrip("/")).write_bytes(content)
    config = micro_config()
    config["dataset"]["source"] = "kitti"
    config["kitti"]["archives_dir"] = str(archives)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ("data/coco/train.json", "data/coco/val.json")
    run = run_snakemake(tmp_path, *targets, "--cores", "1", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    config["dataset"]["val_fraction"] = 0.5
    config["seed"] = 7
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(tmp_path, *targets, "-n", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {}
    # Under the random split it is what the split is drawn with.
    config["kitti"]["split"] = "random"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_snakemake(tmp_path, *targets, "-n", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {"kitti_to_coco": 1}
