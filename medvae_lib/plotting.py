"""Figures that read at the book's column width.

A page shows a figure at most as wide as its content column, ``COLUMN_PX`` CSS pixels at the desktop
width (the width ``tests/test_site.py`` measures). Jupyter writes a figure of ``w`` inches at ``dpi``
dots per inch as about ``w * dpi`` pixels (cropped to what is drawn), so a wider figure is shrunk on
the page, and its text with it. :func:`small_text` lists the text of a figure that the page would draw
smaller than ``MIN_PT`` points; the tests call it on the figures the chapters draw.
"""

from __future__ import annotations

COLUMN_PX = 688  # the book's content column at a 1280-pixel-wide window
MIN_PT = 9.0  # the smallest text a figure may show on the page


def page_scale(fig, column_px: int = COLUMN_PX) -> float:
    """How much the page shrinks ``fig`` (1.0: shown at its own size)."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    width_px = (box.width + 0.2) * fig.dpi  # saved with bbox_inches="tight", pad 0.1 in
    return min(1.0, column_px / width_px)


def small_text(
    fig, column_px: int = COLUMN_PX, min_pt: float = MIN_PT
) -> list[tuple[str, float]]:
    """Every visible text of ``fig`` drawn smaller than ``min_pt`` points on the page, with its
    size there (1 pt = 4/3 CSS pixels; a font of ``s`` points is ``s * dpi / 72`` pixels)."""
    from matplotlib.text import Text

    scale = page_scale(fig, column_px)
    renderer = fig.canvas.get_renderer()
    hidden = set()  # tick labels of axes that are not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if not ax.axison or not axis.get_visible():
                hidden.update(axis.get_ticklabels(which="both"))
    found = []
    for text in fig.findobj(Text):
        if text in hidden or not text.get_visible() or not text.get_text().strip():
            continue
        if text.get_window_extent(renderer).width == 0:
            continue
        on_page = text.get_fontsize() * fig.dpi / 72 * scale * 0.75
        if on_page < min_pt - 1e-6:
            found.append((text.get_text(), round(on_page, 1)))
    return found
