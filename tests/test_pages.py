"""The HTML pages people open: Snakemake's report and DVC's plots page, loaded in headless
Chromium (real browser, real dvc, real snakemake). Skipped where Chromium is not installed."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from PIL import Image, ImageDraw
from workflow_runs import snakemake

from dmae.ops.pages import browser, checks, cli

# The marker is declared in pyproject.toml ([tool.pytest.ini_options] markers).
pytestmark = pytest.mark.browser

RESULTS = "results/smoke"


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return browser.find_chromium()
    except browser.BrowserError as err:
        pytest.skip(f"headless Chromium is not available: {err}")


def png(color=(30, 90, 200)) -> bytes:
    """A small real figure: a line on white."""
    im = Image.new("RGB", (120, 80), "white")
    ImageDraw.Draw(im).line([(5, 70), (60, 20), (115, 40)], fill=color, width=3)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def data_uri(data: bytes, name: str) -> str:
    return f"data:image/png;charset=utf8;filename={name};base64,{base64.b64encode(data).decode()}"


def assert_screenshot(path: Path) -> None:
    """A PNG of the page that is not one flat colour."""
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= browser.WINDOW[0]
        assert im.convert("RGB").getcolors(1) is None, f"{path} is blank"


def page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    path = tmp_path / name
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title></head>"
                    f"<body><h1>Results</h1>{body}</body></html>")
    return path


# ------------------------------------------------------------------------- check_page alone


def test_missing_chromium_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setenv(browser.CHROMIUM_ENV, "no-such-chromium-here")
    with pytest.raises(browser.BrowserError, match=r"'no-such-chromium-here'.*apt-get install "
                                                 r"chromium.*CHROMIUM"):
        browser.find_chromium()


def test_a_page_whose_images_load_passes(tmp_path, chromium):
    (tmp_path / "figure.png").write_bytes(png())
    # Held in a script as Snakemake's report holds its figures, shown only on demand.
    held = data_uri(png((200, 30, 30)), "held.png")
    html = page(tmp_path, f'<img src="figure.png"><img src="{data_uri(png(), "inline.png")}">'
                          f'<script>var later = "{held}";</script>')
    shot = tmp_path / "shots" / "page.png"
    assert checks.check_page(html, shot, timeout=30) == []
    assert_screenshot(shot)
    assert not list(shot.parent.glob(".*")), "the screenshot is written under a temporary name"


def test_a_missing_image_file_fails_and_is_named(tmp_path, chromium):
    html = page(tmp_path, '<img src="figures/gone.png">')
    problems = checks.check_page(html, tmp_path / "shot.png", timeout=30)
    assert any(p.startswith("broken image:") and "figures/gone.png" in p for p in problems)
    assert any("failed to load" in p and "ERR_FILE_NOT_FOUND" in p for p in problems)
    assert (tmp_path / "shot.png").is_file(), "a failing page still gets its screenshot"


def test_corrupt_embedded_images_fail_and_are_named(tmp_path, chromium):
    corrupt = data_uri(b"\x89PNG\r\n\x1a\n and no more", "corrupt.png")
    held = data_uri(b"this is no image at all", "garbage.png")
    html = page(tmp_path, f'<img src="{corrupt}"><script>var later = "{held}";</script>')
    problems = checks.check_page(html, timeout=30)
    assert any(p.startswith("broken image:") and "corrupt.png" in p for p in problems)
    assert any("garbage.png does not decode" in p for p in problems)


def test_images_cut_short_fail_and_are_named(tmp_path, chromium):
    """Chromium draws what it can of a truncated PNG and reports nothing: caught all the same,
    in a file and in a data URI."""
    cut = png()[:300]
    (tmp_path / "cut.png").write_bytes(cut)
    html = page(tmp_path, f'<img src="cut.png"><img src="{data_uri(cut, "cut_inline.png")}">')
    problems = checks.check_page(html, timeout=30)
    assert f"image {tmp_path / 'cut.png'} is cut short or damaged (image file is truncated)" \
        in problems
    assert "image cut_inline.png is cut short or damaged (image file is truncated)" in problems


def test_a_script_error_fails(tmp_path, chromium):
    html = page(tmp_path, "<script>drawFigures();</script>"
                          "<script>console.error('table missing')</script>")
    problems = checks.check_page(html, timeout=30)
    assert any("ReferenceError: drawFigures is not defined" in p for p in problems)
    assert "console error: table missing" in problems


def test_a_script_from_an_unreachable_url_fails(tmp_path, chromium):
    # .invalid never resolves (RFC 2606); the browser resolves no host anyway.
    url = "https://cdn.example.invalid/npm/vega@5"
    html = page(tmp_path, f'<script src="{url}"></script>')
    problems = checks.check_page(html, timeout=30)
    assert f"loads {url} from the network (the page must work offline)" in problems
    assert any(p.startswith(f"failed to load {url}:") for p in problems)


def test_a_page_whose_script_never_returns_is_given_up_on_time(tmp_path, chromium):
    """A script that never yields leaves the browser no time to answer: an error of the check
    (BrowserError), within the timeout, not a hang."""
    html = page(tmp_path, "<script>addEventListener('load', () => setTimeout(() => "
                          "{ for (;;) {} }))</script>")
    with pytest.raises(browser.BrowserError, match=r"did not answer within \d+ s"):
        checks.check_page(html, timeout=5)


def test_a_page_that_is_not_there_is_a_problem(tmp_path):
    assert checks.check_page(tmp_path / "nope.html") == [f"{tmp_path / 'nope.html'}: no such file"]


# --------------------------------------------------------------------------- DVC's page


def dvc_repo(root: Path) -> Path:
    """A DVC repository (no git) whose dvc.yaml declares a run's CSV table with x and y, the
    same table as a stage's plot (DVC's default template), and a PNG figure."""
    tables, figures = root / RESULTS / "tables", root / RESULTS / "figures"
    tables.mkdir(parents=True)
    figures.mkdir(parents=True)
    rows = "\n".join(f"{r / 4},{max(0.0, 0.8 - r / 5):.3f}" for r in range(9))
    (tables / "certified_accuracy.csv").write_text(f"radius,accuracy\n{rows}\n")
    (figures / "certified_accuracy.png").write_bytes(png())
    (root / "dvc.yaml").write_text(yaml.safe_dump({
        "stages": {"report": {"cmd": "true", "plots": [
            {f"{RESULTS}/tables/certified_accuracy.csv": {"cache": False}},
            {f"{RESULTS}/figures/certified_accuracy.png": {"cache": False}}]}},
        "plots": [{"certified accuracy": {
            "x": "radius", "y": {f"{RESULTS}/tables/certified_accuracy.csv": "accuracy"}}}],
    }, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root,
                   check=True, capture_output=True, timeout=120)
    return root


def test_dvc_plots_page_works_offline(tmp_path, chromium):
    repo = dvc_repo(tmp_path / "repo")
    assert cli.declared_plots(repo / "dvc.yaml") == [
        "certified accuracy", f"{RESULTS}/tables/certified_accuracy.csv",
        f"{RESULTS}/figures/certified_accuracy.png"]
    index = cli.render_dvc_plots(tmp_path / "out", repo)
    html = index.read_text()
    assert "cdn.jsdelivr" not in html and "vegaEmbed" in html
    assert len(re.findall(r"vegaEmbed\('#", html)) == 2, "both CSV plots are on the page"
    assert list((tmp_path / "out" / "static").glob("*.png")), "the figure is copied beside it"
    shot = tmp_path / "dvc_plots.png"
    assert checks.check_page(index, shot, timeout=30) == []
    assert_screenshot(shot)


def test_dvcs_own_page_fails_offline(tmp_path, chromium):
    """The page `dvc plots show` writes by default takes vega from a CDN: the check must fail
    it (that is what the offline template is for)."""
    repo = dvc_repo(tmp_path / "repo")
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "out")],
                   cwd=repo, check=True, capture_output=True, timeout=120)
    problems = checks.check_page(tmp_path / "out" / "index.html", timeout=30)
    assert any("from the network" in p and "vega" in p for p in problems)
    assert any("vegaEmbed is not defined" in p for p in problems)
    assert any(re.search(r"vega plot #\S+ drew nothing", p) for p in problems)


def test_a_plot_dvc_cannot_load_is_named(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    (repo / RESULTS / "figures" / "certified_accuracy.png").unlink()
    with pytest.raises(RuntimeError, match=r"(?s)left plots out.*figures/certified_acc"):
        cli.render_dvc_plots(tmp_path / "out", repo)
    assert not (tmp_path / "out").exists()


def test_this_repositorys_dvc_plots_page_works_offline(tmp_path, chromium):
    """The plots of this repository's dvc.yaml (its templates too) whose data this checkout
    has: the committed tables and figures; DVC-cached ones only after `make pull`."""
    targets = cli.plot_targets("dvc.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        listing = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", "-o",
                                  scratch, *targets], cwd=REPO, capture_output=True, text=True,
                                 timeout=300)
    shown = json.loads(listing.stdout)
    missing = {e["name"] for e in shown.get("errors") or []}
    present = [name for name in shown["data"] if name not in missing]
    assert present, f"none of dvc.yaml's plots has its data here: {listing.stderr}"
    index = cli.render_dvc_plots(tmp_path / "out", REPO,
                                 cli.plot_targets("dvc.yaml", present))
    shot = tmp_path / "dvc_plots.png"
    assert checks.check_page(index, shot, timeout=60) == []
    assert_screenshot(shot)


# ------------------------------------------------------------------------------ the command


def run_folder(tmp_path: Path, report_body: str) -> Path:
    """A working directory with the smoke config, a DVC repository declaring plots of its run,
    and a stand-in for its report."""
    root = dvc_repo(tmp_path / "work")
    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    (root / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    page(root / RESULTS, report_body, name="report.html")
    return root


def test_main_checks_both_pages_and_keeps_screenshots(tmp_path, monkeypatch, capsys, chromium):
    root = run_folder(tmp_path, '<img src="figures/certified_accuracy.png">')
    monkeypatch.chdir(root)
    code = cli.main(["--config", "smoke.yaml", "--dvc-file", "dvc.yaml"])
    assert code == 0, capsys.readouterr().err
    shots = root / RESULTS / "screenshots"
    for name in ("report.png", "dvc_plots.png"):
        assert_screenshot(shots / name)
    assert (root / RESULTS / "dvc_plots" / "index.html").is_file()
    assert "every page loads with every figure" in capsys.readouterr().out


def test_main_names_every_problem_and_exits_1(tmp_path, monkeypatch, capsys, chromium):
    root = run_folder(tmp_path, '<img src="figures/not_made.png">')
    (root / RESULTS / "tables" / "certified_accuracy.csv").unlink()
    monkeypatch.chdir(root)
    assert cli.main(["--config", "smoke.yaml", "--dvc-file", "dvc.yaml"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"report\.html: broken image: \S*figures/not_made\.png", err)
    assert re.search(r"DVC plots page: .*tables/certified_accuracy\.csv", err, re.S)


# ------------------------------------------------------------------ the real Snakemake report


@pytest.mark.slow
def test_the_smoke_runs_snakemake_report_opens_with_every_figure(smoke_run, tmp_path, chromium):
    workdir, path, cfg = smoke_run
    report = tmp_path / "report.html"
    snakemake(workdir, path, "--report", str(report))
    shot = tmp_path / "report.png"
    assert checks.check_page(report, shot, timeout=60) == []
    assert_screenshot(shot)

    # The same report with one figure's bytes damaged: named, as a result and when opened.
    figure = "reconstructions_micro-dmae.png"
    html = report.read_text(encoding="utf-8")
    start = html.index(f"filename={figure};base64,") + len(f"filename={figure};base64,")
    damaged = tmp_path / "damaged.html"
    damaged.write_text(html[:start] + "AAAA" + html[start + 2000:], encoding="utf-8")
    problems = checks.check_page(damaged, timeout=60)
    assert any(re.search(rf"report figure \S*{figure} does not decode", p) for p in problems)
    assert any(p.startswith("opening ") and figure in p and "broken image" in p
               for p in problems)
