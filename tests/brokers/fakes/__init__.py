"""Loopback servers speaking the brokers' wire protocols (127.0.0.1 only, started by the tests)."""
