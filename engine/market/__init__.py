"""Market-data feeds: the Feed interface, the simulated market, tastytrade and IBKR."""
