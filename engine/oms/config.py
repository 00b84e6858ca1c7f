"""OMS settings (the ``[oms]`` section). Pure pydantic, no heavy imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OmsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: manual approval of every order in paper mode (configurable; off by default)
    approval_in_paper: bool = False
    #: manual approval of every order in live mode (on by default, docs/architecture.md §6)
    approval_in_live: bool = True
    #: a pending approval expires after this many seconds
    approval_expiry_s: float = Field(default=120.0, gt=0)
    #: how long a broker call may take before the order's fate is settled by reconciliation
    broker_call_timeout_s: float = Field(default=10.0, gt=0)
    #: a cancel that got no answer (outage, timeout, 5xx) is retried from this delay, doubling up to the max,
    #: until the broker confirms or says the order is gone
    cancel_retry_initial_s: float = Field(default=0.25, gt=0)
    cancel_retry_max_s: float = Field(default=5.0, gt=0)
    #: a submit whose outcome is unknown (5xx, timeout, dropped connection) is reconciled by client order id with
    #: backoff up to this interval; after ``unknown_outcome_alert_s`` without an answer a critical alert asks the
    #: trader to look at the broker (the order stays "unknown, reconciling", never REJECTED)
    unknown_outcome_max_interval_s: float = Field(default=10.0, gt=0)
    unknown_outcome_alert_s: float = Field(default=60.0, gt=0)
