"""The report's registry declares every table and figure once, and the files they go to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from dmae import config as cfglib
from dmae import layout
from dmae.report import registry


@pytest.mark.parametrize("config", ["default.yaml", "fashion-mnist-seeds.yaml"])
def test_a_config_has_the_seed_table_exactly_when_it_has_replicates(config):
    cfg = cfglib.load(REPO / "config" / config)
    names = registry.table_names(cfg)
    assert (registry.SEED_TABLE in names) == layout.has_replicates(cfg)
    tables = layout.results_dir(cfg) / "tables"
    assert [p for p in registry.table_paths(cfg) if p.suffix == ".tex"] == [
        tables / f"{name}.tex" for name in names]
    assert registry.curve_paths(cfg) == [tables / f"{name}_curves.csv"
                                         for name in registry.figure_names()]


def test_each_name_is_declared_once_and_compared_tables_are_declared():
    tables = [t.name for t in registry.TABLES]
    assert len(tables) == len(set(tables))
    assert len(registry.figure_names()) == len(set(registry.figure_names()))
    assert set(registry.compared_tables()) <= set(tables)


def test_reading_the_registry_loads_neither_pandas_nor_matplotlib():
    """The workflow and the DVC tooling read the names without the report's dependencies."""
    script = ("import json, sys, dmae.report.registry; print(json.dumps(sorted("
              "m for m in ('pandas', 'matplotlib') if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                            text=True).stdout
    assert json.loads(loaded) == []
