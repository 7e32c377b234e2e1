# Randomized-smoothing certification (certify.method; cohen: Cohen et al.'s CERTIFY), split
# into shards that run as separate jobs, then merged (the merge checks the shards are
# complete and disjoint).


rule certify_shard:
    input:
        weights=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.safetensors",
        manifest=PREPARED_MANIFEST,
    output:
        f"{CERTIFIED}/{{model}}/{{method}}/sigma_{{sigma}}/shard_{{shard}}-of-{SHARDS}.tsv",
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("certify_shard"),
        code=code("certify_shard"),
        shards=SHARDS,
    log:
        f"{LOGS}/{CERTIFY_KIND}/{{model}}_{{method}}_sigma_{{sigma}}_shard_{{shard}}.log",
    benchmark:
        f"{BENCH}/{CERTIFY_KIND}/{{model}}_{{method}}_sigma_{{sigma}}_shard_{{shard}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("certify_shard")
    resources:
        **resources_of("certify_shard"),
    shell:
        command("certify_shard")


rule merge_certify:
    input:
        shards=expand(
            f"{CERTIFIED}/{{{{model}}}}/{{{{method}}}}/sigma_{{{{sigma}}}}/shard_{{shard}}-of-{SHARDS}.tsv",
            shard=range(SHARDS),
        ),
    output:
        f"{CERTIFIED}/{{model}}/{{method}}/sigma_{{sigma}}.tsv",
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("merge_certify"),
        code=code("merge_certify"),
    log:
        f"{LOGS}/{CERTIFY_KIND}/{{model}}_{{method}}_sigma_{{sigma}}_merge.log",
    benchmark:
        f"{BENCH}/{CERTIFY_KIND}/{{model}}_{{method}}_sigma_{{sigma}}_merge.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("merge_certify")
    resources:
        **resources_of("merge_certify"),
    shell:
        command("merge_certify")
