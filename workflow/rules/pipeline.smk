# Every rule of the workflow, from the table that the dvc.yaml generator reads too
# (dmae.pipeline.RULES: command, inputs, outputs, settings, resources). The order of the
# table is the order of the work: data, pretraining, reconstructions, fine-tuning per sigma,
# certification in shards and their merge, the report.

for rule_name in pipeline.RULES:

    rule:
        name:
            rule_name
        input:
            unpack(inputs_of(rule_name)),
        output:
            **outputs_of(rule_name),
        params:
            **params_of(rule_name),
        log:
            log_of(rule_name),
        benchmark:
            log_of(rule_name, "benchmark")
        conda:
            "../envs/dmae.yaml"
        threads: threads_of(rule_name)
        resources:
            **resources_of(rule_name),
        shell:
            pipeline.RULES[rule_name].command
