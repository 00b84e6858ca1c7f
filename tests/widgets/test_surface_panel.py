"""Smile & surface panel on a real surface fit: smile points and curve, heatmap, term structure, IV rank."""

from __future__ import annotations

import numpy as np
import pytest

from widgets.base import EventBatch
from widgets.plots import gl_available
from widgets.surface_view import SurfacePanel


@pytest.fixture()
def panel(qtbot, engine, spy_surface):
    p = SurfacePanel(engine)
    qtbot.addWidget(p)
    p.resize(1100, 560)
    p.select_underlying("SPY")
    p.apply_events(EventBatch.from_events([spy_surface]))
    qtbot.waitUntil(lambda: p.rest_draws > 0, timeout=3000)
    return p


def test_surface_panel_draws_the_engine_fit(panel, spy_surface, shot) -> None:
    fit = spy_surface.fit
    assert panel.update_event is spy_surface
    assert panel.expiry_box.count() == len(fit.term.expiries)
    x, y = panel.curve.getData()
    assert len(x) > 50 and np.nanmin(y) > 0.03 and np.nanmax(y) < 1.5
    bx, by = panel.bid_pts.getData()
    _ax, ay = panel.ask_pts.getData()
    assert len(bx) > 5 and np.all(by[np.isfinite(by) & np.isfinite(ay)] <= ay[np.isfinite(by) & np.isfinite(ay)] + 1e-12)
    # heatmap holds the engine grid
    assert panel.heat_image.image.shape == spy_surface.grid.iv.shape
    assert np.nanmax(panel.heat_image.image) == pytest.approx(100 * np.nanmax(spy_surface.grid.iv))
    tx, _ty = panel.term_atm.getData()
    assert len(tx) >= 2 and np.all(np.diff(tx) > 0)
    assert "rank" in panel.rank_label.text()
    assert "ATM" in panel.stats_label.text()
    shot(panel, "surface")


def test_expiry_selection_switches_the_smile(panel, spy_surface) -> None:
    first = panel.smile.expiry
    panel.expiry_box.setCurrentIndex(2)
    assert panel.smile.expiry == spy_surface.fit.term.expiries[2] != first


def test_chain_expiry_selection_drives_the_smile(panel, spy_surface) -> None:
    target = spy_surface.fit.term.expiries[3]
    panel.links.expiry_selected.emit("SPY", target)
    assert panel.smile.expiry == target


def test_offscreen_uses_heatmap_without_gl(panel) -> None:
    assert not gl_available()
    assert panel.surface_tabs.count() == 1 and panel.surface_tabs.tabText(0) == "Heatmap"


def test_other_underlying_surfaces_are_ignored(panel, spy_surface) -> None:
    from dataclasses import replace

    other = replace(spy_surface, underlying="QQQ")
    panel.apply_events(EventBatch.from_events([other]))
    assert panel.update_event is spy_surface


def test_the_first_fit_does_not_widen_the_panel(qtbot, engine, spy_surface) -> None:
    p = SurfacePanel(engine)
    qtbot.addWidget(p)
    p.resize(700, 500)
    p.select_underlying("SPY")
    before = p.minimumSizeHint().width()
    p.apply_events(EventBatch.from_events([spy_surface]))
    qtbot.waitUntil(lambda: p.rest_draws > 0, timeout=3000)
    assert "ATM" in p.stats_label.text()
    # the long fit statistics do not drive the width: the panel (and the chain's dock beside it) does
    # not have to grow when the smile first fills
    assert p.minimumSizeHint().width() <= max(before, 700) and p.width() == 700


def test_heatmap_scale_ignores_a_0dte_row(panel, spy_surface) -> None:
    g = spy_surface.grid
    lo, hi = panel.colorbar.levels()
    later = 100 * np.asarray(g.iv)[np.asarray(g.dte) >= 1.0]
    later = later[np.isfinite(later)]
    assert lo >= np.percentile(later, 1) - 1e-6 and hi <= np.percentile(later, 99) + 1e-6
    assert "days" in panel.heat_plot.getPlotItem().titleLabel.text
