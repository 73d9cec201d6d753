# Baseline Deformable DETR, trained by mmengine's Runner.


if INIT_DOWNLOADS:

    # The submitting host has the network that compute nodes often lack.
    localrules:
        download_weights,

    # A pretrained start given by URL in model.init, fetched once and verified.
    rule download_weights:
        output:
            f"{CHECKPOINT_DIR}/{{weights}}",
        log:
            "logs/download_weights/{weights}.log",
        wildcard_constraints:
            weights="|".join(re.escape(name) for name in INIT_DOWNLOADS),
        conda:
            CONDA_ENV
        params:
            # Not the pinned sha256: pinning it after the download changes no weights (the
            # training checks the pin again when it reads the file).
            url=lambda wildcards: INIT_DOWNLOADS[wildcards.weights],
        script:
            "../scripts/download_weights.py"


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
        model=MODEL,
        train=TRAIN,
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        # The Runner's own checkpoints: not an output, so a failed job does not delete them.
        work_dir="work/train_baseline",
    script:
        "../scripts/train_baseline.py"


# A scratch twin: a filter target's pruned architecture, freshly initialised as the baseline was
# and trained with the baseline's recipe (detrprune.train.scratch), as long as the baseline and
# its fine-tune together (budget e) or for the same compute (budget b).
rule train_scratch:
    input:
        # Budget b: the GMACs of the baseline and of the pruned model.
        unpack(scratch_inputs),
        # Only its shapes are used.
        pruned="results/prune/{method}/r{ratio}/model.pth",
        train=COCO_JSON["train"],
        val=COCO_JSON["val"],
        images=KITTI_TRAINING,
    output:
        "results/{scratch}/{method}/r{ratio}/model.pth",
    log:
        "logs/{scratch}/{method}/r{ratio}.log",
    benchmark:
        "benchmarks/{scratch}/{method}/r{ratio}.tsv"
    wildcard_constraints:
        scratch="|".join(SCRATCH_FOLDERS.values()),
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        # As long as the baseline's training: its memory and time.
        mem_mb=config["resources"]["train_baseline"]["mem_mb"],
        runtime=config["resources"]["train_baseline"]["runtime"],
        gpu=config["train"]["gpus"],
    params:
        model=MODEL,
        train=TRAIN,
        budget=lambda wildcards: {f: b for b, f in SCRATCH_FOLDERS.items()}[
            wildcards.scratch
        ],
        finetune_iters=FINETUNE["iters"],
        seed=config["seed"],
        data_root=lambda wildcards, input: kitti_root(input.images),
        work_dir=lambda wildcards: f"work/{wildcards.scratch}/{wildcards.method}/r{wildcards.ratio}",
        variant=lambda wildcards: f"{wildcards.scratch}/{wildcards.method}/r{wildcards.ratio}",
    script:
        "../scripts/train_scratch.py"
