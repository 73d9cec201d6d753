# Target lists and path conventions. Ratios are integer percents in paths (r30), never floats.
# A variant is a model's folder under results/: baseline, prune/<method>/r<ratio>,
# finetune/<method>/r<ratio>, scratch/<method>/r<ratio> (scratch_b/...) or iterative; its metrics
# are results/eval/<variant>/metrics.json.
# A seed replicate of a fine-tuned variant is results/replicate/s<seed>/<variant>.

import re
from pathlib import Path

from detrprune.constants import (
    DEFAULT_GRADIENT_IMAGES,
    DEFAULT_ROUND_TO,
    ITERATIVE_FINETUNE_KEYS,
    nm_pattern,
)
from detrprune.prune.criteria import criteria
from detrprune.train.pretrained_files import (
    CHECKPOINT_DIR,
    downloads,
    init_files,
    init_params,
)
from detrprune.variants import SCRATCH_FOLDERS, scratch_variant

# Every rule runs in this environment under --sdm conda (same pins as requirements.txt).
CONDA_ENV = "../envs/detrprune.yaml"

PRUNING_METHODS = {
    name: [int(r) for r in spec["ratios"]]
    for name, spec in config["pruning"]["methods"].items()
}
FINETUNE = config["pruning"]["finetune"]
# What decides a fine-tuned result: replicate_seeds only adds targets, so a change of it reruns
# none of the existing ones.
FINETUNE_RECIPE = {
    key: value for key, value in FINETUNE.items() if key != "replicate_seeds"
}
REPLICATE_SEEDS = FINETUNE.get("replicate_seeds", []) if FINETUNE["enabled"] else []
# What decides a training result: the training rules' params (run-only values such as
# log_interval rerun nothing; the scripts read them from the config).
TRAIN = train_result_settings(config["train"])
ITERATIVE = config["pruning"]["iterative"]
# What the iterative loop and its control use, and no more: a change of the fine-tune's iters
# (or of whether it runs) reruns neither.
ITERATIVE_LOOP = {key: value for key, value in ITERATIVE.items() if key != "enabled"}
ITERATIVE_FINETUNE = {key: FINETUNE[key] for key in ITERATIVE_FINETUNE_KEYS}
# The filter targets whose pruned architecture is also trained from scratch, and the budgets.
SCRATCH_TARGETS, SCRATCH_BUDGETS = scratch_settings(config["pruning"])

# The official archive names; `kitti.archives_dir` points at a folder that already holds them.
ARCHIVE_NAMES = {
    "images": "data_object_image_2.zip",
    "labels": "data_object_label_2.zip",
}
USER_ARCHIVES = (
    config["dataset"]["source"] == "kitti"
    and config["kitti"]["archives_dir"] is not None
)
RAW_DIR = config["kitti"]["archives_dir"] if USER_ARCHIVES else "data/raw/kitti"
RAW_ARCHIVES = {key: f"{RAW_DIR}/{name}" for key, name in ARCHIVE_NAMES.items()}
KITTI_ROOT = "data/kitti"
KITTI_TRAINING = f"{KITTI_ROOT}/training"
COCO_JSON = {"train": "data/coco/train.json", "val": "data/coco/val.json"}
BASELINE_MODEL = "results/baseline/model.pth"
BASELINE_VALIDATIONS = "results/baseline/validations.csv"
# The pretrained starts of model.init: inputs of train_baseline, so a changed file retrains. A
# URL's file is its local copy under checkpoints/, made by download_weights.
INIT_FILES = [str(path) for path in init_files(config["model"]["init"])]
INIT_DOWNLOADS = downloads(config["model"]["init"])
# The model as the training rules' params carry it: model.init by local file, without pins.
MODEL = {**config["model"], "init": init_params(config["model"]["init"])}
ITERATIVE_STEPS = "results/iterative/steps.csv"
# evaluate.latency as the timing rules' params: time_models uses both schedules (a null cpu
# one is left out, so a config without it keeps its params), the ONNX timing only the CPU's,
# a 2:4 model's kernel timing only the GPU's.
LATENCY = latency_params(config["evaluate"]["latency"])
CPU_LATENCY = cpu_latency(config["evaluate"]["latency"])
GPU_LATENCY = gpu_latency(config["evaluate"]["latency"])


wildcard_constraints:
    method=r"[a-z][a-z0-9_]*",
    ratio=r"[1-9][0-9]?",
    variant=r"baseline|iterative|finetune/baseline|control/iterative|(prune|finetune|scratch|scratch_b)/[a-z][a-z0-9_]*/r[1-9][0-9]?",
    seed=r"0|[1-9][0-9]*",


def kitti_root(training_dir):
    """data/kitti/training -> data/kitti: the folder mmdet's data_root and the tools expect."""
    return str(Path(training_dir).parent)


