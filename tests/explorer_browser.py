"""Open a model with node data in Model Explorer, in headless Chromium, and read what it shows.

Needs ai-edge-model-explorer, playwright (the Python package only: it drives the system's
Chromium, it downloads no browser) and a `chromium` executable (Debian package `chromium`;
`make test` installs it when it can). `missing()` says which is absent.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("QENGINE_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser")

# The side panel's last table (per-node data; the one before it summarises the root layers):
# its header cells, and per row [#, node label, one cell per node data provider]
_READ_TABLE = """() => {
  const tables = Array.from(document.querySelectorAll('table'))
                      .filter(t => t.querySelector('td.node-label'));
  const table = tables[tables.length - 1];
  if (!table) return {header: [], rows: []};
  const cells = (r, tag) => Array.from(r.querySelectorAll(tag)).map(c => c.innerText.trim());
  return {
    header: cells(table.querySelector('tr'), 'th'),
    rows: Array.from(table.querySelectorAll('tr')).filter(r => r.querySelector('td.node-label'))
               .map(r => cells(r, 'td')),
  };
}"""


def missing() -> str | None:
    for module, package in (("model_explorer", "ai-edge-model-explorer"),
                            ("playwright", "playwright")):
        if importlib.util.find_spec(module) is None:
            return f"needs {package} (pip install 'qengine[explorer]' and the dev extra)"
    if CHROMIUM is None:
        return "needs a chromium executable (Debian: apt-get install chromium; make test tries)"
    return None


@contextmanager
def server(model: Path, node_data: list[Path]):
    """Model Explorer's server on a free port in a subprocess; yields the page's URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys; from qengine.research.model_explorer import serve; "
            "serve(sys.argv[1], sys.argv[2:-1], port=int(sys.argv[-1]), open_browser=False)")
    process = subprocess.Popen([sys.executable, "-c", code, str(model),
                                *map(str, node_data), str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield _url(process, port)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _url(process, port: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        match = re.search(rf"http://localhost:{port}/\S+", line)
        if match:
            return match.group(0)
    raise RuntimeError("Model Explorer's server did not start:\n" + "".join(seen[-20:]))


def node_table(url: str, screenshot: Path | None = None, expand: bool = False) -> dict:
    """The side panel's node data table once the graph has loaded: {"header", "rows"}."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--enable-unsafe-swiftshader"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(url)
            page.wait_for_selector("td.node-label", timeout=90_000)
            if expand:  # open every layer so the coloured op nodes show in the screenshot
                page.click("mat-icon.toolbar-icon.expand-all")
                page.mouse.move(700, 600)  # away from the button: no tooltip in the picture
            page.wait_for_timeout(2000)
            if screenshot:
                page.screenshot(path=str(screenshot))
            return page.evaluate(_READ_TABLE)
        finally:
            browser.close()
