"""Backtester: columnar chain history, event-driven runner over the shared paper exchange, metrics,
walk-forward, sweeps on any executor, persistence and exports. Heavy modules are imported lazily."""
