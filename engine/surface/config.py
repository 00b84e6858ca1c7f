"""Settings of the volatility-surface service (mounted as the ``[surface]`` section of the settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SurfaceConfig(BaseModel):
    """Quote filters, fit options, refit cadence and IV-rank rules.

    Units: fractions are plain ratios (0.5 = 50 %), times in seconds unless named ``_days``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- quote filters (each dropped point keeps its reason) -----------------------------------
    max_spread_fraction: float = Field(0.6, gt=0, description="drop quotes with (ask − bid)/mid above this")
    drop_zero_bid: bool = Field(True, description="drop quotes whose bid is zero (no real market)")
    max_quote_age_s: float = Field(60.0, gt=0, description="drop quotes older than this when ages are given")
    min_time_to_expiry_days: float = Field(0.1, ge=0, description="expiries closer than this are not fitted")
    min_strikes: int = Field(5, ge=3, description="an expiry needs at least this many valid strikes to be fitted")

    iv_exercise: Literal["auto", "american", "european"] = Field(
        "auto", description="IV model: auto follows the chain's exercise style; 'european' treats American quotes "
                            "as European (e.g. a source that prices them without early exercise)")

    # ---- forward from parity ---------------------------------------------------------------------
    forward_max_pairs: int = Field(12, ge=2)
    forward_min_pairs: int = Field(2, ge=1)
    forward_max_rate_deviation: float = Field(0.03, gt=0, description="max |implied − curve| rate")

    # ---- fit -------------------------------------------------------------------------------------
    min_iv_spread: float = Field(0.002, gt=0, description="IV spread floor in the 1/spread fit weight")
    repair_arbitrage: bool = True
    max_repair_cost_bp: float = Field(200.0, gt=0, description="skip a repair costing more RMSE than this")

    # ---- service -----------------------------------------------------------------------------------
    refit_interval_s: float = Field(1.0, gt=0, le=2.0, description="minimum time between refits per underlying")
    executor: Literal["process", "thread"] = "process"
    grid_expiries: int = Field(50, ge=2)
    grid_strikes: int = Field(100, ge=2)

    # ---- IV rank / percentile and realized vol --------------------------------------------------------
    iv_rank_lookback_days: int = Field(252, ge=5, description="trading days of ATM IV history in the window")
    iv_rank_min_history_days: int = Field(60, ge=2, description="fewer days than this: 'insufficient history'")
    iv_history_tenor_days: float = Field(30.0, gt=0, description="constant-maturity ATM IV stored daily")
    realized_vol_window_days: int = Field(20, ge=2)
