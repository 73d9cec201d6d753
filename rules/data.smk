# Raw archives (synthesized or downloaded) -> extracted KITTI layout -> COCO JSON.


# Data preparation is light and reads/writes shared files: it runs on the submitting host.
localrules:
    extract_kitti,
    kitti_to_coco,


if config["dataset"]["source"] == "synthetic":

    localrules:
        synthesize_kitti,

    rule synthesize_kitti:
        output:
            images=RAW_ARCHIVES["images"],
            labels=RAW_ARCHIVES["labels"],
        log:
            "logs/synthesize_kitti.log",
        benchmark:
            "benchmarks/synthesize_kitti.tsv"
        conda:
            CONDA_ENV
        params:
            synthetic=config["dataset"]["synthetic"],
            seed=config["seed"],
        script:
            "../scripts/synthesize_kitti.py"

elif not USER_ARCHIVES:

    localrules:
        download_kitti,

    rule download_kitti:
        output:
            "data/raw/kitti/data_object_{part}_2.zip",
        log:
            "logs/download_kitti/{part}.log",
        wildcard_constraints:
            part="image|label",
        conda:
            CONDA_ENV
        params:
            url=lambda wildcards: config["kitti"]["urls"][f"{wildcards.part}s"],
            sha256=lambda wildcards: config["kitti"]["sha256"][f"{wildcards.part}s"],
        script:
            "../scripts/download_kitti.py"


rule extract_kitti:
    input:
        images=RAW_ARCHIVES["images"],
        labels=RAW_ARCHIVES["labels"],
    output:
        directory(KITTI_TRAINING),
    log:
        "logs/extract_kitti.log",
    benchmark:
        "benchmarks/extract_kitti.tsv"
    conda:
        CONDA_ENV
    params:
        root=lambda wildcards, output: kitti_root(output[0]),
    script:
        "../scripts/extract_kitti.py"


rule kitti_to_coco:
    input:
        KITTI_TRAINING,
    output:
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
    log:
        "logs/kitti_to_coco.log",
    benchmark:
        "benchmarks/kitti_to_coco.tsv"
    conda:
        CONDA_ENV
    params:
        root=lambda wildcards, input: kitti_root(input[0]),
        split=data_split(config)["split"],
        # The random split's share and seed; None under the standard split, whose frame lists
        # decide it, so that a change of them reruns nothing there.
        val_fraction=data_split(config)["val_fraction"],
        seed=data_split(config)["seed"],
    script:
        "../scripts/kitti_to_coco.py"
