"""Strategy builder panel: a structure from the library, strikes by delta or probability, wings in dollars.

The engine (:mod:`engine.analytics.builder`) picks the legs on the followed underlying's live chain and
computes the figures; this panel only collects the inputs, shows the result and hands the legs to the
order ticket ("Send to ticket" → ``DeskLinks.legs_replaced``), where the order is reviewed and sent down
the one order path. Nothing here places an order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from PySide6 import QtCore, QtWidgets

from engine.analytics.builder import (
    DEBIT,
    DEFAULT_DELTA,
    ONE_RIGHT,
    STRUCTURE_NAMES,
    TWO_EXPIRIES,
    BuildError,
    BuildSpec,
    BuiltStrategy,
    Structure,
    build_strategy,
    default_width,
)
from engine.analytics.formatting import money
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel
from widgets.live_chain import LiveChain
from widgets.order_ticket import describe_leg

if TYPE_CHECKING:
    from engine.core import Engine


class StrategyBuilderPanel(Panel):
    title: ClassVar[str] = "Strategy builder"
    panel_id: ClassVar[str] = "strategy_builder"

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(engine, parent)
        self.live = LiveChain(engine)
        self.built: BuiltStrategy | None = None

        self.structure_box = QtWidgets.QComboBox()
        for s, name in STRUCTURE_NAMES.items():
            self.structure_box.addItem(name, s.value)
        self.right_box = QtWidgets.QComboBox()
        self.right_box.addItems(["Put", "Call"])
        self.flip_check = QtWidgets.QCheckBox("Mirror (buy ↔ sell)")
        self.flip_check.setToolTip("Every leg on the other side: a long strangle, a debit condor, a short fly…")
        self.by_box = QtWidgets.QComboBox()
        self.by_box.addItem("Delta", "delta")
        self.by_box.addItem("Probability OTM", "probability")
        self.target_spin = QtWidgets.QSpinBox()
        self.target_spin.setRange(1, 99)
        self.width_spin = QtWidgets.QDoubleSpinBox()
        self.width_spin.setRange(0.0, 1000.0)
        self.width_spin.setDecimals(1)
        self.width_spin.setPrefix("$")
        self.width_spin.setSpecialValueText("auto")
        self.width_spin.setToolTip("Wing width in dollars; auto is about 1 % of the underlying on a round number")
        self.far_width_spin = QtWidgets.QDoubleSpinBox()
        self.far_width_spin.setRange(0.0, 2000.0)
        self.far_width_spin.setDecimals(1)
        self.far_width_spin.setPrefix("$")
        self.far_width_spin.setSpecialValueText("2 × wing")
        self.dte_spin = QtWidgets.QSpinBox()
        self.dte_spin.setRange(0, 1000)
        self.dte_spin.setValue(30)
        self.dte_spin.setSuffix(" DTE")
        self.far_dte_spin = QtWidgets.QSpinBox()
        self.far_dte_spin.setRange(1, 1500)
        self.far_dte_spin.setValue(60)
        self.far_dte_spin.setSuffix(" DTE")
        self.ratio_spin = QtWidgets.QSpinBox()
        self.ratio_spin.setRange(2, 5)
        self.ratio_spin.setPrefix("1 × ")
        self.qty_spin = QtWidgets.QSpinBox()
        self.qty_spin.setRange(1, 1000)

        form = self._form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._rows: dict[str, QtWidgets.QWidget] = {}

        def add(label: str, widget: QtWidgets.QWidget, key: str) -> None:
            form.addRow(label, widget)
            self._rows[key] = widget

        add("Structure", self.structure_box, "structure")
        add("Right", self.right_box, "right")
        add("Strikes by", self.by_box, "by")
        add("Target", self.target_spin, "target")
        add("Wing width", self.width_spin, "width")
        add("Far wing", self.far_width_spin, "far_width")
        add("Expiry", self.dte_spin, "dte")
        add("Back month", self.far_dte_spin, "far_dte")
        add("Ratio", self.ratio_spin, "ratio")
        add("Quantity", self.qty_spin, "qty")
        form.addRow("", self.flip_check)

        self.build_button = QtWidgets.QPushButton("Build")
        self.build_button.clicked.connect(self.build)
        self.send_button = QtWidgets.QPushButton("Send to ticket")
        self.send_button.setEnabled(False)
        self.send_button.clicked.connect(self.send_to_ticket)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.build_button)
        buttons.addWidget(self.send_button)
        buttons.addStretch(1)

        self.header = QtWidgets.QLabel("Select an underlying in the chain, then Build")
        self.header.setStyleSheet("font-weight: 600")
        self.header.setWordWrap(True)
        self.legs_table = QtWidgets.QTableWidget(0, 4)
        self.legs_table.setHorizontalHeaderLabels(["Side", "Qty", "Contract", "Δ"])
        self.legs_table.verticalHeader().setVisible(False)
        self.legs_table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.legs_table.horizontalHeader().setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for column, width in ((0, 52), (1, 48), (3, 56)):
            self.legs_table.setColumnWidth(column, width)
        self.legs_table.setMinimumHeight(120)

        grid = QtWidgets.QGridLayout()
        self.figures: dict[str, QtWidgets.QLabel] = {}
        names = [("mid", "Net mid"), ("natural", "Natural"), ("max_profit", "Max profit"),
                 ("max_loss", "Max loss"), ("breakevens", "Breakevens"), ("pop", "Prob. of profit"),
                 ("delta", "Δ"), ("gamma", "Γ"), ("theta", "Θ /day"), ("vega", "Vega")]
        for i, (key, label) in enumerate(names):
            value = QtWidgets.QLabel("—")
            value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)  # "$59,749 to zero ($8,629 at a 15% move)" must not widen the dock
            self.figures[key] = value
            grid.addWidget(QtWidgets.QLabel(label), i // 2, 2 * (i % 2))
            grid.addWidget(value, i // 2, 2 * (i % 2) + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.message = QtWidgets.QLabel("")
        self.message.setWordWrap(True)

        left = QtWidgets.QVBoxLayout()
        left.addLayout(form)
        left.addLayout(buttons)
        left.addStretch(1)
        right = QtWidgets.QVBoxLayout()
        right.addWidget(self.header)
        right.addWidget(self.legs_table, 1)
        right.addLayout(grid)
        right.addWidget(self.message)
        top = QtWidgets.QHBoxLayout(self)
        top.addLayout(left, 0)
        top.addLayout(right, 1)

        self.qty_spin.valueChanged.connect(lambda _q: self.build() if self.built is not None else None)
        self.structure_box.currentIndexChanged.connect(self._structure_defaults)
        self.by_box.currentIndexChanged.connect(self._structure_defaults)
        self.links.underlying_selected.connect(self._follow)
        if self.links.underlying:
            self._follow(self.links.underlying)
        self._structure_defaults()

    # ---- inputs ------------------------------------------------------------------------------------
    @property
    def structure(self) -> Structure:
        return Structure(self.structure_box.currentData())

    def set_structure(self, structure: Structure | str) -> None:
        self.structure_box.setCurrentIndex(self.structure_box.findData(Structure(structure).value))

    def _structure_defaults(self) -> None:
        """Each structure shows only the inputs it uses, starting from its usual anchor (16 Δ shorts…)."""
        s = self.structure
        delta = DEFAULT_DELTA[s]
        by_prob = self.by_box.currentData() == "probability"
        self.target_spin.setValue(round(100 * (1 - delta if by_prob else delta)))
        self.target_spin.setSuffix(" % OTM" if by_prob else " Δ")
        self._rows["right"].setEnabled(s in ONE_RIGHT)
        self._set_row_visible("far_width", s is Structure.BROKEN_WING_BUTTERFLY)
        self._set_row_visible("far_dte", s in TWO_EXPIRIES)
        self._set_row_visible("ratio", s is Structure.RATIO)
        self._set_row_visible("width", s not in (Structure.STRANGLE, Structure.STRADDLE, Structure.CALENDAR,
                                                 Structure.COVERED_CALL, Structure.COLLAR))
        self.flip_check.setToolTip(f"Usually a {'debit' if s in DEBIT else 'credit'}; mirrored, every leg is on "
                                   "the other side")

    def _set_row_visible(self, key: str, visible: bool) -> None:
        widget = self._rows[key]
        widget.setVisible(visible)
        label = self._form.labelForField(widget)
        if label is not None:
            label.setVisible(visible)

    def spec(self) -> BuildSpec:
        s = self.structure
        return BuildSpec(
            structure=s, dte=float(self.dte_spin.value()), by=str(self.by_box.currentData()),
            target=self.target_spin.value() / 100.0,
            width=self.width_spin.value() or None, far_width=self.far_width_spin.value() or None,
            call=self.right_box.currentIndex() == 1, flip=self.flip_check.isChecked(),
            far_dte=float(self.far_dte_spin.value()) if s in TWO_EXPIRIES else None, ratio=self.ratio_spin.value(),
        )

    # ---- chain -------------------------------------------------------------------------------------
    def _follow(self, underlying: str) -> None:
        if self.live.select(underlying):
            self.built = None
            self.send_button.setEnabled(False)
            self._show_chain_header()

    def _show_chain_header(self) -> None:
        # runs on every quote batch: read the live spot, not a snapshot (a copy of the whole chain's quotes)
        chain = self.live.chain
        if chain is None:
            self.header.setText(f"{self.live.underlying or 'No underlying'}: waiting for its chain")
        elif self.built is None:
            spot = self.live.spot if math.isfinite(self.live.spot) else chain.spot
            text = (f"{chain.underlying}  {spot:,.2f}  ·  auto wing "
                    f"{money(default_width(spot), 2)} — choose a structure and Build")
            if text != self.header.text():
                self.header.setText(text)

    def apply_events(self, batch: EventBatch) -> None:
        if self.live.apply(batch) and self.built is None:
            self._show_chain_header()

    # ---- build / send ------------------------------------------------------------------------------
    def build(self) -> None:
        """Ask the engine's builder for the legs on the live chain and show them with their figures."""
        chain = self.live.snapshot()
        if chain is None:
            self._fail("Select an underlying in the chain first (its chain has not arrived yet)")
            return
        r, q = eq.rates(self.engine, chain.underlying)
        try:
            built = build_strategy(self.spec(), chain, chain.ts, r=r, q=q, stress=eq.stress_move(self.engine),
                                   quantity=self.qty_spin.value())
        except BuildError as exc:
            self._fail(str(exc))
            return
        self.built = built
        self._show(built)
        self.send_button.setEnabled(True)

    def _fail(self, text: str) -> None:
        self.built = None
        self.send_button.setEnabled(False)
        self.legs_table.setRowCount(0)
        for label in self.figures.values():
            label.setText("—")
        self.message.setStyleSheet("color: #d64541")
        self.message.setText(text)

    def _show(self, b: BuiltStrategy) -> None:
        qty = self.qty_spin.value()
        expires = b.expiry.astype("datetime64[D]").astype(object)
        self.header.setText(f"{b.name}  ·  quantity {qty}  ·  expires {expires:%d %b %y}")
        self.legs_table.setRowCount(len(b.legs))
        for i, leg in enumerate(b.legs):
            d = float(b.leg_delta[i]) * leg.side.sign
            cells = (leg.side.value.upper(), str(leg.ratio * qty), describe_leg(leg),
                     f"{d:+.2f}" if math.isfinite(d) else "—")
            for j, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                if j == 0:
                    item.setForeground(QtCore.Qt.GlobalColor.darkGreen if leg.side.sign > 0
                                       else QtCore.Qt.GlobalColor.darkRed)
                self.legs_table.setItem(i, j, item)
        f = self.figures
        f["mid"].setText(_net(b.mid))
        f["natural"].setText(_net(b.natural))
        s = b.summary
        f["max_profit"].setText(money(s.max_profit, 0) if s else "—")
        f["max_loss"].setText(b.max_loss_text)
        f["breakevens"].setText(", ".join(f"{x:,.2f}" for x in s.breakevens) or "none" if s else "—")
        pop = b.probability_of_profit
        f["pop"].setText(f"{100 * pop:.0f}%" if math.isfinite(pop) else "—")
        for key, fmt in (("delta", "{:+,.1f}"), ("gamma", "{:+,.2f}"), ("vega", "{:+,.2f}")):
            v = b.greeks.get(key, math.nan)
            f[key].setText(fmt.format(v) if math.isfinite(v) else "—")
        f["theta"].setText(money(b.greeks.get("theta", math.nan), 2, signed=True))
        self.message.setStyleSheet("")
        self.message.setText("; ".join(b.notes))

    def send_to_ticket(self) -> None:
        """Replace the ticket's legs with the built ones; the ticket prices them live and sends the order."""
        if self.built is None:
            return
        self.links.legs_replaced.emit({"legs": tuple(self.built.legs), "quantity": self.qty_spin.value()})
        self.message.setStyleSheet("")
        self.message.setText(f"Sent {self.built.name} to the order ticket for review")

    # ---- persistence -------------------------------------------------------------------------------
    def panel_state(self) -> dict[str, Any]:
        return {"structure": self.structure.value, "dte": self.dte_spin.value(), "width": self.width_spin.value()}

    def restore_panel_state(self, state: dict[str, Any]) -> None:
        try:
            self.set_structure(state.get("structure", Structure.IRON_CONDOR.value))
            self.dte_spin.setValue(int(state.get("dte", 30)))
            self.width_spin.setValue(float(state.get("width", 0.0)))
        except (TypeError, ValueError):
            return


def _net(value: float) -> str:
    """A net price per combo unit with its kind (the sign convention is the order's: + debit)."""
    if not math.isfinite(value):
        return "—"
    return f"{abs(value):,.2f} {'debit' if value > 0 else 'credit' if value < 0 else 'even'}"

