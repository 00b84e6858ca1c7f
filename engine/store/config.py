"""Settings of the store's operations: scheduled backups and the P&L / Greeks / equity history cadence."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BackupConfig(BaseModel):
    """``[backup]`` in settings.toml. The engine backs the database up on this schedule while it runs."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Back the database up on a schedule while the engine runs.")
    interval_hours: float = Field(24.0, gt=0, le=24 * 365, description="Hours between scheduled backups.")
    keep: int = Field(7, ge=1, le=10_000, description="How many scheduled backups to keep (oldest deleted first).")
    folder: str = Field("", description="Where backups go; empty: the 'backups' folder in the data folder.")
    history_interval_s: float = Field(
        60.0, ge=1.0, le=86_400.0,
        description="Seconds of engine time between rows of the stored P&L, Greeks and equity history.")
