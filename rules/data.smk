# Raw archives (synthesized or downloaded) -> extracted KITTI layout -> COCO JSON.

if config["dataset"]["source"] == "synthetic":

    rule synthesize_kitti:
        output:
            images=RAW_ARCHIVES["images"],
            labels=RAW_ARCHIVES["labels"],
        params:
            synthetic=config["dataset"]["synthetic"],
            seed=config["seed"],
        log:
            "logs/synthesize_kitti.log",
        benchmark:
            "benchmarks/synthesize_kitti.tsv"
        script:
            "../scripts/synthesize_kitti.py"

else:

    rule download_kitti:
        output:
            images=RAW_ARCHIVES["images"],
            labels=RAW_ARCHIVES["labels"],
        log:
            "logs/download_kitti.log",
        script:
            "../scripts/download_kitti.py"


rule extract_kitti:
    input:
        images=RAW_ARCHIVES["images"],
        labels=RAW_ARCHIVES["labels"],
    output:
        directory(KITTI_TRAINING),
    params:
        root=KITTI_ROOT,
    log:
        "logs/extract_kitti.log",
    benchmark:
        "benchmarks/extract_kitti.tsv"
    script:
        "../scripts/extract_kitti.py"


rule kitti_to_coco:
    input:
        KITTI_TRAINING,
    output:
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
    params:
        root=KITTI_ROOT,
        val_fraction=config["dataset"]["val_fraction"],
        seed=config["seed"],
    log:
        "logs/kitti_to_coco.log",
    benchmark:
        "benchmarks/kitti_to_coco.tsv"
    script:
        "../scripts/kitti_to_coco.py"
