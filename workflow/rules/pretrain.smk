# DMAE (and plain MAE) pretraining: one checkpoint per (model, pretraining recipe) serves
# the fine-tuning of every sigma.


rule pretrain:
    input:
        manifest=PREPARED_MANIFEST,
        init=pretrain_init,
        code=code("data", "models", "train", "checkpoint.py"),
    output:
        weights=f"{RESULTS}/pretrain/{{model}}/{{pretraining}}/last.safetensors",
        meta=f"{RESULTS}/pretrain/{{model}}/{{pretraining}}/last.json",
    params:
        config=EFFECTIVE_CONFIG,
        cpu_isa=CPU_ISA,
        settings=lambda w: settings(
            dmae_config.pretrain_settings(config, w.model, w.pretraining)
        ),
        outdir=lambda w: layout.pretrain_dir(config, w.model, w.pretraining),
        launcher=launcher("pretrain"),
    log:
        f"{LOGS}/pretrain/{{model}}_{{pretraining}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{model}}_{{pretraining}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: res("pretrain", "threads", 2)
    resources:
        mem_mb=res("pretrain", "mem_mb", 4000),
        runtime=res("pretrain", "runtime", 120),
        gpu=res("pretrain", "gpus", 0),
    shell:
        "{params.launcher} pretrain --config {params.config} --model {wildcards.model}"
        " --pretraining {wildcards.pretraining} --out {params.outdir} --threads {threads} --log {log}"


rule reconstructions:
    input:
        weights=f"{RESULTS}/pretrain/{{model}}/{{pretraining}}/last.safetensors",
        manifest=PREPARED_MANIFEST,
        code=code("data", "models", "report/figures.py", "report/analysis.py", "checkpoint.py"),
    output:
        report(
            f"{RESULTS}/figures/reconstructions_{{model}}-{{pretraining}}.png",
            caption="../report/reconstructions.rst",
            category="Figures",
        ),
    params:
        config=EFFECTIVE_CONFIG,
        cpu_isa=CPU_ISA,
    log:
        f"{LOGS}/reconstructions/{{model}}_{{pretraining}}.log",
    benchmark:
        f"{BENCH}/reconstructions/{{model}}_{{pretraining}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb", 2000),
        runtime=res("report", "runtime", 30),
    shell:
        "dmae reconstruct --config {params.config} --checkpoint {input.weights}"
        " --out {output} --threads {threads} --log {log}"
