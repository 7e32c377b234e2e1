include: "workflow/Snakefile"


# Snakemake does not take a default target from an included file (snakemake issues #2056,
# #2773), so the root names it; everything else lives in workflow/.
rule default:
    default_target: True
    input:
        rules.all.input,
