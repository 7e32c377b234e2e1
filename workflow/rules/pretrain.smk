# DMAE (and plain MAE) pretraining: one checkpoint per (model, pretraining recipe) serves
# the fine-tuning of every sigma.


rule pretrain:
    input:
        manifest=PREPARED_MANIFEST,
        init=pretrain_init,
    output:
        weights=f"{RESULTS}/pretrain/{{model}}/{{pretraining}}/last.safetensors",
        meta=f"{RESULTS}/pretrain/{{model}}/{{pretraining}}/last.json",
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("pretrain"),
        code=code("pretrain"),
        outdir=lambda w: layout.pretrain_dir(config, w.model, w.pretraining),
        launcher=launcher("pretrain"),
    log:
        f"{LOGS}/pretrain/{{model}}_{{pretraining}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{model}}_{{pretraining}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("pretrain")
    resources:
        **resources_of("pretrain"),
    shell:
        command("pretrain")


rule reconstructions:
    input:
        weights=lambda w: pretrained_weights(w.model, w.pretraining),
        manifest=PREPARED_MANIFEST,
    output:
        report(
            f"{RESULTS}/figures/reconstructions_{{model}}-{{pretraining}}.png",
            caption="../report/reconstructions.rst",
            category="Figures",
        ),
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("reconstructions"),
        code=code("reconstructions"),
    log:
        f"{LOGS}/reconstructions/{{model}}_{{pretraining}}.log",
    benchmark:
        f"{BENCH}/reconstructions/{{model}}_{{pretraining}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("reconstructions")
    resources:
        **resources_of("reconstructions"),
    shell:
        command("reconstructions")
