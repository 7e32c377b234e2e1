"""DVC plots: the top-level plots of every pipeline's dvc.yaml name columns that their files
have, and real `dvc plots show` / `dvc plots diff` draw them, one line per method and sigma,
compared across commits."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from conftest import BIN, REPO

from dmae import config as cfglib
from dmae import layout
from dmae.ops.dvc import stages as dvcstages
from dmae.report import registry
from dmae.report.curves import PAPER, THIS_RUN
from dmae.train.state import METRIC_COLUMNS, write_metrics

DEFAULT = dvcstages.DEFAULT_CONFIG


def plots_of(configfile: str) -> list[dict]:
    """The plots of the pipeline's dvc.yaml, as generated (test_dvc.py: the committed ones
    are the generated ones)."""
    text = dvcstages.render(cfglib.load(REPO / configfile), configfile)
    return yaml.safe_load(text)["plots"]


def entries(plots: list[dict]):
    for plot in plots:
        ((key, props),) = plot.items()
        yield key, props


@pytest.mark.parametrize("configfile", dvcstages.PIPELINES)
def test_every_plot_has_axes_a_title_and_a_known_template(configfile):
    cfg = cfglib.load(REPO / configfile)
    plots = dict(entries(plots_of(configfile)))
    assert len(plots) == len(registry.curve_names()) + len(layout.runs(cfg))
    for key, props in plots.items():
        assert props["x"] and props["y"] and props["title"], key
        template = props["template"]
        if template in registry.curve_names():
            content = (REPO / dvcstages.TEMPLATE_DIR / f"{template}.json").read_text()
            for anchor in ("DATA", "X", "Y", "TITLE"):
                assert f"<DVC_METRIC_{anchor}>" in content, (template, anchor)
        else:
            assert template == "simple"
    # paths are the layout's, seen from the dvc.yaml's folder
    where = (REPO / dvcstages.dvc_file(configfile)).parent
    curve_files = [(where / key).resolve() for key, p in plots.items()
                   if p["template"] != "simple"]
    assert curve_files == [(REPO / p).resolve() for p in registry.curve_paths(cfg)]
    for props in plots.values():
        if props["template"] == "simple":
            ((path, columns),) = props["y"].items()
            assert (where / path).resolve().name == "metrics.csv"
            assert set(columns) <= set(METRIC_COLUMNS) and props["x"] in METRIC_COLUMNS


def encoded_fields(node) -> set[str]:
    """The data fields a Vega-Lite spec names (not DVC's anchors)."""
    if isinstance(node, list):
        return set().union(*map(encoded_fields, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    own = node.get("field")
    found = {own} if isinstance(own, str) and "<DVC" not in own else set()
    return found.union(*map(encoded_fields, node.values()))


def test_the_templates_read_the_columns_the_report_writes():
    """Every field a curve template encodes or filters on is a column of the committed
    curves (or DVC's own `rev`), and the filters use the report's source names."""
    for name, path in zip(registry.curve_names(), registry.curve_paths(cfglib.load(REPO / DEFAULT)),
                          strict=True):
        columns = set(pd.read_csv(REPO / path).columns)
        assert {layout.CURVE_X, layout.CURVE_Y} <= columns
        template = json.loads((REPO / dvcstages.TEMPLATE_DIR / f"{name}.json").read_text())
        fields = encoded_fields(template)
        assert fields - {"rev"} <= columns, (name, fields - columns)
        filters = json.dumps(template)
        if "source" in columns:
            assert f"'{THIS_RUN}'" in filters and f"'{PAPER}'" in filters


def dvc(args, cwd):
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def git(args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def plots_repo(tmp_path):
    """A git + DVC repository holding the default's plots: dvc.yaml's plots section, the
    templates, the committed curves, and a metrics.csv per run written by the trainer's own
    writer (the real ones are DVC-cached, not in a clean clone)."""
    cfg = cfglib.load(REPO / DEFAULT)
    git(["init", "-q"], tmp_path)
    dvc(["init", "-q"], tmp_path)
    shutil.copytree(REPO / dvcstages.TEMPLATE_DIR, tmp_path / dvcstages.TEMPLATE_DIR,
                    dirs_exist_ok=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots_of(DEFAULT)},
                                                      allow_unicode=True, sort_keys=False))
    for path in registry.curve_paths(cfg):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    for i, (model, method, sigma) in enumerate(layout.runs(cfg)):
        metrics = tmp_path / layout.finetune_dir(cfg, model, method, sigma) / "metrics.csv"
        metrics.parent.mkdir(parents=True)
        write_metrics(metrics, [{"epoch": e, "step": 10 * e, "lr": 1e-3, "train_loss": 2 / e,
                                 "val_loss": 1.5 / e, "val_acc": 0.5 + 0.01 * (e + i),
                                 "val_smoothed_acc": 0.5 + 0.01 * e} for e in (1, 2, 3)])
    git(["add", "-A"], tmp_path)
    git(["commit", "-qm", "plots"], tmp_path)
    return tmp_path, cfg


def test_dvc_plots_show_draws_a_line_per_method_and_sigma(plots_repo):
    repo, cfg = plots_repo
    shown = json.loads(dvc(["plots", "show", "--json"], repo))
    assert "errors" not in shown, shown.get("errors")
    data = shown["data"]
    curves = [registry.curve_paths(cfg)[0].as_posix(), registry.curve_paths(cfg)[1].as_posix()]
    assert set(curves) <= set(data)
    (per_sigma,) = data[curves[0]]
    spec = per_sigma["content"]
    assert spec["encoding"]["x"]["field"] == layout.CURVE_X
    assert spec["encoding"]["y"]["field"] == layout.CURVE_Y
    values = spec["data"]["values"]
    runs = {(row["method"], float(row["sigma"])) for row in values}
    assert len(runs) == len(layout.runs(cfg))  # one line per method and sigma
    training = [key for key in data if "fine-tuning" in key]
    assert len(training) == len(layout.runs(cfg))
    (first,) = data[training[0]]
    assert {row["field"] for row in first["content"]["data"]["values"]} == set(
        dvcstages.TRAINING_CURVES)
    dvc(["plots", "show", "-o", "page"], repo)
    assert (repo / "page" / "index.html").stat().st_size > 10_000


def test_dvc_plots_diff_compares_two_commits(plots_repo):
    repo, cfg = plots_repo
    path = repo / registry.curve_paths(cfg)[1]
    table = pd.read_csv(path)
    table[layout.CURVE_Y] = table[layout.CURVE_Y] / 2  # another run, in the working tree
    table.to_csv(path, index=False)
    diff = json.loads(dvc(["plots", "diff", "HEAD", "--json", "--targets",
                           path.relative_to(repo).as_posix()], repo))
    (plot,) = diff["data"][path.relative_to(repo).as_posix()]
    assert set(plot["revisions"]) == {"HEAD", "workspace"}
    values = plot["content"]["data"]["values"]
    by_rev = {rev: [float(r[layout.CURVE_Y]) for r in values if r["rev"] == rev]
              for rev in ("HEAD", "workspace")}
    assert by_rev["workspace"] == pytest.approx([v / 2 for v in by_rev["HEAD"]])
