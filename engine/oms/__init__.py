"""Order management: the one order path (factory → risk → approval → router → broker), state machine,
approvals, mode router, rate limiter and reconciliation."""
