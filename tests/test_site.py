"""The rendered book tested in a real browser (headless Chromium driven by Playwright), with the network off.

The book is built from the committed notebooks into a temporary folder; every page of the table of
contents is then opened offline and must load without console errors, with every image decoded, every
equation rendered by MathJax (served by the site itself), every internal link resolving to a page and
anchor that exist, and the Colab launch button pointing at the page's own notebook. A screenshot of each
page is saved under ``_build/screenshots/`` for a reviewer. A second test opens chapter 1 in JupyterLab,
runs all its cells as a reader would and finds no error output.

Without a browser the tests are skipped, saying so; under CI (``CI=true``) a missing browser is a failure
(``make test`` installs Debian's ``chromium`` first when it can).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "book" / "_config.yml").read_text())
SCREENSHOTS = REPO / "_build" / "screenshots"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    message = "no Chromium found (Debian: apt-get install chromium; make test installs it when run as root)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (make env)"
    )
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(
                executable_path=executable, args=["--no-sandbox"]
            )
        except (
            Exception
        ) as err:  # a browser that cannot start is the same as no browser
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                raise
            pytest.skip(f"{executable} could not be started: {err}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The book built from the committed notebooks, strictly, in a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(REPO),
        "--config",
        str(REPO / "book" / "_config.yml"),
        "--toc",
        str(REPO / "book" / "_toc.yml"),
        "--path-output",
        str(out),
        "--warningiserror",
        "--nitpick",
        "--keep-going",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, (
        f"the book does not build:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return out / "_build" / "html"


def _pages(html: Path) -> list[Path]:
    toc = yaml.safe_load((REPO / "book" / "_toc.yml").read_text())
    files = [toc["root"]] + [
        c["file"] for part in toc.get("parts", []) for c in part["chapters"]
    ]
    return [html / f"{f}.html" for f in files]


def _open(page, path: Path, outside: list[str]):
    page.goto(path.as_uri(), wait_until="load")
    # MathJax typesets after load; wait until it has finished (or there is no MathJax on the page).
    page.wait_for_function(
        "() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)",
        timeout=30_000,
    )
    page.evaluate("() => window.MathJax ? window.MathJax.startup.promise : null")
    assert not outside, (
        f"{path.name} asked for files outside the site (it must work offline): {outside}"
    )


def _anchors(path: Path, cache: dict) -> set[str]:
    if path not in cache:
        cache[path] = set(
            re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8"))
        )
    return cache[path]


def test_every_page_works_offline(browser, site):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    repo_url = CONFIG["repository"]["url"].rstrip("/")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    github = urlparse(repo_url).path.strip("/")
    branch = CONFIG["repository"].get("branch", "main")
    anchors: dict = {}
    pages = _pages(site)
    assert len(pages) >= 5 and all(p.is_file() for p in pages), [
        p.name for p in pages if not p.is_file()
    ]
    for path in pages:
        page = context.new_page()
        errors, outside = [], []
        page.on(
            "console",
            lambda m, errors=errors: (
                errors.append(m.text) if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.on(
            "request",
            lambda r, outside=outside: (
                outside.append(r.url) if not r.url.startswith("file:") else None
            ),
        )
        _open(page, path, outside)
        name = path.relative_to(site).with_suffix("").as_posix().replace("/", "__")
        page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
        assert not errors, f"{path.name}: console errors {errors}"

        broken = page.evaluate(
            "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not broken, f"{path.name}: images that did not load or decode: {broken}"

        maths = page.evaluate(
            """() => [...document.querySelectorAll('.math')].map(e => ({
                   rendered: e.querySelector('mjx-container') !== null,
                   error: e.querySelector('mjx-merror') !== null,
                   tex: e.textContent.slice(0, 60)}))"""
        )
        unrendered = [m["tex"] for m in maths if not m["rendered"] or m["error"]]
        assert not unrendered, (
            f"{path.name}: equations MathJax did not render: {unrendered[:5]}"
        )

        for href in page.evaluate(
            "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"
        ):
            url = urlparse(href)
            if url.scheme != "file":
                continue
            target = Path(unquote(url.path))
            assert target.exists(), f"{path.name}: link to a missing file {target}"
            if url.fragment and target.suffix == ".html":
                assert url.fragment in _anchors(target, anchors), (
                    f"{path.name}: link to a missing anchor {href}"
                )

        if path.parent.name == "notebooks":
            launch = page.evaluate(
                "() => [...document.querySelectorAll('a[href*=\"colab.research.google.com/github\"]')].map(a => a.href)"
            )
            expected = (
                f"{colab}/github/{github}/blob/{branch}/notebooks/{path.stem}.ipynb"
            )
            assert launch and set(launch) == {expected}, (
                f"{path.name}: Colab links {launch}, expected {expected}"
            )
        page.close()
    context.close()


# The widths a reader reads at: the default desktop window and a phone (390 CSS pixels, as an
# iPhone 12-15). On each, no code block, printed output, table, equation or figure may be wider
# than its container, and the page itself may not scroll sideways.
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
WIDE = """() => {
  // inline equations are measured by their right edge only (a glyph's overhang makes their
  // scrollWidth a few pixels larger than their box without anything being cut off)
  const kinds = ['pre', '.highlight', '.cell_output', 'table', '.pst-scrollable-table-container',
                 'div.math', 'mjx-container[display="true"]', 'img'];
  const found = [];
  for (const el of document.querySelectorAll(kinds.map(k => 'article ' + k).join(', '))) {
    if (el.getClientRects().length === 0) continue;  // not shown (a closed details block)
    const box = el.getBoundingClientRect(), outer = el.parentElement.getBoundingClientRect();
    if (el.scrollWidth > el.clientWidth + 1 || box.right > outer.right + 1) {
      found.push(`${el.tagName.toLowerCase()}.${el.className}: ${el.scrollWidth} px of content `
        + `in ${el.clientWidth} px, right edge ${Math.round(box.right - outer.right)} px past its `
        + `container: "${(el.textContent || '').trim().slice(0, 60)}"`);
    }
  }
  for (const el of document.querySelectorAll('article mjx-container:not([display="true"])')) {
    const holder = el.closest('p, li, td, th, dd, dt, div');
    if (el.getClientRects().length === 0 || !holder) continue;
    const past = el.getBoundingClientRect().right - holder.getBoundingClientRect().right;
    if (past > 1) {
      found.push(`inline equation ${Math.round(past)} px past its paragraph: `
        + `"${el.textContent.slice(0, 60)}"`);
    }
  }
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth) {
    found.push(`the page scrolls sideways: ${page.scrollWidth} px in ${page.clientWidth} px`);
  }
  return found;
}"""
# On a desktop an equation may be drawn smaller to fit (book/_ext/readable/fit_width.js), but
# not below this share of its size: a longer one must be split over lines (aligned).
DESKTOP_SMALLEST_EQUATION = 0.75


@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_wider_than_its_column(browser, site, width):
    """What the site shows fits: code wraps, tables fit, equations fit (tests the book's CSS and
    fit_width.js together with the chapters' content)."""
    w, h = WIDTHS[width]
    context = browser.new_context(offline=True, viewport={"width": w, "height": h})
    problems = {}
    for path in _pages(site):
        page = context.new_page()
        _open(page, path, [])
        page.wait_for_timeout(200)  # fit_width.js runs when MathJax has finished
        found = page.evaluate(WIDE)
        if width == "desktop":
            scales = page.evaluate(
                """() => [...document.querySelectorAll('mjx-container[display="true"]')]
                     .filter(e => e.style.fontSize)
                     .map(e => [parseFloat(e.style.fontSize) / 100, e.textContent.slice(0, 50)])"""
            )
            found += [
                f"an equation drawn at {scale:.0%} of its size: split it ({text!r})"
                for scale, text in scales
                if scale < DESKTOP_SMALLEST_EQUATION
            ]
        if found:
            problems[path.name] = found[:5]
        page.close()
    context.close()
    assert not problems, f"wider than the column at {w} px: " + json.dumps(
        problems, indent=1, ensure_ascii=False
    )


def test_the_width_check_sees_an_overflow(browser, tmp_path):
    """The check above can fail: a page with a wide code line, a wide table and the book's style
    sheet missing is caught."""
    wide = "x" * 300
    page_file = tmp_path / "wide.html"
    page_file.write_text(
        "<html><body><article style='width:300px'>"
        f"<pre style='overflow:auto'>{wide}</pre>"
        "<div style='overflow:auto'><table><tr>"
        + "".join(f"<td>column_{i}_long</td>" for i in range(20))
        + "</tr></table></div></article></body></html>"
    )
    context = browser.new_context(offline=True, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(page_file.as_uri())
    found = page.evaluate(WIDE)
    context.close()
    assert any(f.startswith("pre.") for f in found), found
    assert any(f.startswith("table.") or f.startswith("div.") for f in found), found


def test_math_renders_on_the_theory_chapter(browser, site):
    """A page full of equations really gets typeset output (not only the absence of errors)."""
    context = browser.new_context(offline=True)
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith("file:") else None,
    )
    _open(page, site / "notebooks" / "06_multimodal_theory.html", outside)
    assert (
        page.evaluate("() => document.querySelectorAll('mjx-container').length") >= 20
    )
    context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_runs_chapter_1(browser, tmp_path):
    """A reader opens chapter 1 in JupyterLab (make lab), runs all cells, and sees no error; its
    exercises, solutions, citations and library code read as the book's do (no MyST syntax)."""
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(REPO / "notebooks" / "01_data_prep.ipynb", work)
    port, token, log = _free_port(), "book-test", tmp_path / "jupyterlab.log"
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell rendered at once (JupyterLab renders only the visible ones by default)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
    }
    lab = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("jupyter")),
            "lab",
            "--no-browser",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            "--ServerApp.ip=127.0.0.1",
            "--LabApp.expose_app_in_browser=True",
            "--allow-root",  # CI containers run as root; JupyterLab refuses to start there without it
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(
                f"JupyterLab did not start within 60 s:\n{log.read_text()[-2000:]}"
            )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/lab/tree/01_data_prep.ipynb?token={token}")
        # The menu's commands, through the application object JupyterLab exposes (expose_app_in_browser):
        # "Run > Run All Cells" is notebook:run-all-cells, "File > Save" is docmanager:save.
        page.wait_for_function(
            """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                       const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                       return k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
            timeout=120_000,
        )
        finished = page.evaluate(
            "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "jupyterlab_01_data_prep.png")
        code = [
            c
            for c in json.loads((work / "01_data_prep.ipynb").read_text())["cells"]
            if c["cell_type"] == "code"
        ]
        errors = [
            o
            for c in code
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, (
            f"chapter 1 raised in JupyterLab: {[e['ename'] + ': ' + e['evalue'] for e in errors]}"
        )
        unrun = [
            c["source"][:60]
            for c in code
            if c["source"] and not c.get("execution_count")
        ]
        assert not unrun, f"cells JupyterLab did not run: {unrun}"
        assert finished is True, (
            "JupyterLab reports that running all cells did not succeed"
        )
        shown = page.evaluate(
            """() => ({
                 text: [...document.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown')]
                         .map(e => e.innerText).join('\\n'),
                 headings: [...document.querySelectorAll('.jp-RenderedMarkdown h3')]
                             .map(e => e.innerText.replace(/\\u00b6/g, '').trim()),
                 code: [...document.querySelectorAll('.jp-OutputArea-output pre code')]
                         .map(e => e.innerText) })"""
        )
        raw = re.findall(
            r"\{(?:exercise|solution[\w-]*|cite:\w|literalinclude)\}?", shown["text"]
        )
        assert not raw, f"JupyterLab shows MyST syntax raw: {raw[:5]}"
        exercises = [h for h in shown["headings"] if h.startswith("Exercise 1.")]
        assert exercises[:2] == [
            "Exercise 1.1: What a normalisation keeps",
            "Exercise 1.2: Which image sides fit a model",
        ], shown["headings"]
        assert "Solution to Exercise 1.1" in shown["text"]
        assert "Yang et al., 2023" in shown["text"], "citations read as author and year"
        assert any(c.lstrip().startswith("def verify_file(") for c in shown["code"]), (
            "the library code chapter 1 shows is not rendered as code in JupyterLab"
        )
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
