"""Open a run's HTML pages in headless Chromium, as a reader would, and check that they work.

The two pages: Snakemake's report (``results/<name>/report.html``, made by ``snakemake
--report``) and DVC's plots page (``dvc plots show``, rendered here into
``results/<name>/dvc_plots/index.html`` with vega, vega-lite and vega-embed inlined, so that it
works offline). ``check_page`` fails a page on any console error, uncaught exception, failed or
network request, broken image, embedded image that does not decode (in the browser, and
whole, by Pillow: Chromium draws a truncated PNG without complaint), or vega plot that drew
nothing, and keeps a full-page screenshot. A Snakemake report is a single-page app that shows
a figure only once it is opened: each figure, the statistics and the workflow graph are opened
in turn.

    python -m dmae.ops.pages --config config/default.yaml

writes ``results/<name>/screenshots/{report,dvc_plots}.png`` and exits 1 naming every problem.
Chromium is driven over the DevTools protocol on a pipe (no extra Python package); the
``CHROMIUM`` environment variable names another binary than ``chromium`` on PATH.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import fcntl
import io
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

CHROMIUM_ENV = "CHROMIUM"
SCREENSHOTS = "screenshots"
REPORT_PAGE = "report.html"
DVC_PLOTS_DIR = "dvc_plots"
# DVC's vega-lite templates declare the v5 schema: bundle the newest vega-lite 5 that
# vl-convert ships, so that specs and library agree.
VEGA_LITE_MAJOR = "5"
WINDOW = (1280, 900)
MAX_SCREENSHOT_HEIGHT = 12_000  # px; a longer page is cut there


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer in time."""


def find_chromium() -> str:
    """The Chromium executable: $CHROMIUM if set, else ``chromium`` on PATH."""
    name = os.environ.get(CHROMIUM_ENV) or "chromium"
    path = shutil.which(name)
    if path is None:
        raise BrowserError(
            f"Chromium executable {name!r} not found: install Debian's (apt-get install "
            f"chromium) or set {CHROMIUM_ENV} to a Chromium or Chrome binary")
    return path


