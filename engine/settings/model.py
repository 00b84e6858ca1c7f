"""The settings schema. Every area mounts its own section model here; secrets are never settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GeneralSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme: Literal["dark", "light"] = "dark"
    start_mode: Literal["paper"] = Field("paper", description="The app always starts in paper mode; live is opt-in.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    seed: int = Field(7, description="Seed of the simulated market.")
    ui_refresh_hz: float = Field(10.0, gt=0.5, le=60.0, description="How often the GUI repaints coalesced events.")


class OrderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_in_paper: bool = Field(False, description="Hold paper orders for manual approval.")
    approval_in_live: bool = Field(True, description="Hold live orders for manual approval (strongly recommended).")
    approval_timeout_s: float = Field(120.0, gt=0, le=86400, description="Pending approvals expire after this.")


def _section_models() -> dict[str, type[BaseModel]]:
    """Sections contributed by the engine's areas (imported lazily: pure pydantic modules)."""
    return {}


class Settings(BaseModel):
    """Root settings. Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    orders: OrderSettings = Field(default_factory=OrderSettings)
