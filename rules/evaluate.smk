# Accuracy and efficiency of the baseline and of every pruned variant.


rule evaluate:
    input:
        model="results/{variant}/model.pth",
        baseline=BASELINE_MODEL,
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        metrics="results/eval/{variant}/metrics.json",
        # mAP on each bootstrap resample: aggregate pairs it with the control's.
        resamples="results/eval/{variant}/resamples.npz",
    log:
        "logs/evaluate/{variant}.log",
    benchmark:
        "benchmarks/evaluate/{variant}.tsv"
    conda:
        CONDA_ENV
    # Latency is timed with this many threads; the job reserves them so no other job shares them.
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
        runtime=config["resources"]["evaluate"]["runtime"],
        # COCO inference and GPU latency use CUDA where there is one: profiles/local-gpu caps
        # the GPUs in use, and profiles/slurm sends it to the GPU partition.
        gpu=1,
    params:
        # Only what this rule uses: a change of evaluate.onnx reruns no evaluation.
        evaluate={
            key: config["evaluate"][key]
            for key in ("threads", "latency", "flops_images", "bootstrap")
        },
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # Draws the bootstrap resamples: every variant gets the same ones.
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


# A seed replicate differs from the variant it replicates only in its weights' values: its
# accuracy is measured, its latency, FLOPs and size are the variant's.
rule evaluate_replicate:
    input:
        model="results/replicate/s{seed}/{variant}/model.pth",
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        metrics="results/eval/replicate/s{seed}/{variant}/metrics.json",
        resamples="results/eval/replicate/s{seed}/{variant}/resamples.npz",
    log:
        "logs/evaluate/replicate/s{seed}/{variant}.log",
    benchmark:
        "benchmarks/evaluate_replicate/s{seed}/{variant}.tsv"
    conda:
        CONDA_ENV
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
        runtime=config["resources"]["evaluate"]["runtime"],
        gpu=1,
    params:
        evaluate={key: config["evaluate"][key] for key in ("threads", "bootstrap")},
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # The same bootstrap resamples as every other variant.
        seed=config["seed"],
    script:
        "../scripts/evaluate_replicate.py"


rule export_onnx:
    input:
        model="results/{variant}/model.pth",
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        onnx="results/onnx/{variant}/model.onnx",
        metrics="results/onnx/{variant}/onnx.json",
    log:
        "logs/export_onnx/{variant}.log",
    benchmark:
        "benchmarks/export_onnx/{variant}.tsv"
    conda:
        CONDA_ENV
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["export_onnx"]["mem_mb"],
        runtime=config["resources"]["export_onnx"]["runtime"],
    params:
        # Only what this rule uses: a change of evaluate.flops_images reruns no export.
        evaluate={
            key: config["evaluate"][key] for key in ("threads", "latency", "onnx")
        },
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
    script:
        "../scripts/export_onnx.py"
