"""Checks that an HTML report renders: opens it in headless Chromium, saves a full-page screenshot and the
DOM, and fails (exit 1) with one line per problem when

* the page is blank (no visible text, or a screenshot of a single colour),
* a table has no data rows (only a header, or nothing),
* an image did not load (``naturalWidth``/``naturalHeight`` 0: missing file, broken data, bad format),
* a linked local file (``href``/``src``, e.g. a GIF in ``media/``) does not exist or is empty; linked
  images are also decoded by the browser,
* the page loads anything from the network (a self-contained report must not), or the browser logs an
  error (a failed resource load, a script exception).

Content wider than the window (horizontal scrolling) is printed as a warning, not a failure. With
``--report`` (a page of ``taocache report``) it also fails when the paired matched-speed chart with its
intervals or the side-by-side clips did not render.

It drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so it needs only the
Python standard library, Pillow (already a dependency of the project) and a Chromium binary (Debian package
``chromium``). Exit status: 0 rendered, 1 problems found, 2 could not check (no browser, timeout).

    python eval/check_report.py eval/runs/tiny-t2v-t2v-20/report/report.html --report --out /tmp/report-check
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

#: Browser window for the screenshot (CSS pixels); the page's full height is captured.
VIEWPORT = (1280, 900)
#: Chromium cannot capture taller than this in one screenshot.
MAX_SCREENSHOT_HEIGHT = 16384
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
IMAGE_SUFFIXES = (".gif", ".png", ".jpg", ".jpeg", ".webp", ".svg")

# Run in the page once it has loaded: waits for every image, then reports what the checks need.
INSPECT_JS = r"""
(async () => {
  const settle = img => img.complete ? Promise.resolve() : new Promise(done => {
    img.addEventListener('load', done, {once: true});
    img.addEventListener('error', done, {once: true});
  });
  const short = url => url.startsWith('data:') ? url.slice(0, url.indexOf(',') > 0 ? url.indexOf(',') : 30) + ',...' : url;
  const heading = el => {
    for (let e = el.previousElementSibling; e; e = e.previousElementSibling)
      if (/^H[1-6]$/.test(e.tagName)) return e.textContent.trim();
    return '';
  };
  await Promise.race([Promise.all([...document.images].map(settle)), new Promise(r => setTimeout(r, 20000))]);
  const images = [...document.images].map((img, i) => ({
    index: i, alt: img.alt, src: short(img.currentSrc || img.src), width: img.naturalWidth, height: img.naturalHeight,
  }));
  const tables = [...document.querySelectorAll('table')].map((t, i) => ({
    index: i, rows: t.rows.length, dataRows: [...t.rows].filter(r => r.querySelector('td')).length, heading: heading(t),
  }));
  const links = [...document.querySelectorAll('a[href]')]
    .filter(a => !a.getAttribute('href').startsWith('#'))
    .map(a => ({url: a.href, text: a.textContent.trim().slice(0, 80)}));
  const resources = [...document.querySelectorAll(
      'img[src], video[src], audio[src], source[src], script[src], iframe[src], link[href][rel~="stylesheet"]')]
    .map(e => ({tag: e.tagName.toLowerCase(), url: short(e.src || e.href)}));
  const linkedImages = await Promise.all(links
    .filter(l => /\.(gif|png|jpe?g|webp|svg)$/i.test(new URL(l.url).pathname))
    .map(l => new Promise(done => {
      const im = new Image();
      im.onload = () => done({url: l.url, width: im.naturalWidth, height: im.naturalHeight});
      im.onerror = () => done({url: l.url, width: 0, height: 0});
      im.src = l.url;
    })));
  const loaded = img => img.naturalWidth > 0 && img.naturalHeight > 0;
  const intervalCharts = [...document.images].filter(img => /interval/i.test(img.alt) && loaded(img)).length;
  const clips = [...document.querySelectorAll('.media figure img')].filter(loaded).length;
  const headings = [...document.querySelectorAll('h2')].map(h => h.textContent.trim());
  const overflow = [...document.body.children]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .map(e => ({tag: e.tagName.toLowerCase(), heading: heading(e), right: Math.round(e.getBoundingClientRect().right)}));
  return {
    title: document.title, viewport: window.innerWidth, overflow, intervalCharts, clips, headings,
    textLength: document.body ? document.body.innerText.trim().length : 0,
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    images, tables, links, resources, linkedImages,
  };
})()
"""


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer: the page was not checked."""


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary: ``explicit`` (which must exist), else $CHROMIUM, else the usual names on PATH."""
    if explicit:
        if path := shutil.which(explicit):
            return path
        raise BrowserError(f"no browser at {explicit!r}")
    for candidate in (os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise BrowserError(
        "no Chromium found: install it (Debian: apt-get install -y chromium) or pass --chromium / set CHROMIUM"
    )


class Browser:
    """Headless Chromium spoken to over the DevTools protocol on a pipe (JSON messages ended by NUL)."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="check-report-")
        # The protocol pipe must be the browser's fds 3 (commands in) and 4 (replies out). The child's ends
        # are first moved above 9 so that placing them on 3 and 4 cannot overwrite one with the other.
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        child_in, child_out = (
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        flags = [
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
            "--mute-audio",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]  # --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI)

        # A small Python step places the pipe ends on fds 3 and 4 and then becomes Chromium (no preexec_fn,
        # which is unsafe in threaded programs).
        trampoline = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", trampoline, str(child_in), str(child_out), binary, *flags],
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            os.close(self._to_browser)
            os.close(self._from_browser)
            raise BrowserError(f"cannot start {binary}: {error}") from error
        finally:
            os.close(child_in)
            os.close(child_out)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its reply (events that arrive meanwhile are kept in ``events``)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None) -> dict:
        """Wait for the event ``method`` (of ``session``), keeping the others."""
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._receive(f"the event {method}")
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def _receive(self, what: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"Chromium did not send {what} within {self.timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                err = self.process.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                raise BrowserError(f"Chromium exited while waiting for {what}: {' | '.join(err)}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.process.stderr:
                self.process.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


def render(page: Path, out: Path, binary: str, timeout: float) -> dict:
    """Load ``page``; write ``out/screenshot.png`` and ``out/dom.html``; return what INSPECT_JS found,
    the browser's error messages and the network requests the page made."""
    import base64

    browser = Browser(binary, timeout)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", {}, session)
        width, height = VIEWPORT
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session)
        browser.wait_for("Page.loadEventFired", session)
        found = browser.send(
            "Runtime.evaluate",
            {"expression": INSPECT_JS, "awaitPromise": True, "returnByValue": True},
            session,
        )
        if "exceptionDetails" in found:
            raise BrowserError(f"the inspection script failed: {found['exceptionDetails'].get('text')}")
        facts = found["result"]["value"]
        dom = browser.send(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            session,
        )["result"]["value"]
        (out / "dom.html").write_text("<!doctype html>\n" + dom, encoding="utf-8")
        size = browser.send("Page.getLayoutMetrics", {}, session)["cssContentSize"]
        shot_height = min(int(size["height"]), MAX_SCREENSHOT_HEIGHT)
        shot = browser.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": max(int(size["width"]), 1),
                    "height": max(shot_height, 1),
                    "scale": 1,
                },
            },
            session,
        )
        (out / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
        facts["truncated_screenshot"] = size["height"] > MAX_SCREENSHOT_HEIGHT
        facts["errors"] = _browser_errors(browser.events)
        facts["requests"] = [
            e["params"]["request"]["url"]
            for e in browser.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        return facts
    finally:
        browser.close()


def _browser_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append(f"{entry['text']} ({entry.get('url', '')})".replace(" ()", ""))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            )
    return errors


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def check(page: Path, out: Path, binary: str | None = None, timeout: float = 60.0, report: bool = False) -> Findings:
    """Render ``page`` and list its problems (empty when it rendered); ``report``: a benchmark report's own
    parts (interval chart, side-by-side clips) must be there too."""
    from PIL import Image

    if not page.is_file():
        raise FileNotFoundError(f"no report at {page}")
    out.mkdir(parents=True, exist_ok=True)
    facts = render(page, out, find_chromium(binary), timeout)
    problems = []

    with Image.open(out / "screenshot.png") as shot:
        extrema = shot.convert("RGB").getextrema()
        facts["screenshot"] = shot.size
    if facts["textLength"] == 0 or all(low == high for low, high in extrema):
        problems.append(
            f"the page is blank (visible text: {facts['textLength']} characters; screenshot of one colour)"
        )
    for table in facts["tables"]:
        if table["dataRows"] == 0:
            where = f" under '{table['heading']}'" if table["heading"] else ""
            problems.append(
                f"table {table['index'] + 1}{where} has no data rows ({table['rows']} rows in all)"
            )
    for image in facts["images"]:
        if image["width"] == 0 or image["height"] == 0:
            problems.append(f"image {image['index'] + 1} ('{image['alt']}', {image['src']}) did not load")
    for item in facts["links"] + facts["resources"]:
        path = _local_path(item["url"])
        if path is None:
            continue
        label = item.get("text") or item.get("tag")
        if not path.exists():
            problems.append(f"linked file missing: {path} ('{label}')")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"linked file is empty: {path} ('{label}')")
    for image in facts["linkedImages"]:
        path = _local_path(image["url"])
        if (image["width"] == 0 or image["height"] == 0) and (path is None or path.is_file()):
            problems.append(f"linked image does not decode: {unquote(image['url'])}")
    for resource in facts["resources"]:
        if urlparse(resource["url"]).scheme in ("http", "https"):
            problems.append(f"<{resource['tag']}> loaded from the network: {resource['url']}")
    for url in facts["requests"]:
        if urlparse(url).scheme in ("http", "https", "ws", "wss"):
            problems.append(f"the page requested {url} (a report must be self-contained)")
    for error in facts["errors"]:
        problems.append(f"browser error: {error}")
    if report:
        if facts["intervalCharts"] == 0:
            problems.append("no chart of paired intervals rendered (section 'Matched speed, paired')")
        if facts["clips"] == 0:
            problems.append("no side-by-side clip rendered (section 'Side by side')")
    warnings = [
        f"{e['tag']}{' under ' + repr(e['heading']) if e['heading'] else ''} reaches {e['right']} px in a "
        f"{facts['viewport']} px window (horizontal scrolling)"
        for e in facts["overflow"]
    ]
    return Findings(sorted(set(problems), key=problems.index), warnings, facts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the report's HTML file")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report-check"),
        help="folder for screenshot.png and dom.html (default ./report-check)",
    )
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM, else chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each browser step")
    parser.add_argument("--report", action="store_true",
                        help="a taocache benchmark report: also require its interval chart and side-by-side clips")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        findings = check(args.page, args.out, args.chromium, args.timeout, args.report)
    except (BrowserError, FileNotFoundError) as error:
        print(f"check_report: could not check {args.page}: {error}", file=sys.stderr)
        return 2
    facts = findings.facts
    seconds = time.perf_counter() - start
    summary = (
        f"{len(facts['tables'])} tables, {len(facts['images'])} images, {len(facts['links'])} links, "
        f"{facts['intervalCharts']} interval charts, {facts['clips']} clips; "
        f"screenshot {facts['screenshot'][0]}x{facts['screenshot'][1]}"
        + (" (cut at the maximum height)" if facts["truncated_screenshot"] else "")
        + f" and DOM in {args.out}; {seconds:.1f} s"
    )
    for warning in findings.warnings:
        print(f"check_report: warning: {warning}", file=sys.stderr)
    if findings.problems:
        print(
            f"check_report: {args.page} did not render cleanly ({len(findings.problems)} problems):",
            file=sys.stderr,
        )
        for problem in findings.problems:
            print(f"  - {problem}", file=sys.stderr)
        print(f"  ({summary})", file=sys.stderr)
        return 1
    print(f"check_report: {args.page} rendered: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
