"""Pages a reader can read at any width: nothing on a page is wider than its column.

The content column of the theme shows about 67 characters of code at its default size, and a phone far
fewer. This extension adds one style sheet and one script to every page (both in ``readable/``):

- code and printed output wrap instead of scrolling sideways, and on a desktop the code font is a little
  smaller so that the book's 88-column code fits without wrapping;
- a table wider than its column lets its cells break long words, so that it fits instead of scrolling;
- an equation (displayed, or inline in its paragraph) wider than its column is drawn smaller until it
  fits (MathJax 3 cannot break lines); the chapters split long equations over lines with ``aligned``
  so this stays a last resort.

``tests/test_site.py`` opens every page at a desktop and at a phone width and checks that no code block,
table or equation is wider than its container (scrollWidth <= clientWidth).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent / "readable"


def _static(app):
    app.config.html_static_path.append(str(HERE))


def setup(app):
    app.connect("builder-inited", _static)
    app.add_css_file("readable.css")
    app.add_js_file("fit_width.js")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
