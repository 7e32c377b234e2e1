# Every rule of the workflow, from the table that the dvc.yaml generator reads too
# (dmae.pipeline.RULES: command, inputs, outputs, settings, resources). The order of the
# table is the order of the work: data, pretraining, reconstructions, fine-tuning per sigma,
# certification in shards and their merge, the report.
#
# The loop variable is named `rule` on purpose: Snakemake evaluates a `shell:` expression
# twice, here (the command it shows and compares) and when a job runs, inside a function
# whose argument `rule` is the job's rule name. Any other name would run the last rule's
# command for every job.

for rule in pipeline.RULES:

    rule:
        name:
            rule
        input:
            unpack(inputs_of(rule)),
        output:
            **outputs_of(rule),
        log:
            log_of(rule),
        benchmark:
            log_of(rule, "benchmark")
        localrule: pipeline.RULES[rule].local
        conda:
            "../envs/dmae.yaml"
        threads: threads_of(rule)
        resources:
            **resources_of(rule),
        params:
            **params_of(rule),
        shell:
            pipeline.RULES[rule].command
