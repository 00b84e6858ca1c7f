"""OMS settings (the ``[oms]`` section). Pure pydantic, no heavy imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OmsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: manual approval of every order in paper mode (configurable; off by default)
    approval_in_paper: bool = False
    #: manual approval of every order in live mode (on by default, DESIGN.md §6)
    approval_in_live: bool = True
    #: a pending approval expires after this many seconds
    approval_expiry_s: float = Field(default=120.0, gt=0)
    #: how long a broker call may take before the order's fate is settled by reconciliation
    broker_call_timeout_s: float = Field(default=10.0, gt=0)
