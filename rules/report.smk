# Summary table, plots and the PDF report.

PLOTS = [
    f"results/plots/{name}.png"
    for name in (
        "map_vs_ratio",
        "gmacs_vs_ratio",
        "latency_vs_ratio",
        "accuracy_vs_latency",
        "size_vs_ratio",
    )
]


localrules:
    aggregate,
    report,


rule aggregate:
    input:
        all_metrics(),
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
        "results/summary.csv",
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
