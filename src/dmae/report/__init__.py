"""Certified-accuracy analysis, tables and figures for the certification TSVs.

``analysis`` (curves, ACR, intervals), ``columns`` (column names), ``tables`` (the tables as
DataFrames), ``render`` (CSV, Markdown, LaTeX), ``reference`` (the published numbers),
``curves`` and ``figures``; ``registry`` (every table and figure, declared once), ``runs`` (a
config's runs), ``summary`` (the report's notes) and ``build.write_report(cfg)`` (the report
stage); ``reconstructions`` (the reconstruction-figure stage), ``compare`` (two runs cell by
cell), ``run_info`` (where a run came from) and ``readme`` (the README's generated results
blocks). Nothing is imported here, so a job imports only the modules it uses (and reruns only
when they change: dmae.pipeline lists them).
"""
