"""Trading hotkeys and the shortcuts sheet.

The hotkeys are ``QAction`` s of the main window (listed under Trading ▸ Hotkeys), keyed by the
``[shortcuts]`` settings (:class:`engine.settings.model.ShortcutsConfig`):

- **Buy / Sell at bid, mid or ask** put the contract selected in the option chain (the current call or put
  cell) on the ticket as a one-leg order, limit at that price (a sale is a credit, so its limit is negative).
  They only fill the ticket: nothing is sent.
- **Flip** reverses every leg of the ticket and the sign of its limit.
- **Submit** is the ticket's own Submit (``SubmitOrder`` through the one order path; the approval queue
  holds it when approval is on).
- **Cancel all** asks first (naming how many orders are working) and only then sends ``CancelAllOrders``.

The sheet (Help ▸ Keyboard shortcuts) is generated from the window's actions, so it cannot drift from
what the keys do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from engine.bus.commands import CancelAllOrders
from engine.model import Leg, Side
from engine.settings.model import ShortcutsConfig
from widgets import engine_queries as eq
from widgets.base import send_command

if TYPE_CHECKING:
    from app.main_window import MainWindow


@dataclass(frozen=True)
class Hotkey:
    key: str  # the ShortcutsConfig field
    text: str
    tip: str


HOTKEYS: tuple[Hotkey, ...] = (
    Hotkey("buy_bid", "Buy at bid", "Selected chain contract → ticket: buy 1, limit at the bid"),
    Hotkey("buy_mid", "Buy at mid", "Selected chain contract → ticket: buy 1, limit at the mid"),
    Hotkey("buy_ask", "Buy at ask", "Selected chain contract → ticket: buy 1, limit at the ask"),
    Hotkey("sell_bid", "Sell at bid", "Selected chain contract → ticket: sell 1, limit at the bid"),
    Hotkey("sell_mid", "Sell at mid", "Selected chain contract → ticket: sell 1, limit at the mid"),
    Hotkey("sell_ask", "Sell at ask", "Selected chain contract → ticket: sell 1, limit at the ask"),
    Hotkey("flip", "Flip the ticket", "Reverse every leg of the ticket (buy ↔ sell) and the sign of its limit"),
    Hotkey("submit", "Submit the ticket", "The ticket's Submit: through approval when it is on"),
    Hotkey("cancel_all", "Cancel all orders…", "Asks, then cancels every working order"),
)


class TradingHotkeys(QtCore.QObject):
    """Owns the hotkey actions of one window; every action reports what it did in the status bar."""

    def __init__(self, window: MainWindow, config: ShortcutsConfig) -> None:
        super().__init__(window)
        self.window = window
        self.actions: dict[str, QtGui.QAction] = {}
        self.cancel_box: QtWidgets.QMessageBox | None = None
        self.last_message = ""
        handlers: dict[str, Callable[[], None]] = {
            "buy_bid": lambda: self.to_ticket(Side.BUY, "bid"),
            "buy_mid": lambda: self.to_ticket(Side.BUY, "mid"),
            "buy_ask": lambda: self.to_ticket(Side.BUY, "ask"),
            "sell_bid": lambda: self.to_ticket(Side.SELL, "bid"),
            "sell_mid": lambda: self.to_ticket(Side.SELL, "mid"),
            "sell_ask": lambda: self.to_ticket(Side.SELL, "ask"),
            "flip": self.flip,
            "submit": self.submit,
            "cancel_all": self.ask_cancel_all,
        }
        for hk in HOTKEYS:
            act = QtGui.QAction(hk.text, window)
            act.setObjectName(f"hotkey:{hk.key}")
            act.setToolTip(hk.tip)
            act.setStatusTip(hk.tip)
            seq = getattr(config, hk.key)
            if seq:
                act.setShortcut(QtGui.QKeySequence(seq))
            act.setShortcutContext(QtCore.Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(handlers[hk.key])
            window.addAction(act)  # active without the menu being open
            self.actions[hk.key] = act
        self.sheet_action = QtGui.QAction("&Keyboard shortcuts…", window)
        self.sheet_action.setObjectName("hotkey:shortcuts_sheet")
        if config.shortcuts_sheet:
            self.sheet_action.setShortcut(QtGui.QKeySequence(config.shortcuts_sheet))
        self.sheet_action.triggered.connect(self.open_sheet)
        window.addAction(self.sheet_action)
        self.sheet: ShortcutsSheet | None = None

    # ---- panels ------------------------------------------------------------------------------------
    def _panel(self, pid: str) -> Any:
        if pid not in self.window.panels:
            self.window.build_all_panels()
        return self.window.panels.get(pid)

    def _raise(self, pid: str) -> None:
        """Bring the panel's dock forward without taking the keyboard from the chain (the next key still works)."""
        dock = self.window.docks.get(pid)
        if dock is not None:
            dock.show()
            dock.raise_()

    def say(self, text: str) -> None:
        self.last_message = text
        self.window.statusBar().showMessage(text, 8000)

    def selected_leg(self, side: Side) -> Leg | None:
        """The chain's current call or put cell as a leg of ``side`` (None, and a message, without one)."""
        chain = self._panel("chain")
        if chain is None or chain.chain is None:
            self.say("No option chain yet")
            return None
        idx = chain.table.currentIndex()
        key = chain.model.columns[idx.column()].key if idx.isValid() else ""
        if key[:2] not in ("c_", "p_"):
            self.say("Select a call or put cell in the option chain first")
            return None
        row = chain.model.value(idx.row(), f"{key[0]}_row")
        if row is None or not math.isfinite(float(row)) or int(row) < 0:
            self.say("That strike has no contract on this side")
            return None
        return Leg(chain.chain.option(int(row)), side)

    # ---- actions -----------------------------------------------------------------------------------
    def to_ticket(self, side: Side, at: str) -> None:
        leg = self.selected_leg(side)
        ticket = self._panel("ticket")
        if leg is None or ticket is None:
            return
        ticket.set_legs([leg])
        prices = ticket.prices
        value = math.nan
        if prices is not None and len(prices.leg_bid):
            value = float({"bid": prices.leg_bid, "ask": prices.leg_ask, "mid": prices.leg_mid}[at][0])
        if not math.isfinite(value) or value <= 0:
            self.say(f"{leg.symbol} has no {at} price: the ticket keeps its own")
            self._raise("ticket")
            return
        ticket.set_limit_price(value if side is Side.BUY else -value)
        self._raise("ticket")
        self.say(f"Ticket: {side.value} 1 {leg.symbol} at the {at} ({value:.2f})")

    def flip(self) -> None:
        ticket = self._panel("ticket")
        if ticket is None or not ticket.legs:
            self.say("The ticket has no legs to flip")
            return
        limit = float(ticket.limit_price())
        ticket.set_legs([Leg(x.instrument, Side.SELL if x.side is Side.BUY else Side.BUY, x.ratio, x.open_close)
                         for x in ticket.legs])
        ticket.set_limit_price(-limit)
        self.say("Ticket flipped: every leg reversed")

    def submit(self) -> None:
        ticket = self._panel("ticket")
        if ticket is None:
            return
        if not ticket.submit_button.isEnabled():
            self.say("The ticket cannot be submitted now: " + (ticket.message.text() or "nothing to send"))
            return
        ticket.submit()
        self.say("Ticket submitted")

    def ask_cancel_all(self) -> None:
        """Ask, naming how many orders are working; only *Cancel them* sends ``CancelAllOrders``."""
        n = eq.open_order_count(self.window.engine)
        if n == 0:
            self.say("No working orders to cancel")
            return
        box = QtWidgets.QMessageBox(self.window)
        box.setWindowTitle("Cancel all orders?")
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setText(f"Cancel all {n} working order{'s' if n != 1 else ''}?")
        box.setInformativeText("Orders awaiting approval are cancelled too.")
        yes = box.addButton("Cancel them", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Keep them", QtWidgets.QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.NoButton)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)

        def finished(_result: int) -> None:
            self.cancel_box = None
            if box.clickedButton() is yes:
                self.cancel_all()
            else:
                self.say("Nothing cancelled")

        box.finished.connect(finished)
        self.cancel_box = box
        box.open()  # never exec(): the loop keeps running

    def cancel_all(self) -> None:
        send_command(self.window.engine, CancelAllOrders(reason="cancel all (hotkey)"),
                     on_error=lambda message: self.say(f"Cancel all failed: {message}"),
                     on_result=lambda _r: self.say("Cancel all sent"))

    def open_sheet(self) -> ShortcutsSheet:
        self.sheet = ShortcutsSheet(self.window)
        self.sheet.open()
        return self.sheet


def window_shortcuts(window: QtWidgets.QMainWindow) -> list[tuple[str, str, str]]:
    """(where, action, keys) of every action of the window and its menus that has a shortcut."""
    seen: set[int] = set()
    out: list[tuple[str, str, str]] = []

    def add(where: str, act: QtGui.QAction) -> None:
        if id(act) in seen or act.isSeparator():
            return
        seen.add(id(act))
        if act.menu() is not None:
            for sub in act.menu().actions():
                add(f"{where} ▸ {act.text().replace('&', '')}", sub)
            return
        keys = ", ".join(s.toString(QtGui.QKeySequence.SequenceFormat.NativeText) for s in act.shortcuts())
        if keys:
            out.append((where, act.text().replace("&&", "\0").replace("&", "").replace("\0", "&"), keys))

    for menu_action in window.menuBar().actions():
        if menu_action.menu() is not None:
            for act in menu_action.menu().actions():
                add(menu_action.text().replace("&", ""), act)
    for act in window.actions():
        add("Window", act)
    return out


class ShortcutsSheet(QtWidgets.QDialog):
    """Every shortcut of the window, read from its actions when opened."""

    def __init__(self, window: QtWidgets.QMainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        self.setObjectName("shortcutsSheet")
        self.rows = window_shortcuts(window)
        self.table = QtWidgets.QTableWidget(len(self.rows), 3)
        self.table.setHorizontalHeaderLabels(["Keys", "Action", "Menu"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, (where, text, keys) in enumerate(self.rows):
            for c, value in enumerate((keys, text, where)):
                self.table.setItem(r, c, QtWidgets.QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        note = QtWidgets.QLabel("Change the trading hotkeys in File ▸ Settings ▸ shortcuts (applied at the next start).")
        note.setWordWrap(True)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.table, 1)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.resize(560, 460)


def install_hotkeys(window: MainWindow, trading_menu: QtWidgets.QMenu, help_menu: QtWidgets.QMenu) -> TradingHotkeys:
    """Create the hotkeys from the engine's ``[shortcuts]`` settings, list them under Trading ▸ Hotkeys and put
    the sheet in the Help menu."""
    hotkeys = TradingHotkeys(window, eq.settings(window.engine).shortcuts)
    sub = trading_menu.addMenu("&Hotkeys")
    for key, act in hotkeys.actions.items():
        if key == "flip":
            sub.addSeparator()
        sub.addAction(act)
    help_menu.addAction(hotkeys.sheet_action)
    return hotkeys
