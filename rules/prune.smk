# One pruned, reloadable checkpoint per named method and ratio; a fine-tuned twin of each when
# pruning.finetune.enabled (and one per pruning.finetune.replicate_seeds); the iterative
# prune/fine-tune loop when pruning.iterative.enabled.


rule prune:
    input:
        # Training images, for a criterion that ranks by the loss's gradients (taylor).
        unpack(gradient_data),
        model=BASELINE_MODEL,
    output:
        "results/prune/{method}/r{ratio}/model.pth",
    log:
        "logs/prune/{method}/r{ratio}.log",
    benchmark:
        "benchmarks/prune/{method}/r{ratio}.tsv"
    conda:
        CONDA_ENV
    resources:
        mem_mb=config["resources"]["prune"]["mem_mb"],
        runtime=config["resources"]["prune"]["runtime"],
    params:
        spec=method_spec,
        input_scale=config["model"]["input_scale"],
        # Draws the channels of a random-criterion method.
        seed=config["seed"],
    script:
        "../scripts/prune.py"


rule finetune:
    input:
        model="results/prune/{method}/r{ratio}/model.pth",
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        "results/finetune/{method}/r{ratio}/model.pth",
    log:
        "logs/finetune/{method}/r{ratio}.log",
    benchmark:
        "benchmarks/finetune/{method}/r{ratio}.tsv"
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["resources"]["finetune"]["mem_mb"],
        runtime=config["resources"]["finetune"]["runtime"],
        # Uses CUDA where there is one, data-parallel on train.gpus: profiles/local-gpu caps the
        # GPUs in use, and profiles/slurm sends them to the GPU partition.
        gpu=config["train"]["gpus"],
    params:
        model=MODEL,
        train=TRAIN,
        finetune=FINETUNE_RECIPE,
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # The Runner's own checkpoints: not an output, so a failed job does not delete them.
        work_dir=lambda wildcards: f"work/finetune/{wildcards.method}/r{wildcards.ratio}",
        variant=lambda wildcards: f"finetune/{wildcards.method}/r{wildcards.ratio}",
    script:
        "../scripts/finetune.py"


# The control of every fine-tuned model: the baseline fine-tuned on the same schedule.
use rule finetune as finetune_baseline with:
    input:
        model=BASELINE_MODEL,
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        f"results/{FINETUNED_BASELINE}/model.pth",
    log:
        f"logs/{FINETUNED_BASELINE}.log",
    benchmark:
        "benchmarks/finetune_baseline.tsv"
    params:
        model=MODEL,
        train=TRAIN,
        finetune=FINETUNE_RECIPE,
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir=f"work/{FINETUNED_BASELINE}",
        variant=FINETUNED_BASELINE,


# Seed replicates: every fine-tuned target and its control, fine-tuned again with another
# training seed (data order, dropout), so the summary can say how much the comparison moves
# between training runs.
use rule finetune as finetune_replicate with:
    output:
        "results/replicate/s{seed}/finetune/{method}/r{ratio}/model.pth",
    log:
        "logs/replicate/s{seed}/finetune/{method}/r{ratio}.log",
    benchmark:
        "benchmarks/finetune_replicate/s{seed}/{method}/r{ratio}.tsv"
    params:
        model=MODEL,
        train=TRAIN,
        finetune=FINETUNE_RECIPE,
        seed=lambda wildcards: int(wildcards.seed),
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir=lambda wildcards: (
            f"work/replicate/s{wildcards.seed}/finetune/{wildcards.method}/r{wildcards.ratio}"
        ),
        variant=lambda wildcards: replicate_of(
            f"finetune/{wildcards.method}/r{wildcards.ratio}", int(wildcards.seed)
        ),


use rule finetune_baseline as finetune_baseline_replicate with:
    output:
        f"results/replicate/s{{seed}}/{FINETUNED_BASELINE}/model.pth",
    log:
        f"logs/replicate/s{{seed}}/{FINETUNED_BASELINE}.log",
    benchmark:
        "benchmarks/finetune_baseline_replicate/s{seed}.tsv"
    params:
        model=MODEL,
        train=TRAIN,
        finetune=FINETUNE_RECIPE,
        seed=lambda wildcards: int(wildcards.seed),
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir=lambda wildcards: f"work/replicate/s{wildcards.seed}/{FINETUNED_BASELINE}",
        variant=lambda wildcards: replicate_of(FINETUNED_BASELINE, int(wildcards.seed)),


rule iterative:
    input:
        baseline=BASELINE_MODEL,
        # Early stopping compares each step's validation with the baseline's last one, which
        # changes only with the baseline (its metrics.json also changes with latency settings).
        baseline_validations=BASELINE_VALIDATIONS,
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        model="results/iterative/model.pth",
        steps=report(
            ITERATIVE_STEPS,
            caption="../report/steps.rst",
            category="3 Iterative loop",
            subcategory="steps",
        ),
    log:
        "logs/iterative.log",
    benchmark:
        "benchmarks/iterative.tsv"
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["resources"]["iterative"]["mem_mb"],
        runtime=config["resources"]["iterative"]["runtime"],
        # Uses CUDA where there is one, data-parallel on train.gpus: profiles/local-gpu caps the
        # GPUs in use, and profiles/slurm sends them to the GPU partition.
        gpu=config["train"]["gpus"],
    params:
        iterative=ITERATIVE_LOOP,
        spec=spec_of(ITERATIVE["method"]) if ITERATIVE["enabled"] else None,
        model=MODEL,
        train=TRAIN,
        finetune=ITERATIVE_FINETUNE,
        seed=config["seed"],
        flops_images=config["evaluate"]["flops_images"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir="work/iterative",
    script:
        "../scripts/iterative.py"


# The control of the iterative result: the baseline fine-tuned as the loop fine-tuned, up to
# the step it kept.
rule iterative_control:
    input:
        baseline=BASELINE_MODEL,
        steps=ITERATIVE_STEPS,
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        f"results/{ITERATIVE_CONTROL}/model.pth",
    log:
        f"logs/{ITERATIVE_CONTROL}.log",
    benchmark:
        "benchmarks/iterative_control.tsv"
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["resources"]["iterative"]["mem_mb"],
        runtime=config["resources"]["iterative"]["runtime"],
        gpu=config["train"]["gpus"],
    params:
        iterative={"finetune_iters": ITERATIVE["finetune_iters"]},
        model=MODEL,
        train=TRAIN,
        finetune=ITERATIVE_FINETUNE,
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir=f"work/{ITERATIVE_CONTROL}",
    script:
        "../scripts/iterative_control.py"
