# Randomized-smoothing certification (Cohen et al.'s CERTIFY), split into shards that run
# as separate jobs, then merged (the merge checks the shards are complete and disjoint).


rule certify_shard:
    input:
        weights=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.safetensors",
        manifest=PREPARED_MANIFEST,
        code=code("data", "models", "certify", "checkpoint.py"),
    output:
        f"{RESULTS}/certify/{{model}}/{{method}}/sigma_{{sigma}}/shard_{{shard}}-of-{SHARDS}.tsv",
    params:
        config=EFFECTIVE_CONFIG,
        cpu_isa=CPU_ISA,
        settings=settings(config["certify"]),
        shards=SHARDS,
    log:
        f"{LOGS}/certify/{{model}}_{{method}}_sigma_{{sigma}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/certify/{{model}}_{{method}}_sigma_{{sigma}}_shard_{{shard}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: res("certify", "threads", 2)
    resources:
        mem_mb=res("certify", "mem_mb", 4000),
        runtime=res("certify", "runtime", 120),
        gpu=res("certify", "gpus", 0),
    shell:
        "dmae certify --config {params.config} --checkpoint {input.weights}"
        " --sigma {wildcards.sigma} --shard {wildcards.shard}/{params.shards} --out {output}"
        " --threads {threads} --log {log}"


rule merge_certify:
    input:
        expand(
            f"{RESULTS}/certify/{{{{model}}}}/{{{{method}}}}/sigma_{{{{sigma}}}}/shard_{{shard}}-of-{SHARDS}.tsv",
            shard=range(SHARDS),
        ),
    output:
        f"{RESULTS}/certify/{{model}}/{{method}}/sigma_{{sigma}}.tsv",
    params:
        config=EFFECTIVE_CONFIG,
    log:
        f"{LOGS}/certify/{{model}}_{{method}}_sigma_{{sigma}}_merge.log",
    benchmark:
        f"{BENCH}/certify/{{model}}_{{method}}_sigma_{{sigma}}_merge.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "dmae merge-certify --config {params.config} --out {output} --log {log} {input}"
