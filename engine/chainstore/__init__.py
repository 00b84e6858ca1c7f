"""Imported end-of-day option chains (Cboe DataShop, OptionsDX, the native layout) for backtests.

``optiondesk data import FILE…`` streams vendor files into :class:`~engine.chainstore.store.ChainStore`
(per root and month under the data folder); ``optiondesk backtest --source imported`` runs on them.
"""

from engine.chainstore.formats import FORMATS, ChainFormatError
from engine.chainstore.store import ChainStore, ImportReport

__all__ = ["FORMATS", "ChainFormatError", "ChainStore", "ImportReport"]
