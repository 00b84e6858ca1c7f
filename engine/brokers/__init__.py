"""Brokers: the Broker interface, the paper exchange, tastytrade and IBKR."""
