"""Operations around the science: DVC (``dvc``), a rerun checked against the committed
run (``check``) and the report pages in a headless browser (``pages``). The science (data,
models, train, certify, report) never imports from here."""
