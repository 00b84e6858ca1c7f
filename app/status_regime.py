"""The status bar's market regime: the VIX rules' label beside the live Gaussian mixture's.

Sizing follows the rules (engine.risk); the mixture (engine.ml.regime_live) is shown beside them so a trader
sees when the benchmark's own history disagrees with the VIX thresholds, e.g. a calm-VIX market the mixture
calls trending.
"""

from __future__ import annotations

from typing import Any

from PySide6 import QtWidgets

from engine.ml.regime_live import StatisticalRegimeUpdated
from engine.risk.regime import RegimeChanged
from widgets import engine_queries as eq
from widgets.base import EventBatch


class RegimeStatusLabel(QtWidgets.QLabel):
    """``VIX <rules> · GMM <state> <p>%`` (short: the status bar is crowded; the tooltip says the rest);
    updated from the bridge's batches."""

    def __init__(self, engine: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("statusRegime")
        self.rules, self.statistical = eq.market_regimes(engine)
        self._render()

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for ev in batch.events(RegimeChanged):
            self.rules, changed = ev.regime, True
        for ev in batch.events(StatisticalRegimeUpdated):
            self.statistical, changed = ev, True
        if changed:
            self._render()

    def _render(self) -> None:
        rules = f"VIX {self.rules or '—'}"
        stat = self.statistical
        if stat is None:
            self.setText(f"{rules} · GMM —")
            self.setToolTip("The Gaussian-mixture regime is fitted on the benchmark's daily history once it is "
                            "stored.")
            return
        if stat.error:
            self.setText(f"{rules} · GMM unavailable")
            self.setToolTip(stat.error)
            return
        self.setText(f"{rules} · GMM {stat.regime} {stat.probability:.0%}")
        probs = ", ".join(f"{name} {p:.0%}" for name, p in stat.probabilities)
        trend = "a trending state found" if stat.trending_supported else "no trending state in this history"
        self.setToolTip(f"Market regime: {self.rules or 'not classified yet'} by the VIX rules (sizing follows "
                        f"them); {stat.regime} by a Gaussian mixture on {stat.symbol}'s 20-day trend strength and "
                        f"realized vol, {stat.days} days to {stat.as_of}: {probs}; {trend}.")
