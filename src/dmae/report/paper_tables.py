"""The paper's own tables next to this run's: Table 1 or 3 in its layout (each method with
its #params and extra data, best over sigma per radius), and Cohen et al.'s per-sigma table.

Both are for a config that compares with a paper dataset (``report.reference_dataset``). A
run that reproduces a published method (``report.paper_names``) shares its #params; extra
data is "yes" for a run whose pretraining starts from another run's checkpoint (CIFAR-10
from the ImageNet DMAE).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dmae.report.analysis import Run, accuracy_by_sigma, best_over_sigma
from dmae.report.columns import NOT_REPORTED, radius_column
from dmae.report.reference import same_sigma

SOURCE_PAPER, SOURCE_RUN = "paper", "this run"


def _published(reference: pd.DataFrame, dataset: str, sigma: str | float) -> pd.DataFrame:
    return reference[(reference["dataset"] == dataset)
                     & reference["sigma"].map(lambda s: same_sigma(s, sigma))]


def has_paper_table(cfg: dict, reference: pd.DataFrame) -> bool:
    dataset = cfg["report"]["reference_dataset"]
    return dataset is not None and not _published(reference, dataset, "best").empty


def has_per_sigma_table(cfg: dict, reference: pd.DataFrame) -> bool:
    dataset = cfg["report"]["reference_dataset"]
    return dataset is not None and any(
        not _published(reference, dataset, sigma).empty for sigma in cfg["sigmas"])


def _model_and_method(cfg: dict, run: Run) -> tuple[str, str]:
    """A run's model and method (its id is ``model/method`` when the config has several)."""
    if "/" in run.method:
        model, method = run.method.split("/")
        return model, method
    return next(iter(cfg["models"])), run.method


def _extra_data(cfg: dict, run: Run) -> str:
    pre = cfg["methods"][_model_and_method(cfg, run)[1]]["pretraining"]
    return "yes" if pre is not None and cfg["pretrainings"][pre]["init"] else "no"


def _model_params(cfg: dict, reference: pd.DataFrame) -> dict[str, str]:
    """Each model's #params, from the published method a run of it reproduces (one
    architecture: every run of the model, probes included, has its size)."""
    dataset = cfg["report"]["reference_dataset"]
    published = reference[reference["dataset"] == dataset]
    params = dict(zip(published["method"], published["params"].astype(str), strict=True))
    return {key.split("/")[0]: params[name] for key, name in cfg["report"]["paper_names"].items()
            if name in params}


def _row(source: str, method: str, params: str, extra: str, values: dict) -> dict:
    return {"source": source, "method": method, "#params": params, "extra data": extra,
            **values}


def paper_table(cfg: dict, runs: Sequence[Run], reference: pd.DataFrame,
                sigma: str | float = "best") -> pd.DataFrame:
    """The reference dataset's published methods at ``sigma`` ("best": the paper's Table 1
    or 3, best over sigma per radius; a number: Cohen et al.'s per-sigma table), each row
    its #params, extra data and certified accuracy (%) per published radius, followed by
    this run's methods at the same radii."""
    dataset = cfg["report"]["reference_dataset"]
    published = _published(reference, dataset, sigma)
    radii = sorted(published["radius"].unique())
    rows = []
    for method in dict.fromkeys(published["method"]):
        of_method = published[published["method"] == method]
        first = of_method.iloc[0]
        values = {radius_column(r): NOT_REPORTED for r in radii}
        values.update({radius_column(r): f"{v:.1f}" for r, v in
                       zip(of_method["radius"], of_method["certified_accuracy_pct"],
                           strict=True)})
        rows.append(_row(SOURCE_PAPER, method, str(first["params"]), str(first["extra_data"]),
                         values))
    for method in dict.fromkeys(run.method for run in runs):
        of_method = [run for run in runs if run.method == method
                     and (sigma == "best" or same_sigma(run.sigma, sigma))]
        if not of_method:
            continue
        curves = accuracy_by_sigma(of_method, radii)
        values = {radius_column(r): "not run" if curves.empty else
                  f"{100 * best_over_sigma(curves)[float(r)]:.1f}" for r in radii}
        first = of_method[0]
        params = _model_params(cfg, reference).get(_model_and_method(cfg, first)[0],
                                                   NOT_REPORTED)
        rows.append(_row(SOURCE_RUN, first.display, params, _extra_data(cfg, first), values))
    return pd.DataFrame(rows)


def per_sigma_paper_table(cfg: dict, runs: Sequence[Run],
                          reference: pd.DataFrame) -> pd.DataFrame:
    """``paper_table`` at each of the config's sigmas that the reference has numbers for,
    with a sigma column."""
    dataset = cfg["report"]["reference_dataset"]
    parts = []
    for sigma in cfg["sigmas"]:
        if _published(reference, dataset, sigma).empty:
            continue
        table = paper_table(cfg, runs, reference, sigma)
        table.insert(0, "sigma", float(sigma))
        parts.append(table)
    return pd.concat(parts, ignore_index=True)
