"""The toolbar's risk slider: one number 0–100 that sets every risk limit, and the limits it gave.

The engine maps the level onto its Low / Moderate / High presets (``RiskProfileChanged``); the control
only sends the level and shows the answer, in dollars once the account's net liquidation is known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from app.toolbar_support import fmt_money, has_handler, in_use
from engine.bus.commands import SetRiskLevel
from engine.bus.events import AccountUpdated, RiskProfileChanged
from widgets import engine_queries as eq
from widgets.base import EventBatch, send_command

if TYPE_CHECKING:
    from engine.core import Engine


class RiskSliderControl(QtWidgets.QWidget):
    """Slider 0–100 with Low / Moderate / High marks and a live readout of the resulting limits.

    Moving the slider sends ``SetRiskLevel`` (debounced 150 ms); the readout shows what the engine
    answers with (``RiskProfileChanged``), in dollars once the account's net liquidation is known.
    """

    DEBOUNCE_MS = 150

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("riskSlider")
        self.profile: Any = None
        self.net_liq: float | None = None
        self.last_error = ""

        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setObjectName("riskSliderBar")
        self.slider.setRange(0, 100)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(10)
        self.slider.setTickPosition(QtWidgets.QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(50)
        self.slider.setMinimumWidth(200)
        self.slider.setToolTip("Risk level 0–100: Low (0), Moderate (50), High (100). Limits interpolate between presets.")
        self.value_label = QtWidgets.QLabel("50")
        self.value_label.setObjectName("riskValue")
        self.value_label.setMinimumWidth(28)
        marks = QtWidgets.QHBoxLayout()
        marks.setContentsMargins(0, 0, 0, 0)
        for i, text in enumerate(("Low", "Moderate", "High")):
            lab = QtWidgets.QLabel(text)
            lab.setObjectName("riskMark")
            lab.setAlignment(
                (QtCore.Qt.AlignmentFlag.AlignLeft, QtCore.Qt.AlignmentFlag.AlignHCenter, QtCore.Qt.AlignmentFlag.AlignRight)[i]
            )
            marks.addWidget(lab, 1)
        self.readout = QtWidgets.QLabel("")
        self.readout.setObjectName("riskReadout")

        col = QtWidgets.QVBoxLayout()
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        top = QtWidgets.QHBoxLayout()
        title = QtWidgets.QLabel("RISK")
        title.setObjectName("toolbarCaption")
        top.addWidget(title)
        top.addWidget(self.slider, 1)
        top.addWidget(self.value_label)
        col.addLayout(top)
        marks_row = QtWidgets.QHBoxLayout()
        marks_row.setContentsMargins(34, 0, 34, 0)
        marks_row.addLayout(marks)
        col.addLayout(marks_row)
        col.addWidget(self.readout)
        self.setLayout(col)

        self._debounce = QtCore.QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(self.DEBOUNCE_MS)
        self._debounce.timeout.connect(self._send_level)
        self.slider.valueChanged.connect(self._on_value)

        self.slider.blockSignals(True)
        self.slider.setValue(round(eq.risk_level(engine)))
        self.slider.blockSignals(False)
        self.value_label.setText(str(self.slider.value()))
        self.profile = engine.risk.profile if engine is not None and engine.risk is not None else None
        acct = eq.account(engine)
        self.net_liq = float(acct.net_liquidation) if acct is not None else None
        self._render()

    @staticmethod
    def available(engine: Engine | None) -> bool:
        return has_handler(engine, SetRiskLevel)

    def set_level(self, level: int) -> None:
        """Move the slider (as a user would); the command follows after the debounce."""
        self.slider.setValue(int(level))

    def _on_value(self, value: int) -> None:
        self.value_label.setText(str(value))
        self._debounce.start()

    def _send_level(self) -> None:
        send_command(self.engine, SetRiskLevel(level=float(self.slider.value())), on_error=self._on_error)

    def _on_error(self, message: str) -> None:
        self.last_error = message
        self.readout.setText(f"⚠ {message}")

    def apply_events(self, batch: EventBatch) -> None:
        changed = False
        for ev in batch.events(RiskProfileChanged):
            self.profile = ev.profile
            if not self.slider.isSliderDown() and not self._debounce.isActive():
                self.slider.blockSignals(True)
                self.slider.setValue(round(float(ev.level)))
                self.slider.blockSignals(False)
                self.value_label.setText(str(self.slider.value()))
            changed = True
        for ev in batch.latest(AccountUpdated).values():
            if not in_use(self.engine, ev.account):
                continue
            nl = float(ev.account.net_liquidation)
            if nl != self.net_liq:
                self.net_liq = nl
                changed = True
        if changed:
            self._render()

    def readout_text(self) -> str:
        p = self.profile
        if p is None:
            return "limits: waiting for the risk engine"
        if self.net_liq and hasattr(p, "limits_in_dollars"):
            d = p.limits_in_dollars(self.net_liq)
            return (
                f"Max loss/trade {fmt_money(d['max_loss_per_trade'])} · Daily loss {fmt_money(d['max_daily_loss'])}"
                f" · Δ ≤ {p.max_delta:,.0f} · Vega ≤ {fmt_money(d['max_vega'])} · Pos ≤ {p.max_positions}"
            )
        return (
            f"Max loss/trade {p.risk_per_trade_pct:.1%} · Daily loss {p.max_daily_loss_pct:.1%}"
            f" · Δ ≤ {p.max_delta:,.0f} · Vega ≤ {p.max_vega_pct:.2%} NL · Pos ≤ {p.max_positions}"
        )

    def _render(self) -> None:
        self.readout.setText(self.readout_text())
        p = self.profile
        if p is not None:
            self.readout.setToolTip(
                "\n".join(
                    f"{k}: {v}" for k, v in (p.to_dict().items() if hasattr(p, "to_dict") else []) if k != "regime_multipliers"
                )
            )