class _Chromium:
    """One headless Chromium on the DevTools pipe: fd 3 takes commands, fd 4 gives replies and
    events, each a JSON message ended by a NUL byte."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = Path(tempfile.mkdtemp(prefix="dmae-chromium-"))
        self._stderr = open(self._profile.parent / f"{self._profile.name}.log", "w+b")  # noqa: SIM115
        # Our ends of the two pipes stay here. The child's ends are copied to free fds >= 10,
        # so that bash's 3<& and 4>& below cannot overwrite one with the other.
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        child_in = fcntl.fcntl(to_child, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_child, fcntl.F_DUPFD_CLOEXEC, 10)
        args = [
            "--headless", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage",  # containers often have a small /dev/shm
            "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            # No host resolves: a page that needs the network fails the same way everywhere
            # (check_page reports every network request besides).
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ]
        if os.geteuid() == 0:
            # Chromium refuses to start as root with its sandbox (CI and containers run as
            # root); it opens only the local pages we give it.
            args.append("--no-sandbox")
        args.append("about:blank")
        # bash, not sh: dash takes no fd above 9. exec keeps the shell's pid, so the process
        # we end is Chromium itself.
        script = (f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} '
                  f'{child_in}<&- {child_out}>&-')
        try:
            self.proc = subprocess.Popen(
                ["bash", "-c", script, self.executable, *args],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL,
                stdout=self._stderr, stderr=self._stderr, start_new_session=True)
        finally:
            for fd in {to_child, from_child, child_in, child_out}:
                os.close(fd)
        try:
            self.call("Browser.getVersion")
        except BaseException:
            self.close()
            raise

    def _log_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-15:])

    def _receive(self, deadline: float, waiting_for: str = "") -> dict:
        """The next message from Chromium; BrowserError after ``deadline`` or if it exits."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium ({self.executable}) did not answer "
                                   f"{waiting_for or 'in time'}")
            ready, _, _ = select.select([self._read], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium ({self.executable}) exited:\n"
                                       f"{self._log_tail()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its result; events met on the way are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._write, data):]
        except BrokenPipeError:
            raise BrowserError(f"Chromium ({self.executable}) has exited:\n"
                               f"{self._log_tail()}") from None
        seconds = timeout or self.timeout
        deadline = time.monotonic() + seconds
        while True:
            reply = self._receive(deadline, f"{method} within {seconds:.0f} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(BrowserError):
            while time.monotonic() < deadline:
                message = self._receive(deadline)
                if "method" in message:
                    self.events.append(message)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode()
                     + b"\0")
        # Wait for it to exit without reaping it: while its pid is unreaped, no other process
        # can take that id, so the process group ended below is surely its own.
        deadline = time.monotonic() + 5
        while (os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        # Its renderers share the process group we gave it: end any left by that id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stderr.close()
        Path(self._stderr.name).unlink(missing_ok=True)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> _Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def _event_problems(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and network requests, as text."""
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            problems.append(f"console {params['type']}: {' '.join(map(str, args))[:300]}")
        elif method == "Runtime.exceptionThrown":
            detail = params.get("exceptionDetails", {})
            text = detail.get("exception", {}).get("description") or detail.get("text", "")
            where = detail.get("url", "")
            where = f" ({where[:100]}:{detail.get('lineNumber', 0) + 1})" if where else ""
            problems.append(f"script error: {text.splitlines()[0] if text else '?'}{where}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            # Failed loads come from Network.loadingFailed below, with their URL.
            if entry.get("level") == "error" and entry.get("source") != "network":
                problems.append(f"browser error ({entry.get('source')}): "
                                f"{entry.get('text', '')[:300]}")
    requests = {e["params"]["requestId"]: e["params"]["request"]["url"]
                for e in events if e["method"] == "Network.requestWillBeSent"}
    for url in dict.fromkeys(requests.values()):
        if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp"):
            problems.append(f"loads {url[:200]} from the network (the page must work offline)")
    for event in events:
        if event["method"] == "Network.loadingFailed":
            params = event["params"]
            url = requests.get(params["requestId"], "?")
            if params.get("canceled") and not params.get("blockedReason"):
                continue
            label = url if not url.startswith("data:") else url.split(",", 1)[0] + ",..."
            problems.append(f"failed to load {label[:200]}: {params.get('errorText', '')}")
    return problems


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def check_page(html: Path, screenshot: Path | None = None, *, timeout: float = 60.0,
               chromium: str | None = None) -> list[str]:
    """Open ``html`` in headless Chromium and return every problem found (none: []): see the
    module docstring. In a Snakemake report, every figure and the statistics are opened in
    turn, as a reader would click them. A full-page PNG is written to ``screenshot`` (of the
    report's first figure, else of the page as it opens). BrowserError when Chromium is
    missing or fails (not a problem of the page)."""
    html = Path(html).resolve()
    if not html.is_file():
        return [f"{html}: no such file"]
    deadline = time.monotonic() + timeout
    with _Chromium(chromium, timeout=min(timeout, 30.0)) as browser:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)

        def evaluate(expression: str):
            left = max(5.0, deadline - time.monotonic())
            reply = browser.call("Runtime.evaluate",
                                 {"expression": expression, "awaitPromise": True,
                                  "returnByValue": True}, session, timeout=left)
            if "exceptionDetails" in reply:
                detail = reply["exceptionDetails"]
                text = detail.get("exception", {}).get("description") or detail.get("text")
                raise BrowserError(f"checking {html} failed: {text}")
            return reply["result"].get("value")

        def settle() -> list[str]:
            browser.pump(0.1)  # a view opened just now renders on the next tick
            seen, quiet_since = len(browser.events), time.monotonic()
            while not evaluate("__dmaeReady()"):
                if len(browser.events) != seen:
                    seen, quiet_since = len(browser.events), time.monotonic()
                # After a script error, two quiet seconds mean nothing more will be drawn
                # (the error and the undrawn plots are reported).
                elif (time.monotonic() - quiet_since > 2.0 and any(
                        e["method"] == "Runtime.exceptionThrown" for e in browser.events)):
                    return []
                if time.monotonic() > deadline:
                    return [f"did not settle within {timeout:.0f} s (images still loading "
                            f"or vega plots not drawn)"]
                browser.pump(0.2)
            return []

        first = len(browser.events)  # events of this page from here on
        nav = browser.call("Page.navigate", {"url": html.as_uri()}, session, timeout=timeout)
        if nav.get("errorText"):
            return [f"cannot open {html}: {nav['errorText']}"]
        while not any(e["method"] == "Page.loadEventFired" for e in browser.events[first:]):
            if time.monotonic() > deadline:
                return [f"did not finish loading within {timeout:.0f} s"]
            browser.pump(0.2)
        evaluate(_HELPERS_JS)
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
            _write_atomically(Path(screenshot), _screenshot(browser, session))
        browser.pump(0.2)  # late console messages
        problems += _event_problems(browser.events[first:])
    problems += _cut_images(html, sorted(files), problems)
    return list(dict.fromkeys(problems))


# The local files shown by the page's <img> elements.
_FILE_IMAGES_JS = ("Array.from(document.images, img => img.currentSrc || img.src)"
                   ".filter(src => src.startsWith('file:'))")
_DATA_IMAGE = re.compile(r"data:image/([\w.+-]+)((?:;[\w.+=-]*)*);base64,([A-Za-z0-9+/]*=*)")


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


def _screenshot(browser: _Chromium, session: str) -> bytes:
    size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
    width = max(WINDOW[0], int(size["width"]))
    height = min(max(WINDOW[1], int(size["height"])), MAX_SCREENSHOT_HEIGHT)
    browser.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                 session)
    shot = browser.call("Page.captureScreenshot", {"format": "png"}, session)
    return base64.b64decode(shot["data"])


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


def render_dvc_plots(out_dir: Path, repo: Path = Path("."), targets: list[str] = ()) -> Path:
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
    if not declared_plots(Path(repo) / dvc_file):
        log.warning("%s: no DVC plots page (%s declares no plots)", results,
                    Path(repo) / dvc_file)
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


if __name__ == "__main__":
    sys.exit(main())
