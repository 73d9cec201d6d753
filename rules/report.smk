# Summary table, plots and the PDF report.

# The plots and where `snakemake --report` files each (detrprune.report holds the list); the
# caption of each is report/<name>.rst.
PLOTS = [
    captioned_plot(name, *section)
    for name, section in report_plots(ITERATIVE["enabled"]).items()
]


localrules:
    aggregate,
    report,


rule aggregate:
    input:
        metrics=all_metrics(),
        onnx=all_onnx(),
        resamples=all_resamples(),
        # Every model's latency, timed in one process (rule time_models).
        latency="results/eval/latency.json",
        # Seed replicates' accuracy (none unless pruning.finetune.replicate_seeds lists seeds).
        replicates=replicate_metrics(),
    output:
        report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="4 Tables",
            subcategory="all variants",
        ),
    log:
        "logs/aggregate.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate.py"


rule report:
    input:
        summary="results/summary.csv",
        validations=BASELINE_VALIDATIONS,
        # The iterative loop's table, when it runs (an empty input otherwise).
        steps=lambda wildcards: ITERATIVE_STEPS if ITERATIVE["enabled"] else [],
    output:
        plots=PLOTS,
        pdf=report(
            "results/report.pdf",
            caption="../report/report_pdf.rst",
            category="5 Report",
            subcategory="PDF",
        ),
    log:
        "logs/report.log",
    conda:
        CONDA_ENV
    params:
        # The report prints the study's settings, so it is rebuilt when any of them changes.
        study={
            **{
                key: config[key]
                for key in ("seed", "dataset", "model", "pruning", "evaluate")
            },
            "train": TRAIN,
        },
    script:
        "../scripts/report.py"
