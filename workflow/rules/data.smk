# Data preparation: verify the raw files (checksums) and write the prepared splits.


rule prepare_data:
    output:
        manifest=PREPARED_MANIFEST,
    params:
        config=EFFECTIVE_CONFIG,
        dataset=config["dataset"],
    log:
        f"{LOGS}/prepare_{DATASET}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_{DATASET}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "dmae prepare --config {params.config} --log {log}"
