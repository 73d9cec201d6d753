# One pruned checkpoint per method and ratio.


rule prune:
    input:
        BASELINE_MODEL,
    output:
        "results/prune/{method}/r{ratio}/model.pth",
    log:
        "logs/prune/{method}/r{ratio}.log",
    benchmark:
        "benchmarks/prune/{method}/r{ratio}.tsv"
    conda:
        CONDA_ENV
    params:
        scope=lambda wildcards: config["pruning"][wildcards.method]["scope"],
        input_scale=config["model"]["input_scale"],
    script:
        "../scripts/prune.py"
