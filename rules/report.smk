# Summary table, plots and the PDF report.

PLOTS = [
    f"results/plots/{name}.png"
    for name in (
        "map_vs_ratio",
        "gmacs_vs_ratio",
        "latency_vs_ratio",
        "accuracy_vs_latency",
        "size_vs_ratio",
        "gmacs_by_part",
        "sparsity_by_part",
    )
] + (["results/plots/iterative_steps.png"] if ITERATIVE["enabled"] else [])


localrules:
    aggregate,
    report,


rule aggregate:
    input:
        metrics=all_metrics(),
        onnx=all_onnx(),
    output:
        "results/summary.csv",
    log:
        "logs/aggregate.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate.py"


rule report:
    input:
        summary="results/summary.csv",
        # The iterative loop's table, when it runs (an empty input otherwise).
        steps=lambda wildcards: ITERATIVE_STEPS if ITERATIVE["enabled"] else [],
    output:
        plots=PLOTS,
        pdf="results/report.pdf",
    log:
        "logs/report.log",
    conda:
        CONDA_ENV
    params:
        # The report prints the study's settings, so it is rebuilt when any of them changes.
        study={
            key: config[key]
            for key in ("seed", "dataset", "model", "train", "pruning", "evaluate")
        },
    script:
        "../scripts/report.py"
