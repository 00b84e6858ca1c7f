"""The report as PDF through Qt's own printing: QTextDocument lays the report's HTML out on A4 pages and
QPdfWriter writes them (no extra PDF dependency).

QTextDocument draws no SVG, so each chart's SVG (the same text the HTML report inlines) is drawn by QSvgRenderer
into an image at twice its size (sharp in print) and handed to the document as an image resource. The command
line (``optiondesk report --out FILE.pdf``) calls :func:`write_pdf` from a process without a window: it makes an
offscreen ``QGuiApplication`` for the rest of that process. The engine never imports this module at import
time (the engine stays headless); the window calls it directly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtSvg

from engine.reports.data import ReportData
from engine.reports.html import charts, render_html

_SIZE_RE = re.compile(r'<svg[^>]*\bwidth="(\d+)"[^>]*\bheight="(\d+)"')
_APP: Any = None
#: the width the report is laid out at, in document units (a chart is 720 wide)
LAYOUT_WIDTH = 760.0


def ensure_gui_application() -> QtCore.QCoreApplication:
    """The process's Qt application; an offscreen QGuiApplication when there is none (command line)."""
    global _APP
    app = QtGui.QGuiApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # printing needs no display
        _APP = QtGui.QGuiApplication(["optiondesk-report"])
        app = _APP
    return app


def svg_to_image(svg: str, scale: float = 2.0) -> QtGui.QImage:
    m = _SIZE_RE.search(svg)
    w, h = (int(m.group(1)), int(m.group(2))) if m else (720, 220)
    renderer = QtSvg.QSvgRenderer(QtCore.QByteArray(svg.encode("utf-8")))
    if not renderer.isValid():
        raise ValueError("a report chart is not valid SVG")
    image = QtGui.QImage(int(w * scale), int(h * scale), QtGui.QImage.Format.Format_ARGB32)
    image.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(image)
    try:
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
    finally:
        painter.end()
    return image


def build_document(data: ReportData) -> QtGui.QTextDocument:
    """The report as a QTextDocument with its charts as image resources."""
    ensure_gui_application()
    doc = QtGui.QTextDocument()
    sizes: dict[str, tuple[int, int]] = {}
    for name, svg in charts(data).items():
        m = _SIZE_RE.search(svg)
        sizes[name] = (int(m.group(1)), int(m.group(2))) if m else (720, 220)
        doc.addResource(QtGui.QTextDocument.ResourceType.ImageResource, QtCore.QUrl(f"chart-{name}.png"),
                        svg_to_image(svg))

    def image(name: str, _svg: str) -> str:
        w, h = sizes[name]
        return f'<img src="chart-{name}.png" width="{w}" height="{h}">'

    doc.setDefaultFont(QtGui.QFont("DejaVu Sans", 8))
    doc.setHtml(render_html(data, image=image))
    return doc


def write_pdf(data: ReportData, out: str | os.PathLike[str]) -> Path:
    """Write the report to ``out`` (A4); the file appears whole or not at all. Raises OSError on failure."""
    path = Path(out)
    partial = path.with_name(f".{path.name}.partial")
    doc = build_document(data)
    writer = QtGui.QPdfWriter(str(partial))
    writer.setTitle(f"Optiondesk report {data.start} to {data.end}")
    writer.setCreator("Optiondesk")
    writer.setPageSize(QtGui.QPageSize(QtGui.QPageSize.PageSizeId.A4))
    writer.setPageMargins(QtCore.QMarginsF(12, 12, 12, 12), QtGui.QPageLayout.Unit.Millimeter)
    writer.setResolution(150)
    # lay the document out on a page LAYOUT_WIDTH units wide (the 720-unit charts and the tables fit) with the
    # printable area's proportions; print_ then scales each page onto the paper
    paint = writer.pageLayout().paintRect(QtGui.QPageLayout.Unit.Point)
    doc.setPageSize(QtCore.QSizeF(LAYOUT_WIDTH, LAYOUT_WIDTH * paint.height() / paint.width()))
    doc.print_(writer)
    del writer  # the PDF is finished when the writer is destroyed
    try:
        if not partial.is_file() or partial.stat().st_size == 0:
            raise OSError(f"Qt wrote no PDF to {path} (is the folder writable and the disk not full?)")
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
    return path
