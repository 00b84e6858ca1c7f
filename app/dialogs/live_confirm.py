"""The Paper → Live confirmation: names broker and account; nothing happens until it is confirmed."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets


class LiveConfirmDialog(QtWidgets.QDialog):
    """Shown with ``open()``; ``finished(Accepted)`` means the user confirmed this broker and account.

    The confirm button stays disabled until the acknowledgement box is ticked.
    """

    def __init__(self, broker: str, account_id: str, account_label: str = "", server: str = "live",
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("liveConfirmDialog")
        self.setWindowTitle("Switch to LIVE trading")
        self.setModal(True)
        self.broker = broker
        self.account_id = account_id

        banner = QtWidgets.QLabel("LIVE TRADING")
        banner.setObjectName("liveBanner")
        banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        where = "a broker PAPER server" if server == "paper server" else "a REAL-MONEY account"
        text = QtWidgets.QLabel(
            f"<p>Orders will be sent to <b>{broker}</b>, account <b>{account_id}</b> — {where}.</p>"
            "<p>Manual approval is switched on for live trading. The kill switch (Ctrl+Shift+K) halts "
            "everything at once.</p>"
        )
        text.setObjectName("liveConfirmText")
        text.setWordWrap(True)
        self.ack = QtWidgets.QCheckBox(f"I want orders to go to {broker} account {account_id}")
        self.ack.setObjectName("liveAck")
        buttons = QtWidgets.QDialogButtonBox()
        self.confirm = buttons.addButton("Go LIVE", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        self.confirm.setObjectName("liveConfirmButton")
        self.confirm.setEnabled(False)
        cancel = buttons.addButton("Stay in paper", QtWidgets.QDialogButtonBox.ButtonRole.RejectRole)
        cancel.setDefault(True)
        self.ack.toggled.connect(self.confirm.setEnabled)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(banner)
        lay.addWidget(text)
        lay.addWidget(self.ack)
        lay.addWidget(buttons)
        self.setMinimumWidth(460)
