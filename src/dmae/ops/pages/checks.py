"""What is checked on a page, opened in headless Chromium as a reader would open it.

``check_page`` fails a page on any console error, uncaught exception, failed or network
request, broken image, embedded image that does not decode (in the browser, and whole, by
Pillow: Chromium draws a truncated PNG without complaint), or vega plot that drew nothing, and
keeps a full-page screenshot. A Snakemake report is a single-page app that shows a figure only
once it is opened: each figure, the statistics and the workflow graph are opened in turn.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dmae.ops.pages.browser import WINDOW, BrowserError, chromium_page, first_line

MAX_SCREENSHOT_HEIGHT = 12_000  # px; a longer page is cut there


# Helpers defined in the page once it has loaded.
_HELPERS_JS = r"""
// Containers of the page's vega plots that are shown: DVC writes `vegaEmbed('#id', spec)`
// in a script inside each plot's div, Snakemake's report in the script of a view, whose div
// exists only while the view is shown (its data sits in a <script> of the same id, which is
// no container); vega-embed marks the containers it started on with .vega-embed.
function __dmaeVegaContainers() {
  const ids = new Set();
  for (const s of document.scripts)
    for (const m of s.text.matchAll(/vegaEmbed\(\s*['"]#([^'"]+)['"]/g)) ids.add(m[1]);
  for (const el of document.querySelectorAll('.vega-embed')) if (el.id) ids.add(el.id);
  return Array.from(ids, id => document.querySelector('#' + CSS.escape(id)))
    .filter(el => el && el.tagName !== 'SCRIPT');
}
// Settled: loaded, every image done, every vega plot drawn (vega draws svg.marks or
// canvas.marks), or none can be: vega-embed is missing.
function __dmaeReady() {
  if (document.readyState !== 'complete') return false;
  if (!Array.from(document.images).every(img => img.complete)) return false;
  const plots = __dmaeVegaContainers();
  return (plots.length > 0 && typeof vegaEmbed !== 'function') ||
    plots.every(el => el.querySelector('.marks'));
}
// What a reader sees now: broken <img> elements and vega plots that drew nothing.
function __dmaeShownProblems() {
  const problems = [];
  for (const img of document.images) {
    const src = img.currentSrc || img.src;
    if (!src) problems.push(`image without a source: ${__dmaeShort(img.outerHTML)}`);
    else if (!img.complete) problems.push(`image still loading: ${__dmaeShort(src)}`);
    else if (img.naturalWidth === 0) problems.push(`broken image: ${__dmaeShort(src)}`);
  }
  for (const el of __dmaeVegaContainers())
    if (!el.querySelector('.marks')) problems.push(`vega plot #${el.id} drew nothing`);
  return problems;
}
function __dmaeShort(s) {
  s = String(s);
  const comma = s.startsWith('data:') ? s.indexOf(',') : -1;
  if (comma >= 0) s = s.slice(0, comma) + ',...';
  return s.length > 160 ? s.slice(0, 157) + '...' : s;
}
// Snakemake's report is a single-page app: its App component is the global `app`, its
// results (each a data: URI) the global `results`, and a figure is shown only once opened.
function __dmaeIsSnakemakeReport() {
  return typeof app === 'object' && app !== null && typeof app.setView === 'function' &&
    typeof results === 'object' && results !== null &&
    Object.values(results).some(r => r && typeof r === 'object' && 'data_uri' in r);
}
// The report's views worth opening (its statistics, workflow graph and every figure), and
// the one to keep a screenshot of (its first figure).
function __dmaeViews() {
  if (!__dmaeIsSnakemakeReport()) return {views: [], cover: null};
  const figures = Object.keys(results)
    .filter(path => String(results[path].mime_type).startsWith('image/'));
  return {views: ['stats', 'rulegraph', ...figures], cover: figures.length ? figures[0] : null};
}
function __dmaeShow(view) {
  if (view === 'stats' || view === 'rulegraph') app.setView({content: view});
  else app.setView({content: 'img', contentPath: results[view].data_uri, resultPath: view});
}
"""

# Every problem a reader would meet on the page as loaded, as strings: what is shown, each of a
# Snakemake report's results read (each image decoded), and any other data:image URI in the
# page's source (the report's logo, inline figures) decoded.
_CHECK_JS = r"""(async () => {
  const problems = __dmaeShownProblems();
  const decodes = async uri => {
    const img = new Image();
    img.src = uri;
    try {
      await img.decode();
      return img.naturalWidth > 0 ? null : 'decodes to an empty image';
    } catch (err) { return err.message || String(err); }
  };
  const body = document.body;
  if (!body || (body.innerText.trim() === '' && !body.querySelector('img, svg, canvas, iframe')))
    problems.push('the page shows nothing');
  // An <img>'s own data: URI was judged above.
  const seen = new Set(Array.from(document.images, img => img.currentSrc || img.src));
  if (__dmaeIsSnakemakeReport()) {
    for (const [path, entry] of Object.entries(results)) {
      const uri = entry.data_uri;
      if (!uri) { problems.push(`report result ${path} holds no data`); continue; }
      seen.add(uri);
      try {
        const blob = await (await fetch(uri)).blob();
        if (blob.size === 0) problems.push(`report result ${path} is empty`);
      } catch (err) {
        problems.push(`report result ${path} cannot be read: ${err.message}`);
        continue;
      }
      if (String(entry.mime_type).startsWith('image/')) {
        const why = await decodes(uri);
        if (why) problems.push(`report figure ${path} does not decode (${why})`);
      }
    }
  }
  const source = document.documentElement.outerHTML;
  const uris = source.match(/data:image\/[\w.+-]+(?:;[\w.+=-]*)*;base64,[A-Za-z0-9+\/]*=*/g) || [];
  for (const uri of new Set(uris)) {
    if (seen.has(uri)) continue;
    const why = await decodes(uri);
    if (why) {
      const named = uri.match(/;filename=([^;,]+)/);
      const label = named ? named[1] : `${__dmaeShort(uri)} (${uri.length} characters)`;
      problems.push(`embedded image ${label} does not decode (${why})`);
    }
  }
  return problems;
})()"""

# The local files shown by the page's <img> elements.
_FILE_IMAGES_JS = ("Array.from(document.images, img => img.currentSrc || img.src)"
                   ".filter(src => src.startsWith('file:'))")
_DATA_IMAGE = re.compile(r"data:image/([\w.+-]+)((?:;[\w.+=-]*)*);base64,([A-Za-z0-9+/]*=*)")


def _event_problems(events: list[tuple[str, object]]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and network requests, as text."""
    problems = []
    for kind, item in events:
        if kind == "console" and item.type in ("error", "assert"):
            if item.args:  # a page script's console.error or console.assert
                problems.append(f"console {item.type}: {item.text[:300]}")
            # Chromium's own log has no arguments; its failed loads come from "requestfailed"
            # below, with their URL.
            elif not item.text.startswith("Failed to load resource"):
                problems.append(f"browser error: {item.text[:300]}")
        elif kind == "pageerror":
            stack = item.stack or ": ".join(filter(None, (item.name, item.message)))
            where = re.search(r"^\s+at (?:.*\()?(\S+?):(\d+):\d+\)?$", stack, re.M)
            where = f" ({where[1][:100]}:{where[2]})" if where else ""
            problems.append(f"script error: {stack.splitlines()[0] if stack else '?'}{where}")
    urls = [item.url for kind, item in events if kind == "request"]
    for url in dict.fromkeys(urls):
        if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp"):
            problems.append(f"loads {url[:200]} from the network (the page must work offline)")
    for kind, item in events:
        # ERR_ABORTED: the page itself cancelled the load.
        if kind == "requestfailed" and item.failure != "net::ERR_ABORTED":
            url = item.url.split(",", 1)[0] + ",..." if item.url.startswith("data:") else item.url
            problems.append(f"failed to load {url[:200]}: {item.failure}")
    return problems


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def check_page(html: Path, screenshot: Path | None = None, *, timeout: float = 60.0,
               chromium: str | None = None) -> list[str]:
    """Open ``html`` in headless Chromium and return every problem found (none: []): see the
    module docstring. A full-page PNG is written to ``screenshot`` (of a Snakemake report's
    first figure, else of the page as it opens). BrowserError when Chromium is missing or fails
    (not a problem of the page)."""
    html = Path(html).resolve()
    if not html.is_file():
        return [f"{html}: no such file"]
    deadline = time.monotonic() + timeout
    step = min(timeout, 30.0)  # seconds for one browser call: its start, the screenshot
    with chromium_page(chromium, step) as page:
        events: list[tuple[str, object]] = []
        for kind in ("console", "pageerror", "request", "requestfailed", "requestfinished"):
            page.on(kind, lambda item, kind=kind: events.append((kind, item)))

        def evaluate(expression: str):
            # page.evaluate has no timeout and waits forever on a page whose scripts hang;
            # wait_for_function gives up on time (its wrapped result is never falsy).
            left = max(5.0, deadline - time.monotonic())
            try:
                return page.wait_for_function(f"(async () => ({{value: await ({expression})}}))()",
                                              timeout=left * 1000).json_value().get("value")
            except PlaywrightTimeout:
                raise BrowserError(f"checking {html} failed: the page did not answer within "
                                   f"{left:.0f} s") from None
            except PlaywrightError as err:
                raise BrowserError(f"checking {html} failed: {first_line(err)}") from None

        def settle() -> list[str]:
            page.wait_for_timeout(100)  # a view opened just now renders on the next tick
            seen, quiet_since = len(events), time.monotonic()
            while not evaluate("__dmaeReady()"):
                if len(events) != seen:
                    seen, quiet_since = len(events), time.monotonic()
                # After a script error, two quiet seconds mean nothing more will be drawn
                # (the error and the undrawn plots are reported).
                elif (time.monotonic() - quiet_since > 2.0
                      and any(kind == "pageerror" for kind, _ in events)):
                    return []
                if time.monotonic() > deadline:
                    return [f"did not settle within {timeout:.0f} s (images still loading "
                            f"or vega plots not drawn)"]
                page.wait_for_timeout(200)
            return []

        try:
            page.goto(html.as_uri(), timeout=timeout * 1000)
        except PlaywrightTimeout:
            return [f"did not finish loading within {timeout:.0f} s"]
        except PlaywrightError as err:
            return [f"cannot open {html}: {first_line(err)}"]
        # Indirect eval: the helpers become globals of the page.
        evaluate(f"(0, eval)({json.dumps(_HELPERS_JS)})")
        problems = settle()
        problems += evaluate(_CHECK_JS)
        files = set(evaluate(_FILE_IMAGES_JS))
        tour = evaluate("__dmaeViews()")
        for view in tour["views"]:
            try:
                evaluate(f"__dmaeShow({json.dumps(view)})")
                found = settle() + evaluate("__dmaeShownProblems()")
                files.update(evaluate(_FILE_IMAGES_JS))
            except BrowserError as err:
                found = [str(err)]
            problems += [f"opening {view}: {p}" for p in found]
        if screenshot is not None:
            if tour["cover"]:
                evaluate(f"__dmaeShow({json.dumps(tour['cover'])})")
                settle()
            width, height = evaluate("[document.documentElement.scrollWidth, "
                                     "document.documentElement.scrollHeight]")
            page.set_viewport_size({"width": max(WINDOW[0], width), "height": min(
                max(WINDOW[1], height), MAX_SCREENSHOT_HEIGHT)})
            _write_atomically(Path(screenshot), page.screenshot(timeout=step * 1000))
        page.wait_for_timeout(200)  # late console messages
        problems += _event_problems(events)
    problems += _cut_images(html, sorted(files), problems)
    return list(dict.fromkeys(problems))


def _cut_images(html: Path, file_urls: list[str], known: list[str]) -> list[str]:
    """Images Chromium shows without complaint although their bytes are cut short or damaged
    (it draws what it could decode of a truncated PNG): every data:image URI in ``html``'s
    source and every local file shown, decoded whole by Pillow. Formats Pillow does not know
    (SVG) are left to the browser, as are images already named in ``known``."""
    images: list[tuple[str, Callable[[], bytes]]] = []
    for match in _DATA_IMAGE.finditer(html.read_text(encoding="utf-8", errors="replace")):
        named = re.search(r";filename=([^;]+)", match[2])
        label = named[1] if named else f"data:image/{match[1]} ({len(match[3])} characters)"
        images.append((label, lambda b64=match[3]: base64.b64decode(b64 + "==")))
    for url in file_urls:
        path = Path(unquote(urlparse(url).path))
        images.append((str(path), path.read_bytes))
    problems = []
    for label, read in dict(images).items():
        if any(label in k for k in known):
            continue
        try:
            with Image.open(io.BytesIO(read())) as im:
                im.load()
        except (UnidentifiedImageError, FileNotFoundError, binascii.Error):
            continue  # not an image Pillow reads, or gone: the browser's checks speak to it
        except (OSError, SyntaxError, ValueError) as err:
            problems.append(f"image {label} is cut short or damaged ({err})")
    return problems
