"""The command: open a run's two HTML pages in headless Chromium and check that they work.

The pages: Snakemake's report (``results/<name>/report.html``, made by ``snakemake
--report``) and DVC's plots page (``dvc plots show``, rendered here into
``results/<name>/dvc_plots/index.html`` with vega, vega-lite and vega-embed inlined, so that it
works offline).

    python -m dmae.ops.pages --config config/default.yaml

writes ``results/<name>/screenshots/{report,dvc_plots}.png`` and exits 1 naming every problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from dmae.ops.pages.browser import BrowserError
from dmae.ops.pages.checks import check_page

log = logging.getLogger(__name__)

SCREENSHOTS = "screenshots"
REPORT_PAGE = "report.html"
DVC_PLOTS_DIR = "dvc_plots"
# DVC's vega-lite templates declare the v5 schema: bundle the newest vega-lite 5 that
# vl-convert ships, so that specs and library agree.
VEGA_LITE_MAJOR = "5"


def offline_template() -> str:
    """An HTML template for ``dvc plots show --html-template`` with vega, vega-lite and
    vega-embed inlined (vl-convert's bundle). It has no ``{scripts}`` placeholder, where DVC
    would put its CDN <script> tags."""
    try:
        import vl_convert
    except ImportError as err:
        raise RuntimeError("the offline DVC plots page needs vl-convert-python (pip install "
                           "vl-convert-python)") from err
    versions = [v for v in vl_convert.get_vegalite_versions()
                if v.split(".")[0] == VEGA_LITE_MAJOR]
    version = max(versions, key=lambda v: tuple(map(int, v.split(".")))) if versions else None
    bundle = vl_convert.javascript_bundle(vl_version=version)
    # A literal "</script" would end the inline script early.
    bundle = bundle.replace("</script", "<\\/script")
    for placeholder in ("{scripts}", "{plot_divs}", "{refresh_tag}"):
        if placeholder in bundle:  # DVC would substitute it inside the library
            raise RuntimeError(f"vl-convert's bundle contains {placeholder}")
    label = (f"vega {vl_convert.get_vega_version()}, vega-lite {version or 'latest'}, "
             f"vega-embed {vl_convert.get_vega_embed_version()}")
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC plots</title>
<!-- {label}, bundled by vl-convert-python: no network needed -->
<script>
{bundle}
</script>
<style>
body {{ font-family: sans-serif; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def declared_plots(dvc_yaml: Path) -> list[str]:
    """The plots ``dvc_yaml`` declares, as written there: its top-level definitions (ids or
    paths) and its stages' plot outputs; [] when there is no such file."""
    dvc_yaml = Path(dvc_yaml)
    if not dvc_yaml.is_file():
        return []
    doc = yaml.safe_load(dvc_yaml.read_text()) or {}
    entries = list(doc.get("plots") or [])
    for stage in (doc.get("stages") or {}).values():
        if isinstance(stage, dict):
            entries += stage.get("plots") or []
    # Each entry is a path or id, alone or as the one key of its properties.
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _literal(text: str) -> str:
    """``text`` as a regular expression that matches it. DVC matches targets as regular
    expressions but first turns every backslash into a slash, so no backslash escapes."""
    return "".join(c if c.isalnum() or c in "/_-: " else f"[{c}]" for c in text)


def plot_targets(dvc_file: str, plot_ids: list[str] | None = None) -> list[str]:
    """``dvc plots show`` targets for the plots of ``dvc_file`` (repository-relative; DVC
    names them ``<dvc_file>::<plot id>``), all of them or only ``plot_ids``."""
    prefix = f"{_literal(dvc_file)}::"
    return [prefix] if plot_ids is None else [f"{prefix}{_literal(i)}$" for i in plot_ids]


def render_dvc_plots(out_dir: Path, repo: Path = Path("."),
                     targets: Sequence[str] = ()) -> Path:
    """``dvc plots show`` of ``repo``'s workspace (every plot of every dvc.yaml, or those
    ``targets`` select: see plot_targets) into ``out_dir``, replaced whole, with the offline
    template; returns its index.html. RuntimeError with DVC's message when it fails or cannot
    load a plot."""
    out_dir = Path(out_dir).resolve()
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    template = out_dir.with_name(f".{out_dir.name}.template.html")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    template.write_text(offline_template(), encoding="utf-8")
    dvc = [sys.executable, "-m", "dvc", "plots", "show"]
    try:
        proc = subprocess.run([*dvc, "--html-template", str(template), "-o", str(tmp),
                               *targets], cwd=repo, capture_output=True, text=True, timeout=300)
    finally:
        template.unlink(missing_ok=True)
    output = f"{proc.stdout}{proc.stderr}".strip()
    failed = proc.returncode != 0 or not (tmp / "index.html").is_file()
    if not failed and "failed to load" in output:
        # DVC still writes the page, without those plots; its JSON output names them (-o: it
        # copies the images too, into ./dvc_plots by default).
        with tempfile.TemporaryDirectory() as scratch:
            listing = subprocess.run([*dvc, "--json", "-o", scratch, *targets], cwd=repo,
                                     capture_output=True, text=True, timeout=300)
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            errors = json.loads(listing.stdout).get("errors") or []
            output += "".join(f"\n  {e.get('name')} ({e.get('rev')}): {e.get('msg')}"
                              for e in errors)
        failed = True
    if failed:
        shutil.rmtree(tmp, ignore_errors=True)
        how = f"failed (exit {proc.returncode})" if proc.returncode else "left plots out"
        raise RuntimeError(f"dvc plots show in {Path(repo).resolve()} {how}: {output}")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir / "index.html"


def check_run(results: Path, repo: Path = Path("."), dvc_file: str = "dvc.yaml",
              timeout: float = 60.0) -> list[str]:
    """Check both pages of the run in ``results`` (``results/<name>``): its Snakemake report,
    and DVC's plots page of the plots ``dvc_file`` (relative to ``repo``) declares, rendered
    into ``results/dvc_plots`` (skipped, with a warning, where it declares none).
    Screenshots go to ``results/screenshots/``. Returns the problems, each naming its page."""
    results = Path(results)
    shots = results / SCREENSHOTS
    problems = []
    report = results / REPORT_PAGE
    if report.is_file():
        problems += [f"{report}: {p}" for p in check_page(report, shots / "report.png",
                                                          timeout=timeout)]
    else:
        problems.append(f"{report}: missing (snakemake --report {report} makes it)")
    declaring = Path(repo) / dvc_file
    if not declared_plots(declaring):
        log.warning("%s: no DVC plots page (%s declares no plots)", results, declaring)
        return problems
    try:
        page = render_dvc_plots(results / DVC_PLOTS_DIR, repo, plot_targets(dvc_file))
    except RuntimeError as err:
        problems.append(f"DVC plots page: {err}")
    else:
        problems += [f"{page}: {p}" for p in check_page(page, shots / "dvc_plots.png",
                                                        timeout=timeout)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmae.ops.pages",
        description="Open the run's Snakemake report and DVC plots page in headless Chromium, "
                    "check every figure loads, and keep screenshots.")
    parser.add_argument("--config", required=True, help="the run's YAML config")
    parser.add_argument("--repo", default=".", help="the DVC repository (default: .)")
    parser.add_argument("--dvc-file", help="the dvc.yaml declaring the run's plots, relative "
                        "to --repo (default: the config's, as dmae.ops.dvc.stages places it)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per page")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from dmae import config as cfglib
    from dmae import layout
    from dmae.ops.dvc import stages

    results = layout.results_dir(cfglib.load(args.config))
    dvc_file = args.dvc_file
    if dvc_file is None:
        config, repo = Path(args.config).resolve(), Path(args.repo).resolve()
        named = config.relative_to(repo).as_posix() if config.is_relative_to(repo) else config
        dvc_file = stages.dvc_file(str(named))
    try:
        problems = check_run(results, Path(args.repo), dvc_file, timeout=args.timeout)
    except BrowserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for shot in sorted((results / SCREENSHOTS).glob("*.png")):
        print(f"screenshot: {shot} ({shot.stat().st_size} bytes)")
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{results}: every page loads with every figure")
    return 0
