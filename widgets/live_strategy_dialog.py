"""The confirmation a strategy needs before it trades a real-money account.

Like the engine's own paper → live switch it names the connected live account(s) and requires the account id
typed; the host checks the id against the connected live brokers, so the dialog only collects it.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

Qt = QtCore.Qt


class LiveStrategyDialog(QtWidgets.QDialog):
    """Names the account a strategy would trade on and requires its id typed; opened with ``open()``."""

    def __init__(self, strategy_id: str, accounts: dict[str, str], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("strategy_live_dialog")
        self.setWindowTitle(f"Trade {strategy_id} live")
        self.setModal(True)
        layout = QtWidgets.QVBoxLayout(self)
        if accounts:
            names = "".join(f"<li><b>{broker}</b> account <b>{acct}</b></li>" for acct, broker in accounts.items())
            where = f"<p>Connected live account(s):</p><ul>{names}</ul>"
        else:
            where = "<p><b>No live broker is connected</b>: the engine will refuse until one is.</p>"
        text = QtWidgets.QLabel(
            f"<p>Strategy <b>{strategy_id}</b> will send its orders to a <b>REAL-MONEY</b> account, through the "
            f"same risk checks and approval as manual orders.</p>{where}"
            "<p>Type the account id to confirm:</p>")
        text.setWordWrap(True)
        text.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(text)
        self.account_edit = QtWidgets.QLineEdit()
        self.account_edit.setObjectName("confirm_account")
        self.account_edit.setPlaceholderText("account id")
        if len(accounts) == 1:
            self.account_edit.setPlaceholderText(next(iter(accounts)))
        layout.addWidget(self.account_edit)
        buttons = QtWidgets.QDialogButtonBox()
        self.confirm_button = buttons.addButton("Trade live", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        self.confirm_button.setObjectName("confirm_live")
        self.confirm_button.setEnabled(False)
        buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.account_edit.textChanged.connect(lambda t: self.confirm_button.setEnabled(bool(t.strip())))

    def account(self) -> str:
        return self.account_edit.text().strip()