def spec_of(method):
    """A named method as pruning needs it: every key but its ratios (kind, scope and the options
    it sets). Keys a method leaves out stay out, so adding an option reruns none of the methods
    that do not use it, and an option the schema accepts always reaches the pruner."""
    spec = {
        key: value
        for key, value in config["pruning"]["methods"][method].items()
        if key != "ratios"
    }
    if spec["kind"] == "filter":
        # The rounding in effect, default included: a change of the default reruns the targets.
        spec["round_to"] = spec.get("round_to", DEFAULT_ROUND_TO)
        if needs_gradients(method):
            # Likewise the training images a gradient criterion sums over.
            spec["gradient_images"] = spec.get(
                "gradient_images", DEFAULT_GRADIENT_IMAGES
            )
    return spec


def needs_gradients(method):
    """Whether a named method's criterion ranks by the training loss's gradients (taylor)."""
    spec = config["pruning"]["methods"][method]
    return (
        spec["kind"] == "filter" and criteria()[spec.get("criterion", "l1")].gradients
    )


def gradient_data(wildcards):
    """The training split a gradient criterion's prune job reads (nothing for the others)."""
    if needs_gradients(wildcards.method):
        return {"train": COCO_JSON["train"], "images": KITTI_TRAINING}
    return {}


def uses_2to4(variant):
    """Whether a variant (prune/<method>/r<ratio>, finetune/...) is a 2:4 weight method's, whose
    evaluation times the dense vs sparse GPU kernels."""
    parts = variant.split("/")
    if len(parts) != 3 or parts[1] not in PRUNING_METHODS:
        return False
    spec = spec_of(parts[1])
    return spec["kind"] == "weight" and nm_pattern(spec["scope"]) == (2, 4)


def method_spec(wildcards):
    return spec_of(wildcards.method)


def pruned_variants():
    """Every pruned model the config asks for, zero-shot and (when enabled) fine-tuned."""
    stages = ["prune", "finetune"] if FINETUNE["enabled"] else ["prune"]
    variants = [
        f"{stage}/{m}/r{r}"
        for stage in stages
        for m, ratios in PRUNING_METHODS.items()
        for r in ratios
    ]
    return variants + (["iterative"] if ITERATIVE["enabled"] else [])


def scratch_variants():
    """The scratch twins the config asks for: scratch/<method>/r<ratio> per budget."""
    return [
        scratch_variant(budget, method, ratio)
        for budget in SCRATCH_BUDGETS
        for method, ratios in SCRATCH_TARGETS.items()
        for ratio in ratios
    ]


def scratch_inputs(wildcards):
    """What a scratch twin's iterations depend on beyond its shapes: for budget b, the GMACs
    of the baseline and of the pruned model (their evaluations)."""
    if wildcards.scratch != SCRATCH_FOLDERS["b"]:
        return {}
    return {
        "baseline_metrics": "results/eval/baseline/metrics.json",
        "pruned_metrics": f"results/eval/prune/{wildcards.method}/r{wildcards.ratio}/metrics.json",
    }


def control_variants():
    """The baseline's fine-tuned twins the fine-tuned models are compared with."""
    return [FINETUNED_BASELINE] * FINETUNE["enabled"] + [ITERATIVE_CONTROL] * ITERATIVE[
        "enabled"
    ]


def evaluated_variants():
    """Every model evaluated and timed: the baseline, the controls and the pruned models."""
    return ["baseline", *control_variants(), *pruned_variants(), *scratch_variants()]


def all_metrics():
    return [f"results/eval/{v}/metrics.json" for v in evaluated_variants()]


def replicate_metrics():
    """The seed replicates' accuracy: every fine-tuned target and its control, per extra seed."""
    tuned = [FINETUNED_BASELINE] + [
        f"finetune/{m}/r{r}" for m, ratios in PRUNING_METHODS.items() for r in ratios
    ]
    return [
        f"results/eval/{replicate_of(variant, seed)}/metrics.json"
        for seed in REPLICATE_SEEDS
        for variant in tuned
    ]


def all_resamples():
    """Every evaluated model's per-resample metrics, which pair it with its control."""
    return [path.replace("metrics.json", "resamples.npz") for path in all_metrics()]


def final_variants():
    """The last model of each method (highest ratio, fine-tuned when enabled) and the loop's."""
    stage = "finetune" if FINETUNE["enabled"] else "prune"
    finals = [f"{stage}/{m}/r{max(ratios)}" for m, ratios in PRUNING_METHODS.items()]
    return finals + (["iterative"] if ITERATIVE["enabled"] else [])


def all_onnx():
    """ONNX parity/latency records of the final models (none when evaluate.onnx is off)."""
    if not config["evaluate"]["onnx"]["enabled"]:
        return []
    return [f"results/onnx/{v}/onnx.json" for v in final_variants()]


def captioned_plot(name, category, subcategory):
    """A plot output flagged for `snakemake --report`, captioned by report/<name>.rst."""
    return report(
        f"results/plots/{name}.png",
        caption=f"../report/{name}.rst",
        category=category,
        subcategory=subcategory,
    )
