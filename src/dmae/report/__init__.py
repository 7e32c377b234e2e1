"""Certified-accuracy analysis, tables and figures for the certification TSVs.

``analysis`` (curves, ACR, intervals), ``tables`` (CSV, Markdown, LaTeX), ``figures``,
``build.write_report(cfg)`` (the report stage), ``reconstructions`` (the reconstruction-figure
stage), ``compare`` (two runs cell by cell) and ``readme`` (the README's generated results blocks).
Nothing is imported here, so a job imports only the modules it uses (and reruns only when
they change: dmae.pipeline lists them).
"""
