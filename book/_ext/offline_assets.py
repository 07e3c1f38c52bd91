"""Serve MathJax and the Colab badge from the built site instead of the internet, so the book works offline
(a classroom without internet, a downloaded copy of _build/html).

MathJax 3 comes from the pinned pip package ``sphinx-mathjax-offline`` (its files only: the package's own
folder name has a hyphen and cannot be imported as a Sphinx extension). At the end of a successful build
its ``static/mathjax`` folder is copied to ``_static/mathjax`` and every page loads ``_static/mathjax/tex-chtml.js``;
``tests/test_site.py`` checks that no page asks for anything outside the site and that equations render
with the network off.

The notebooks link Google's Colab badge image (that is what Colab and GitHub readers see); in the built
pages it is replaced by the same badge drawn locally (``book/_static/colab-badge.svg``), so a page offline
shows no broken image. It also removes repeated inline scripts that made every page log an error.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from sphinx.util.fileutil import copy_asset

MATHJAX_ENTRY = "tex-chtml.js"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = Path(__file__).resolve().parents[1] / "_static" / "colab-badge.svg"


def mathjax_dir() -> Path:
    try:
        dist = importlib.metadata.distribution("sphinx-mathjax-offline")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "the offline MathJax comes from the pip package sphinx-mathjax-offline, which is not installed; "
            "run make env (it installs requirements.txt)"
        ) from None
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (folder / MATHJAX_ENTRY).is_file():
        raise RuntimeError(
            f"sphinx-mathjax-offline is installed but {folder / MATHJAX_ENTRY} is missing"
        )
    return folder


def _copy(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    copy_asset(str(mathjax_dir()), str(out / "_static" / "mathjax"))
    copy_asset(str(LOCAL_BADGE), str(out / "_static"))
    for page in out.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = _unique_inline_scripts(text)
        if COLAB_BADGE in fixed:
            local = (
                Path("../" * (len(page.relative_to(out).parts) - 1))
                / "_static"
                / LOCAL_BADGE.name
            )
            fixed = fixed.replace(COLAB_BADGE, local.as_posix())
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def _unique_inline_scripts(html: str) -> str:
    """Drop repeated one-line inline scripts: in a jupyter-book build sphinx-thebe's and sphinx-togglebutton's
    configuration scripts are written twice, and the second ``const THEBE_JS_URL`` fails on every page
    ("Identifier 'THEBE_JS_URL' has already been declared")."""
    seen, lines = set(), []
    for line in html.splitlines(keepends=True):
        bare = line.strip()
        if bare.startswith("<script>") and bare.endswith("</script>"):
            if bare in seen:
                continue
            seen.add(bare)
        lines.append(line)
    return "".join(lines)


def setup(app):
    mathjax_dir()  # fail early, with the message above, rather than build a site whose equations do not render
    app.config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
