# Target lists and path conventions. Ratios are integer percents in paths (r30), never floats.

from pathlib import Path

# Every rule runs in this environment under --sdm conda (same pins as requirements.txt).
CONDA_ENV = "../envs/detrprune.yaml"

PRUNING_METHODS = {
    method: [int(r) for r in config["pruning"][method]["ratios"]]
    for method in ("filter", "weight")
}

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


wildcard_constraints:
    method="filter|weight",
    ratio=r"[1-9][0-9]?",
    variant=r"baseline|(filter|weight)/r[1-9][0-9]?",


def kitti_root(training_dir):
    """data/kitti/training -> data/kitti: the folder mmdet's data_root and the tools expect."""
    return str(Path(training_dir).parent)


def pruned_variants():
    """Every (method, ratio) target the config asks for, as 'method/rNN' path parts."""
    return [f"{m}/r{r}" for m, ratios in PRUNING_METHODS.items() for r in ratios]


def variant_model(wildcards):
    """The checkpoint an evaluation reads: the baseline's or a pruned one's."""
    if wildcards.variant == "baseline":
        return BASELINE_MODEL
    return f"results/prune/{wildcards.variant}/model.pth"


def all_metrics():
    return [f"results/eval/{v}/metrics.json" for v in ["baseline", *pruned_variants()]]
