# Data preparation: verify the raw files (checksums) and write the prepared splits, shared by
# every config with the same dataset settings (so the config file is not a param here).


rule prepare_data:
    output:
        manifest=PREPARED_MANIFEST,
    params:
        settings=settings("prepare_data"),
        code=code("prepare_data"),
    log:
        f"{LOGS}/prepare_{DATASET}.log",
    benchmark:
        f"{BENCH}/prepare_{DATASET}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("prepare_data")
    resources:
        **resources_of("prepare_data"),
    shell:
        command("prepare_data")
