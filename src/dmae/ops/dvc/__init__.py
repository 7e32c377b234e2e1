"""DVC beside Snakemake: the dvc.yaml generator (``stages``), what a pull put in place
marked done for Snakemake (``sync``), checked pulls and pushes (``remote``), and the command
that drives them (``cli``, ``python -m dmae.ops.dvc``)."""
