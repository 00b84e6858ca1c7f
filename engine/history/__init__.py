"""Daily history per underlying (closes, ATM IV, IV rank/percentile, realized vol), backfilled at start."""

from engine.history.service import HistoryBackfilled, HistoryService, HistorySnapshot
from engine.history.simulated import SimulatedHistorySource
from engine.history.source import DailySeries, HistorySource

__all__ = ["DailySeries", "HistoryBackfilled", "HistoryService", "HistorySnapshot", "HistorySource",
           "SimulatedHistorySource"]
