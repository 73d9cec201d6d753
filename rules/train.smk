# Baseline Deformable DETR, trained by mmengine's Runner.


rule train_baseline:
    input:
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
        init=INIT_FILES,
    output:
        model=BASELINE_MODEL,
        config="results/baseline/config.py",
        # The Runner's validations during training: the curve convergence is judged from.
        validations=BASELINE_VALIDATIONS,
    log:
        "logs/train_baseline.log",
    benchmark:
        "benchmarks/train_baseline.tsv"
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["resources"]["train_baseline"]["mem_mb"],
        runtime=config["resources"]["train_baseline"]["runtime"],
        # Uses CUDA where there is one, data-parallel on train.gpus: profiles/local-gpu caps the
        # GPUs in use, and profiles/slurm sends them to the GPU partition.
        gpu=config["train"]["gpus"],
    params:
        model=config["model"],
        train=TRAIN,
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # The Runner's own checkpoints: not an output, so a failed job does not delete them.
        work_dir="work/train_baseline",
    script:
        "../scripts/train_baseline.py"
