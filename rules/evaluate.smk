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
    # Inference and the bootstrap use this many threads.
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
        runtime=config["resources"]["evaluate"]["runtime"],
        # COCO inference uses CUDA where there is one: profiles/local-gpu caps the GPUs in use,
        # and profiles/slurm sends it to the GPU partition.
        gpu=1,
    params:
        # Only what this rule uses: a change of evaluate.onnx or evaluate.latency reruns no
        # evaluation (latency is the time_models rule's).
        evaluate={
            key: config["evaluate"][key]
            for key in ("threads", "flops_images", "bootstrap")
        },
        # Times a 2:4-pruned model's dense vs sparse GPU kernels; no other variant uses it.
        latency=lambda wildcards: (
            GPU_LATENCY if uses_2to4(wildcards.variant) else None
        ),
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # Draws the bootstrap resamples: every variant gets the same ones.
        seed=config["seed"],
    script:
        "../scripts/evaluate.py"


# Latency of every evaluated model, timed in one process, round-robin: drift on a shared
# machine hits every model alike, and the rounds pair each model with the baseline for the
# speedup's interval. A new model retimes them all.
rule time_models:
    input:
        # In the order of params.models.
        models=[f"results/{variant}/model.pth" for variant in evaluated_variants()],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        latency="results/eval/latency.json",
    log:
        "logs/time_models.log",
    benchmark:
        "benchmarks/time_models.tsv"
    conda:
        CONDA_ENV
    # The timing reserves its threads so that no other job shares them.
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=config["resources"]["time_models"]["mem_mb"],
        runtime=config["resources"]["time_models"]["runtime"],
        # Where CUDA is available the models are timed on the GPU too.
        gpu=1,
    params:
        # The variant of each input model, in order.
        models=evaluated_variants(),
        threads=config["evaluate"]["threads"],
        latency=LATENCY,
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # Draws the intervals' bootstrap resamples.
        seed=config["seed"],
    script:
        "../scripts/time_models.py"


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
            "threads": config["evaluate"]["threads"],
            "latency": CPU_LATENCY,
            "onnx": config["evaluate"]["onnx"],
        },
        input_scale=config["model"]["input_scale"],
        data_root=lambda wildcards, input: kitti_root(input.images),
    script:
        "../scripts/export_onnx.py"
