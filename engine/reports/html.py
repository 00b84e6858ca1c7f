"""The report as one self-contained HTML file: tables and inline SVG charts, no scripts, no external files.

The same HTML feeds the PDF: Qt's rich-text engine (QTextDocument) does not draw SVG, so for the PDF the
charts are referenced as images (``<img src="chart:equity">``) that the renderer in ``app/report_pdf.py`` draws
from the same SVG text. The markup keeps to what both a browser and QTextDocument lay out well: headings,
paragraphs and tables with ``cellpadding``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from engine.reports.data import ReportData

GREEN, RED, BLUE, GREY = "#1e8a4c", "#c0392b", "#2f6db5", "#8a8f98"
GREEKS = (("delta", "Delta (shares)"), ("gamma", "Gamma (shares per $1)"), ("theta", "Theta ($ per day)"),
          ("vega", "Vega ($ per vol point)"))


def _money(v: float, sign: bool = False) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:+,.2f}" if sign else f"{v:,.2f}"


def _fmt_axis(v: float) -> str:
    a = abs(v)
    if a < 0.005:
        return "0.00"  # not "-0.00" for a midpoint that is zero but for rounding
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _thin(pts: list[tuple[datetime, float]], max_points: int) -> list[tuple[datetime, float]]:
    """At most ``max_points`` points, keeping each bucket's low and high in time order: a year of minute rows
    draws the same picture (every peak and trough) from a few thousand points instead of a 10 MB polyline."""
    if len(pts) <= max_points:
        return pts
    buckets = max_points // 2
    out: list[tuple[datetime, float]] = []
    for b in range(buckets):
        chunk = pts[b * len(pts) // buckets:(b + 1) * len(pts) // buckets]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        out.extend(chunk[i] for i in sorted({lo, hi}))
    if out[-1] is not pts[-1]:
        out.append(pts[-1])
    return out


def line_chart(points: Sequence[tuple[datetime, float]], *, title: str, width: int = 720, height: int = 220,
               color: str = BLUE, fill_to_zero: bool = False, percent: bool = False) -> str:
    """An SVG line chart with a labelled y axis (min, mid, max) and the first and last time on the x axis."""
    pts = _thin([(t, v) for t, v in points if math.isfinite(v)], max(2, width * 2))
    esc = html.escape
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
            f'<text x="8" y="16" font-size="13" font-weight="bold" fill="#222">{esc(title)}</text>')
    if len(pts) < 2:
        return head + (f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{GREY}">'
                       "not enough history in this period</text></svg>")
    left, right, top, bottom = 70, 12, 28, 26
    pw, ph = width - left - right, height - top - bottom
    t0, t1 = pts[0][0].timestamp(), pts[-1][0].timestamp()
    vals = [v for _, v in pts]
    lo, hi = min(vals), max(vals)
    if fill_to_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    span_t = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return left + (t - t0) / span_t * pw

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * ph

    parts = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#d0d4da"/>']
    for v in (lo, (lo + hi) / 2, hi):
        label = f"{v * 100:.1f}%" if percent else _fmt_axis(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eceef1"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{esc(label)}</text>')
    if lo < 0 < hi:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="{GREY}" '
                     'stroke-dasharray="4 3"/>')
    coords = " ".join(f"{x(t.timestamp()):.1f},{y(v):.1f}" for t, v in pts)
    if fill_to_zero:
        parts.append(f'<polygon points="{x(t0):.1f},{y(0):.1f} {coords} {x(t1):.1f},{y(0):.1f}" fill="{color}" '
                     'fill-opacity="0.25" stroke="none"/>')
    parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.8"/>')
    fmt = "%Y-%m-%d %H:%M" if t1 - t0 < 3 * 86400 else "%Y-%m-%d"
    parts.append(f'<text x="{left}" y="{height - 8}" fill="#555">'
                 f'{esc(pts[0][0].astimezone(UTC).strftime(fmt))} UTC</text>'
                 f'<text x="{left + pw}" y="{height - 8}" text-anchor="end" fill="#555">'
                 f'{esc(pts[-1][0].astimezone(UTC).strftime(fmt))} UTC</text></svg>')
    return "".join(parts)


def charts(data: ReportData) -> dict[str, str]:
    """Every chart of the report as SVG text, by name."""
    out = {"equity": line_chart(data.equity, title="Equity (net liquidation, $)", color=BLUE),
           "drawdown": line_chart(data.drawdown(), title="Drawdown from peak", color=RED, fill_to_zero=True,
                                  percent=True)}
    for key, title in GREEKS:
        out[key] = line_chart([(r.ts, getattr(r, key)) for r in data.history], title=title, width=355, height=180,
                              color=GREEN if key in ("theta",) else BLUE)
    return out


_CSS = """
body { font-family: sans-serif; color: #1d2127; margin: 24px; font-size: 10pt; }
h1 { font-size: 18pt; margin-bottom: 2px; }
h2 { font-size: 13pt; margin-top: 18px; border-bottom: 1px solid #ccd; }
table.data { border-collapse: collapse; }
table.data th { background-color: #eef1f5; text-align: left; }
table.data td, table.data th { border: 1px solid #d0d4da; }
td.num, th.num { text-align: right; }
.pos { color: #1e8a4c; } .neg { color: #c0392b; } .muted { color: #6b7280; }
"""


def _cls(v: float) -> str:
    return "pos" if v > 0 else "neg" if v < 0 else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], numeric: set[int],
           nowrap: frozenset[int] = frozenset()) -> str:
    num_attr = ' class="num" align="right"'
    head = "".join(f"<th{num_attr if i in numeric else ''}>{html.escape(h)}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, (text, cls) in enumerate(row):
            attrs = (' class="num" align="right"' if i in numeric else "") + (" nowrap" if i in nowrap else "")
            if cls:
                attrs = attrs.replace('class="num"', f'class="num {cls}"') if i in numeric else attrs + f' class="{cls}"'
            cells.append(f"<td{attrs}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="data" border="1" cellspacing="0" cellpadding="4" width="100%"><tr>{head}</tr>'
            + "".join(body) + "</table>")


def _pct(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:+.2f}%"


def _summary(s: dict[str, float]) -> str:
    """The headline numbers as label/value pairs, two per row (ten columns side by side do not fit a page)."""
    pct = _pct
    items = [("Start equity", _money(s["start_equity"]), ""), ("End equity", _money(s["end_equity"]), ""),
             ("Change", _money(s["change"], True), _cls(s["change"])),
             ("Return", pct(s["return_pct"]), _cls(s["return_pct"])),
             ("Max drawdown", pct(s["max_drawdown_pct"]), "neg" if s["max_drawdown_pct"] < 0 else ""),
             ("Realised P&L", _money(s["realized"], True), _cls(s["realized"])),
             ("Fees", _money(s["fees"]), ""), ("Net realised", _money(s["net_realized"], True), _cls(s["net_realized"])),
             ("Orders", f"{s['orders']:.0f}", ""), ("Fills", f"{s['fills']:.0f}", "")]
    rows = []
    for i in range(0, len(items), 2):
        cells = "".join(f'<th align="left">{html.escape(k)}</th><td class="num {c}" align="right">{html.escape(v)}</td>'
                        for k, v, c in items[i:i + 2])
        rows.append(f"<tr>{cells}</tr>")
    return '<table class="data" border="1" cellspacing="0" cellpadding="4" width="100%">' + "".join(rows) + "</table>"


def render_html(data: ReportData, *, image: Callable[[str, str], str] | None = None, max_trades: int = 500) -> str:
    """The report's HTML. ``image(name, svg)`` returns the markup for a chart (default: the inline SVG)."""
    svgs = charts(data)
    draw = image or (lambda _name, svg: svg)
    s = data.summary()
    esc = html.escape
    scope = (f"account {esc(data.account_id)} ({esc(data.mode or '')})" if data.account_id
             else "no account history in this period")
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Optiondesk report {data.start} to "
             f"{data.end}</title><style>{_CSS}</style></head><body>",
             f"<h1>Performance report {data.start} to {data.end}</h1>",
             f'<p class="muted">{scope} · generated {data.generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC · '
             "times in UTC</p>",
             "<h2>Summary</h2>",
             _summary(s),
             "<h2>Equity and drawdown</h2>", f"<p>{draw('equity', svgs['equity'])}</p>",
             f"<p>{draw('drawdown', svgs['drawdown'])}</p>",
             "<h2>Greeks over time</h2>",
             '<table cellspacing="0" cellpadding="2">'
             f"<tr><td>{draw('delta', svgs['delta'])}</td><td>{draw('gamma', svgs['gamma'])}</td></tr>"
             f"<tr><td>{draw('theta', svgs['theta'])}</td><td>{draw('vega', svgs['vega'])}</td></tr></table>"]
    titles = {"underlying": "By underlying", "strategy": "By strategy", "regime": "By market regime"}
    parts.append("<h2>Attribution of realised P&amp;L</h2>")
    if not data.trades:
        parts.append('<p class="muted">No fills in this period.</p>')
    for dim, title in titles.items():
        agg = data.attribution.get(dim, {})
        if not agg or (dim == "regime" and set(agg) == {"—"}):
            continue
        parts.append(f"<h3>{title}</h3>")
        parts.append(_table([title.removeprefix("By ").capitalize(), "Realised", "Fees", "Net", "Fills"],
                            [[(k, ""), (_money(a["realized"], True), _cls(a["realized"])), (_money(a["fees"]), ""),
                              (_money(a["net"], True), _cls(a["net"])), (f"{a['fills']:.0f}", "")]
                             for k, a in agg.items()], {1, 2, 3, 4}))
    parts.append("<h2>Trades and fees</h2>")
    if data.trades:
        shown = data.trades[-max_trades:]
        if len(shown) < len(data.trades):
            parts.append(f'<p class="muted">The last {len(shown)} of {len(data.trades)} fills.</p>')
        parts.append(_table(
            ["Time (UTC)", "Order", "Symbol", "Qty", "Price", "Fee", "Realised", "Strategy"],
            [[(f"{t.ts.astimezone(UTC):%Y-%m-%d %H:%M:%S}", ""), (t.order_id[:12], ""), (t.symbol, ""),
              (f"{t.quantity:+d}", ""), (f"{t.price:,.2f}", ""), (f"{t.fee:,.2f}", ""),
              (_money(t.realized, True) if t.realized else "", _cls(t.realized)), (t.strategy, "")]
             for t in shown], {3, 4, 5, 6}, frozenset({0, 1, 2, 3, 4, 5, 6})))
        parts.append(f"<p>Fees in the period: <b>{_money(s['fees'])}</b> over {s['fills']:.0f} fills.</p>")
    else:
        parts.append('<p class="muted">No fills in this period.</p>')
    parts.append("<h2>Journal</h2>")
    if data.notes:
        parts.append(_table(["Time (UTC)", "Order", "Symbols", "Tags", "Note"],
                            [[(f"{n.ts.astimezone(UTC):%Y-%m-%d %H:%M}", ""), (n.order_id[:12], ""),
                              (" ".join(n.symbols), ""), (" ".join(f"#{t}" for t in n.tags), ""), (n.note, "")]
                             for n in data.notes], set(), frozenset({0, 1, 2})))
    else:
        parts.append('<p class="muted">No journal notes for these trades (add them with '
                     "<code>optiondesk journal add</code>).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
