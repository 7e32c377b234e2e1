"""Figures: certified accuracy against radius, and the denoising/reconstruction illustration.

Every figure is written to each path given (format from the suffix: .png, .pdf, .svg)
atomically. Figures are built with the object API on the Agg backend, so no display is needed.
Given ``published`` (the paper's certified accuracy (%) by radius of a run's published method
at a sigma, or "best": ``build.write_report`` looks it up in reference_results.csv), the
certified-accuracy figures mark those points as hollow circles in the run's colour: best over
sigma from the papers' main tables, per sigma where a paper reports per-sigma numbers (Cohen
et al.).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dmae.io import atomic_path  # noqa: E402
from dmae.report.analysis import (  # noqa: E402
    Run,
    as_runs,
    certified_accuracy,
    load,
    radius_grid,
)

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
# (run, sigma or "best") -> the paper's certified accuracy (%) indexed by radius, or None
Published = Callable[[Run, "str | float"], "pd.Series | None"]


def save_figure(fig: Figure, paths: PathOrPaths, dpi: int = 150) -> None:
    """Save ``fig`` to every path (format from its suffix), each written atomically."""
    for path in [paths] if isinstance(paths, str | os.PathLike) else paths:
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if not fmt:
            raise ValueError(f"{path}: give a suffix (.png, .pdf) to choose the format")
        # no creation date in a PDF: the same results give the same bytes
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)


def _done_runs(runs: Sequence, dataset: str) -> list[Run]:
    """Finished runs of ``dataset``; runs whose TSV does not exist yet are left out."""
    return [run for run in as_runs(runs) if run.dataset == dataset and run.done]


def _no_runs_figure(title: str, paths: PathOrPaths) -> None:
    """Empty axes saying there is nothing to plot yet, so the figure file always exists."""
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, "no finished runs", transform=ax.transAxes, ha="center", va="center",
            fontsize="large", color="0.4")
    _style(ax, title)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylabel("certified accuracy")
    save_figure(fig, paths)


def _curve_inputs(runs: Sequence, dataset: str, max_radius: float | None, points: int):
    """(finished runs, their tables, the radius grid, a color per method), or None."""
    done = _done_runs(runs, dataset)
    if not done:
        return None
    tables = {run: load(run.tsv) for run in done}
    grid = radius_grid(list(tables.values()), points, max_radius)
    return done, tables, grid, _colors([run.method for run in done])


def _mark_paper(ax, run: Run, color: str, published: Published | None,
                sigma: str | float = "best") -> bool:
    """Hollow circles at the paper's numbers for ``run``'s published method, if any."""
    points = None if published is None else published(run, sigma)
    if points is None:
        return False
    ax.plot(points.index, points.to_numpy() / 100, linestyle="none", marker="o",
            markerfacecolor="none", color=color)
    return True


def _paper_legend_entry(ax):
    """A grey hollow circle in the legend standing for every paper marker."""
    (handle,) = ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none",
                        color="0.3", label="paper (published)")
    return handle


def _colors(methods: Sequence[str]) -> dict[str, str]:
    """One fixed color per method, so a method looks the same in every panel and figure."""
    return {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}


def plot_certified_accuracy(runs: Sequence, dataset: str, paths: PathOrPaths, *,
                            max_radius: float | None = None, points: int = 400,
                            published: Published | None = None) -> None:
    """One panel per sigma, one certified-accuracy-vs-radius curve per method, and the
    paper's per-sigma points where ``published`` has them.

    Runs not finished are skipped; with none finished the figure says so.
    """
    inputs = _curve_inputs(runs, dataset, max_radius, points)
    if inputs is None:
        _no_runs_figure(f"{dataset}, certified accuracy", paths)
        return
    done, tables, grid, colors = inputs
    sigmas = sorted({run.sigma for run in done})
    fig = Figure(figsize=(4.2 * len(sigmas), 3.4), layout="constrained")
    axes = fig.subplots(1, len(sigmas), sharey=True, squeeze=False)[0]
    handles = {}
    marked = False
    for ax, sigma in zip(axes, sigmas, strict=True):
        for run in (r for r in done if r.sigma == sigma):
            acc = certified_accuracy(tables[run], grid)
            (handles[run.method],) = ax.plot(grid, acc.to_numpy(), color=colors[run.method],
                                             label=run.display)
            marked |= _mark_paper(ax, run, colors[run.method], published, sigma)
        _style(ax, f"{dataset}, σ = {sigma:g}")
    axes[0].set_ylabel("certified accuracy")
    legend = [handles[m] for m in colors if m in handles]
    if marked:
        legend.append(_paper_legend_entry(axes[0]))
    fig.legend(handles=legend, loc="outside right upper", fontsize="small")
    save_figure(fig, paths)


def plot_best_over_sigma(runs: Sequence, dataset: str, paths: PathOrPaths, *,
                         max_radius: float | None = None, points: int = 400,
                         published: Published | None = None) -> None:
    """One curve per method: at each radius the best certified accuracy over its finished
    sigmas, and the paper's best-over-sigma points where ``published`` has them. Runs not
    finished are skipped; with none finished the figure says so."""
    inputs = _curve_inputs(runs, dataset, max_radius, points)
    if inputs is None:
        _no_runs_figure(f"{dataset}, best over σ", paths)
        return
    done, tables, grid, colors = inputs
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    marked = False
    for method, color in colors.items():
        runs_of = [r for r in done if r.method == method]
        curves = [certified_accuracy(tables[r], grid).to_numpy() for r in runs_of]
        ax.plot(grid, np.max(curves, axis=0), color=color, label=runs_of[0].display)
        marked |= _mark_paper(ax, runs_of[0], color, published)
    if marked:
        _paper_legend_entry(ax)
    _style(ax, f"{dataset}, best over σ")
    ax.set_ylabel("certified accuracy")
    ax.legend(loc="upper right", fontsize="small")
    save_figure(fig, paths)


def _style(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("L2 radius")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)


def _images(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be [N,C,H,W] with C in (1, 3), got {list(x.shape)}")
    return x


def reconstruction_grid(clean, corrupted, recon, path: PathOrPaths, *,
                        row_titles: Sequence[str] = ("clean", "noisy + masked",
                                                     "reconstruction")) -> None:
    """Rows: clean images, the noisy+masked encoder input, the reconstruction; one column per
    image. Inputs are float arrays or tensors [N,C,H,W] in [0,1] (clipped for display)."""
    rows = [_images(a, n) for a, n in ((clean, "clean"), (corrupted, "corrupted"),
                                       (recon, "recon"))]
    if len({a.shape for a in rows}) != 1:
        raise ValueError(f"shapes differ: {[list(a.shape) for a in rows]}")
    count = rows[0].shape[0]
    fig = Figure(figsize=(1.6 * count, 1.7 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), count, squeeze=False)
    for i, (images, title) in enumerate(zip(rows, row_titles, strict=True)):
        for j in range(count):
            ax = axes[i][j]
            image = np.clip(images[j].transpose(1, 2, 0), 0.0, 1.0)
            if image.shape[2] == 1:
                ax.imshow(image[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
            else:
                ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(title)
    save_figure(fig, path)
