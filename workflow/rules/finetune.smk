# Fine-tuning per (model, method, sigma) with Gaussian noise; a method with a pretraining
# starts from that pretrained encoder, RS trains from scratch.


rule finetune:
    input:
        manifest=PREPARED_MANIFEST,
        pretrained=pretrained_input,
        code=code("data", "models", "train", "checkpoint.py"),
    output:
        weights=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.safetensors",
        meta=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.json",
        metrics=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/metrics.csv",
    params:
        config=EFFECTIVE_CONFIG,
        cpu_isa=CPU_ISA,
        settings=lambda w: settings(
            dmae_config.finetune_settings(config, w.model, w.method, float(w.sigma))
        ),
        pretrained=pretrained_arg,
        outdir=lambda w: layout.finetune_dir(config, w.model, w.method, w.sigma),
        launcher=launcher("finetune"),
    log:
        f"{LOGS}/finetune/{{model}}_{{method}}_sigma_{{sigma}}.log",
    benchmark:
        f"{BENCH}/finetune/{{model}}_{{method}}_sigma_{{sigma}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: res("finetune", "threads", 2)
    resources:
        mem_mb=res("finetune", "mem_mb", 4000),
        runtime=res("finetune", "runtime", 120),
        gpu=res("finetune", "gpus", 0),
    shell:
        "{params.launcher} finetune --config {params.config} --model {wildcards.model}"
        " --method {wildcards.method} --sigma {wildcards.sigma} {params.pretrained}"
        " --out {params.outdir} --threads {threads} --log {log}"
