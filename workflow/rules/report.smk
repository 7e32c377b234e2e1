# Tables (CSV, Markdown, LaTeX) and figures from every certification of the config.


rule report:
    input:
        tsvs=ALL_CERTIFICATIONS,
        checkpoints=FINETUNE_METAS,
    output:
        tables=reported(REPORT_TABLES, "Tables"),
        figures=reported(REPORT_FIGURES, "Figures"),
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("report"),
        code=code("report"),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("report")
    resources:
        **resources_of("report"),
    shell:
        command("report")
