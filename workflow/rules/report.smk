# Tables (CSV, Markdown, LaTeX) and figures from every certification of the config.


rule report:
    input:
        tsvs=ALL_CERTIFICATIONS,
        checkpoints=FINETUNE_METAS,
        reference=str(SRC / "reference_results.csv"),
        code=code("report", "layout.py"),
    output:
        tables=reported(REPORT_TABLES, "Tables"),
        figures=reported(REPORT_FIGURES, "Figures"),
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings(config["report"]),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb", 2000),
        runtime=res("report", "runtime", 30),
    shell:
        "dmae report --config {params.config} --log {log}"
