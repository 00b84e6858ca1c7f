"""Smile & surface panel: the selected expiry's smile, the whole surface, the ATM term structure, IV rank.

Everything drawn comes from ``engine.surface`` (``SurfaceUpdated``: the fit, its (T × k) grid, the
term structure and the IV rank; :func:`engine.surface.views.smile_view` for one expiry). The surface is
a heatmap (T × moneyness) always, and additionally a 3-D ``pyqtgraph.opengl`` surface when an OpenGL
context exists (never offscreen). The underlying and expiry follow the option chain's selection.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.plots import (
    MUTED,
    SERIES,
    ExpMoneynessAxis,
    PercentAxis,
    gl_available,
    infinite_line,
    legend,
    new_plot,
    set_stable_range,
)
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from engine.core import Engine


def _surface_event_type() -> Any:
    from engine.surface.service import SurfaceUpdated

    return SurfaceUpdated


class SurfacePanel(Panel):
    title: ClassVar[str] = "Smile & surface"
    panel_id: ClassVar[str] = "surface"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.underlying = ""
        self.expiry: np.datetime64 | None = None
        self.update_event: Any = None
        self.smile: Any = None
        self.redraws = 0
        #: heatmap + term-structure redraws completed (they follow the smile, one frame each)
        self.rest_draws = 0
        self._expiries: list[np.datetime64] = []
        # the smile, the heatmap and the term structure are drawn (and so painted) in three loop turns
        # ~40 ms apart, after the bridge's flush: each plot's redraw + repaint is several ms of
        # pyqtgraph Python, and all three in the flush's turn would hold the loop for the sum
        self._stage = 0
        self._stage_timer = QtCore.QTimer(self)
        self._stage_timer.setSingleShot(True)
        self._stage_timer.timeout.connect(self._next_stage)

        self.symbol_label = QtWidgets.QLabel("—")
        self.symbol_label.setStyleSheet("font-weight: bold")
        self.expiry_box = QtWidgets.QComboBox()
        self.expiry_box.setMinimumWidth(150)
        self.expiry_box.currentIndexChanged.connect(self._on_expiry_box)
        self.stats_label = QtWidgets.QLabel("")
        self.rank_label = QtWidgets.QLabel("")
        self.rank_label.setToolTip("IV rank: where today's 30-day ATM IV sits between its 1-year low and high; "
                                   "percentile: share of days it was lower")
        self.status_label = QtWidgets.QLabel("waiting for a surface fit…")
        self.status_label.setStyleSheet(f"color: {MUTED}")
        # text that arrives with the first fit must not widen the panel: its dock (and the chain's
        # beside it) jumped when the smile first filled
        # beside the chain (the long fit statistics give way; the short IV-rank line keeps its width)
        for label in (self.stats_label, self.status_label):
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
            label.setMinimumWidth(0)

        self.smile_plot = new_plot(title="Smile", x="Strike", y="Implied vol",
                                   axis_items={"left": PercentAxis("left")})
        self.smile_item = self.smile_plot.getPlotItem()
        legend(self.smile_item)
        self.curve = self.smile_item.plot([], [], pen=pg.mkPen(SERIES[0], width=2), name="SVI fit")
        self.bid_pts = self.smile_item.plot([], [], pen=None, symbol="t", symbolSize=7,
                                            symbolBrush=SERIES[2], symbolPen=None, name="bid IV")
        self.ask_pts = self.smile_item.plot([], [], pen=None, symbol="t1", symbolSize=7,
                                            symbolBrush=SERIES[3], symbolPen=None, name="ask IV")
        self.mid_pts = self.smile_item.plot([], [], pen=None, symbol="o", symbolSize=5,
                                            symbolBrush=SERIES[1], symbolPen=None, name="mid IV")
        self.dropped_pts = self.smile_item.plot([], [], pen=None, symbol="x", symbolSize=6,
                                                symbolBrush=MUTED, symbolPen=pg.mkPen(MUTED), name="dropped")
        self.fwd_line = infinite_line(0.0, label="F")
        self.smile_item.addItem(self.fwd_line)
        self.fwd_line.hide()

        self.heat_plot = new_plot(title="Implied vol (%) by K/F and days",
                                  x="Moneyness K/F", y="Days to expiry",
                                  axis_items={"bottom": ExpMoneynessAxis("bottom")})
        self.heat_item = self.heat_plot.getPlotItem()
        self.heat_image = pg.ImageItem(axisOrder="row-major")
        self.heat_item.addItem(self.heat_image)
        self.cmap = pg.colormap.get("viridis")
        self.heat_image.setColorMap(self.cmap)
        self.colorbar = pg.ColorBarItem(values=(10.0, 50.0), colorMap=self.cmap, label="IV %", interactive=False,
                                        width=12)
        self.colorbar.setImageItem(self.heat_image, insert_in=self.heat_item)
        self.slice_lines: list[pg.InfiniteLine] = []

        self.term_plot = new_plot(title="ATM term structure", x="Days to expiry", y="Implied vol",
                                  axis_items={"left": PercentAxis("left")})
        self.term_item = self.term_plot.getPlotItem()
        legend(self.term_item, right=True).setColumnCount(3)
        self.term_atm = self.term_item.plot([], [], pen=pg.mkPen(SERIES[0], width=2), symbol="o", symbolSize=5,
                                            symbolBrush=SERIES[0], name="ATM")
        self.term_put = self.term_item.plot([], [], pen=pg.mkPen(SERIES[3], width=1, style=QtCore.Qt.PenStyle.DashLine),
                                            name="25Δ put")
        self.term_call = self.term_item.plot([], [], pen=pg.mkPen(SERIES[2], width=1, style=QtCore.Qt.PenStyle.DashLine),
                                             name="25Δ call")
        self.term_marker = infinite_line(0.0, color=SERIES[1])
        self.term_item.addItem(self.term_marker)

        self.surface_tabs = QtWidgets.QTabWidget()
        self.surface_tabs.addTab(self.heat_plot, "Heatmap")
        self.gl_view: Any = None
        self.gl_surface: Any = None
        if gl_available():
            self._build_gl()

        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.symbol_label)
        top.addWidget(self.expiry_box)
        top.addWidget(self.stats_label, 1)
        top.addWidget(self.rank_label)
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.surface_tabs)
        right.addWidget(self.term_plot)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.smile_plot)
        split.addWidget(right)
        split.setSizes([500, 500])
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(3)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        lay.addWidget(self.status_label)

        self.links.underlying_selected.connect(self.select_underlying)
        self.links.expiry_selected.connect(self._on_chain_expiry)
        if self.links.expiry is not None:
            self._on_chain_expiry(self.links.underlying, self.links.expiry)
        elif self.links.underlying:
            self.select_underlying(self.links.underlying)

    def _build_gl(self) -> None:
        try:
            import pyqtgraph.opengl as gl
        except Exception:
            return
        view = gl.GLViewWidget()
        view.setCameraPosition(distance=3.0, elevation=28, azimuth=-60)
        surface = gl.GLSurfacePlotItem(shader="heightColor", computeNormals=False, smooth=False)
        view.addItem(surface)
        view.addItem(gl.GLGridItem())
        self.gl_view, self.gl_surface = view, surface
        self.surface_tabs.addTab(view, "3-D")

    # ---- selection --------------------------------------------------------------------------------
    def select_underlying(self, symbol: str) -> None:
        if symbol == self.underlying:
            return
        self.underlying = symbol
        self.symbol_label.setText(symbol)
        self.update_event = None
        latest = eq.surface_update(self.engine, symbol)
        if latest is not None:
            self.set_update(latest)
        else:
            self.status_label.setText(f"waiting for a surface fit of {symbol}…")

    def _on_chain_expiry(self, underlying: str, expiry: object) -> None:
        if underlying != self.underlying:
            self.select_underlying(underlying)
        self.expiry = np.datetime64(expiry, "s")  # type: ignore[call-overload]
        if self.expiry in self._expiries:
            self.expiry_box.setCurrentIndex(self._expiries.index(self.expiry))

    def _on_expiry_box(self, index: int) -> None:
        if 0 <= index < len(self._expiries):
            self.expiry = self._expiries[index]
            self._draw_smile()

    # ---- data --------------------------------------------------------------------------------------
    def apply_events(self, batch: EventBatch) -> None:
        if not self.underlying:
            return
        ev = batch.latest(_surface_event_type()).get(("surface", self.underlying))
        if ev is not None:
            self.set_update(ev)

    def set_update(self, ev: Any) -> None:
        """Show a ``SurfaceUpdated``."""
        if not self.underlying:
            self.underlying = ev.underlying
            self.symbol_label.setText(ev.underlying)
        self.update_event = ev
        fit = ev.fit
        term = fit.term
        expiries = list(term.expiries)
        if expiries != self._expiries:
            self._expiries = expiries
            self.expiry_box.blockSignals(True)
            self.expiry_box.clear()
            for e, dte, ok in zip(expiries, term.dte, term.fitted, strict=True):
                d = e.astype("datetime64[D]").astype(object)
                self.expiry_box.addItem(f"{d:%d %b %y} ({dte:.0f}d){'' if ok else ' – not fitted'}")
            if self.expiry not in expiries:
                fitted = [e for e, ok in zip(expiries, term.fitted, strict=True) if ok]
                self.expiry = fitted[0] if fitted else (expiries[0] if expiries else None)
            if self.expiry is not None:
                self.expiry_box.setCurrentIndex(expiries.index(self.expiry))
            self.expiry_box.blockSignals(False)
        self._stage = 0  # the smile first, in its own loop turn (not inside the bridge's flush)
        self._stage_timer.start(15)
        r = ev.iv_rank
        rv = getattr(ev, "realized_vol", math.nan)
        rv_text = f"  ·  RV {100 * rv:.1f}%" if math.isfinite(rv) else ""
        if getattr(r, "ok", False):
            self.rank_label.setText(f"IV {100 * r.current:.1f}%  ·  rank {100 * r.rank:.0f}  ·  "
                                    f"pctl {100 * r.percentile:.0f}  ({r.days}d){rv_text}")
        else:
            cur = f"IV {100 * ev.atm_iv:.1f}%  ·  " if math.isfinite(ev.atm_iv) else ""
            self.rank_label.setText(f"{cur}IV rank: {getattr(r, 'message', 'n/a')}")
        n_fit = int(np.count_nonzero(term.fitted))
        arb = getattr(fit.arbitrage, "ok", True)
        self.status_label.setText(
            f"fit {ev.fit_ms:.0f} ms · {n_fit}/{len(expiries)} expiries fitted · chain {format_market_time(ev.chain_ts)}"
            + ("" if arb else " · arbitrage warnings, see log")
        )
        self.redraws += 1

    def _draw_smile(self) -> None:
        ev = self.update_event
        if ev is None or self.expiry is None:
            return
        from engine.surface.views import smile_view

        try:
            sv = smile_view(ev.fit, self.expiry)
        except (KeyError, IndexError) as exc:
            self.status_label.setText(str(exc))
            return
        self.smile = sv
        self.curve.setData(sv.curve_strike, sv.curve_iv)
        used = sv.used.astype(bool)
        for pts, iv, rows in ((self.bid_pts, sv.iv_bid, used), (self.ask_pts, sv.iv_ask, used),
                              (self.mid_pts, sv.iv_mid, used), (self.dropped_pts, sv.iv_mid, ~used)):
            rows = rows & np.isfinite(iv)  # a quote without an implied vol has no point to show
            pts.setData(sv.strike[rows], iv[rows])
        if math.isfinite(sv.forward):
            self.fwd_line.setPos(sv.forward)
            self.fwd_line.show()
        d = sv.expiry.astype("datetime64[D]").astype(object)
        self.smile_item.setTitle(f"Smile {d:%d %b %y} ({sv.dte:.0f}d)", size="10pt")
        parts = [f"ATM {100 * sv.atm_iv:.1f}%" if math.isfinite(sv.atm_iv) else "ATM —"]
        if math.isfinite(sv.rr25):
            parts.append(f"25Δ RR {100 * sv.rr25:+.1f}")
        if math.isfinite(sv.bf25):
            parts.append(f"BF {100 * sv.bf25:+.1f}")
        if math.isfinite(sv.rmse_bp):
            parts.append(f"fit RMSE {sv.rmse_bp:.0f} bp")
        if sv.status != "fitted":
            parts.append(f"not fitted: {sv.reason}")
        self.stats_label.setText("   ".join(parts))
        # keep the view on the quoted strikes (deep wings otherwise dominate)
        pts = sv.strike[used] if used.any() else sv.strike
        if len(pts):
            set_stable_range(self.smile_item, "x", float(np.min(pts)), float(np.max(pts)))
            ivs = np.concatenate([sv.iv_bid[used], sv.iv_ask[used], sv.curve_iv])
            ivs = ivs[np.isfinite(ivs)]
            if len(ivs):
                set_stable_range(self.smile_item, "y", float(np.percentile(ivs, 1)), float(np.percentile(ivs, 99)),
                                 padding=0.1)
        if self.expiry is not None and self.update_event is not None:
            term = self.update_event.fit.term
            hits = np.nonzero(term.expiries == self.expiry)[0]
            if len(hits):
                self.term_marker.setPos(float(term.dte[hits[0]]))

    def _next_stage(self) -> None:
        if self.update_event is None:
            return
        if self._stage == 0:
            self._draw_smile()
            self._stage = 1
            self._stage_timer.start(40)
        elif self._stage == 1:
            self._draw_surface()
            self._stage = 2
            self._stage_timer.start(40)
        elif self._stage == 2:
            self._draw_term()
            self._stage = 0
            self.rest_draws += 1

    def _draw_rest(self) -> None:
        """The heatmap and the term structure now (tests, screenshots)."""
        if self.update_event is None:
            return
        self._stage_timer.stop()
        self._stage = 0
        self._draw_smile()
        self._draw_surface()
        self._draw_term()
        self.rest_draws += 1

    def _draw_surface(self) -> None:
        g = self.update_event.grid
        iv = np.asarray(g.iv, dtype=float)
        if iv.size == 0 or not np.isfinite(iv).any():
            self.heat_image.clear()
            return
        k, dte = np.asarray(g.k, float), np.asarray(g.dte, float)
        finite = iv[np.isfinite(iv)]
        # the colour scale comes from expiries at least a day out: a 0DTE row's vols (hundreds of %
        # in the wings) would wash every other expiry into one colour; that row saturates instead
        later = iv[dte >= 1.0] if iv.ndim == 2 and len(dte) == iv.shape[0] else iv
        later = later[np.isfinite(later)]
        scale = later if later.size >= 4 else finite
        lo, hi = float(np.percentile(scale, 1)), float(np.percentile(scale, 99))
        if hi <= lo:
            hi = lo + 0.01
        img = np.where(np.isfinite(iv), iv, lo)
        self.heat_image.setImage(100.0 * img, autoLevels=False, levels=(100.0 * lo, 100.0 * hi))
        dk = (k[-1] - k[0]) / max(len(k) - 1, 1) if len(k) > 1 else 0.01
        dt = (dte[-1] - dte[0]) / max(len(dte) - 1, 1) if len(dte) > 1 else 1.0
        self.heat_image.setRect(QtCore.QRectF(k[0] - dk / 2, dte[0] - dt / 2, (k[-1] - k[0]) + dk,
                                              max((dte[-1] - dte[0]) + dt, 1.0)))
        self.colorbar.setLevels((100.0 * lo, 100.0 * hi))
        days = np.asarray(g.slice_T, float) * 365.0
        while len(self.slice_lines) < len(days):  # reuse the lines marking fitted expiries
            line = infinite_line(0.0, angle=0, color="#ffffff")
            line.setOpacity(0.2)
            self.heat_item.addItem(line)
            self.slice_lines.append(line)
        for i, line in enumerate(self.slice_lines):
            if i < len(days):
                line.setPos(float(days[i]))
                line.show()
            else:
                line.hide()
        if self.gl_surface is not None:
            z = (img - lo) / (hi - lo)
            x = (k - k.mean()) / max(np.ptp(k), 1e-9) * 2
            y = (dte - dte.mean()) / max(np.ptp(dte), 1e-9) * 2
            self.gl_surface.setData(x=y, y=x, z=z)

    def _draw_term(self) -> None:
        term = self.update_event.fit.term
        ok = np.asarray(term.fitted, bool) & np.isfinite(term.atm_iv)
        self.term_atm.setData(term.dte[ok], term.atm_iv[ok])
        p = ok & np.isfinite(term.iv25_put)
        c = ok & np.isfinite(term.iv25_call)
        self.term_put.setData(term.dte[p], term.iv25_put[p])
        self.term_call.setData(term.dte[c], term.iv25_call[c])
        if ok.any():
            ivs = np.concatenate([term.atm_iv[ok], term.iv25_put[p], term.iv25_call[c]])
            set_stable_range(self.term_item, "x", float(np.min(term.dte[ok])), float(np.max(term.dte[ok])),
                             floor=-3.0)  # a few days of margin left of today, never weeks of negative days
            set_stable_range(self.term_item, "y", float(np.min(ivs)), float(np.max(ivs)), padding=0.1)

    # ---- persistence -----------------------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        return {"surface_tab": self.surface_tabs.currentIndex()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        tab = state.get("surface_tab")
        if isinstance(tab, int) and 0 <= tab < self.surface_tabs.count():
            self.surface_tabs.setCurrentIndex(tab)
