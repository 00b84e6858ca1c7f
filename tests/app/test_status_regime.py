"""The status bar shows the VIX-rule regime beside the live Gaussian mixture's, which arrives as an event."""

from __future__ import annotations

from engine.ml.regime_live import StatisticalRegimeUpdated
from engine.risk.regime import RegimeChanged


def test_status_bar_shows_the_rule_regime_beside_the_live_mixture_regime(qtbot, window) -> None:
    engine = window.engine
    label = window.status_regime
    assert label in window.statusBar().findChildren(type(label))
    qtbot.waitUntil(lambda: engine.ml.regime.latest is not None, timeout=60_000)  # the engine's own fit
    ev = engine.ml.regime.latest
    assert not ev.error and ev.regime in {"calm", "volatile", "crisis", "trending"}
    qtbot.waitUntil(lambda: f"GMM {ev.regime} {ev.probability:.0%}" in label.text(), timeout=10_000)
    assert label.text().startswith("VIX ") and "SPY" in label.toolTip() and str(ev.days) in label.toolTip()

    # a later fit and a rule change both reach the bar through the bus
    engine.bus.publish(StatisticalRegimeUpdated(symbol="SPY", regime="trending",
                                                probabilities=(("trending", 0.71), ("calm", 0.29)),
                                                as_of=ev.as_of, trending_supported=True, days=ev.days))
    engine.bus.publish(RegimeChanged(regime="high_vol", previous=engine.risk_service.regime or "", source="rules"))
    qtbot.waitUntil(lambda: label.text() == "VIX high_vol · GMM trending 71%",
                    timeout=10_000)
    assert "high_vol by the VIX rules" in label.toolTip() and "trending 71%" in label.toolTip()
    # the bar makes room for the whole text (not clipped beside the long session clock)
    qtbot.waitUntil(lambda: label.width() >= label.fontMetrics().horizontalAdvance(label.text()), timeout=5_000)
