"""Reports: the persisted P&L / Greeks / equity history and the performance report (HTML, PDF via ``app``)."""
