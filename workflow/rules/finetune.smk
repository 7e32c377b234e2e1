# Fine-tuning per (model, method, sigma) with Gaussian noise; a method with a pretraining
# starts from that pretrained encoder, RS trains from scratch.


rule finetune:
    input:
        manifest=PREPARED_MANIFEST,
        pretrained=pretrained_input,
    output:
        weights=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.safetensors",
        meta=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/{CKPT}.json",
        metrics=f"{RESULTS}/finetune/{{model}}/{{method}}/sigma_{{sigma}}/metrics.csv",
    params:
        config=EFFECTIVE_CONFIG,
        settings=settings("finetune"),
        code=code("finetune"),
        pretrained=pretrained_arg,
        outdir=lambda w: layout.finetune_dir(config, w.model, w.method, w.sigma),
        launcher=launcher("finetune"),
    log:
        f"{LOGS}/finetune/{{model}}_{{method}}_sigma_{{sigma}}.log",
    benchmark:
        f"{BENCH}/finetune/{{model}}_{{method}}_sigma_{{sigma}}.tsv"
    conda:
        "../envs/dmae.yaml"
    threads: threads_of("finetune")
    resources:
        **resources_of("finetune"),
    shell:
        command("finetune")
