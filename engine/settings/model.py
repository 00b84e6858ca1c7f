"""The settings schema: the root model mounts each area's section (pure pydantic modules).

Secrets are never settings: credentials live in the OS keyring (engine/credentials.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.backtest.config import BacktestConfig
from engine.brokers.config import BrokersConfig
from engine.brokers.paper_config import PaperConfig
from engine.market.config import SimulatorConfig
from engine.notify.config import MonitoringConfig, NotifyConfig
from engine.oms.config import OmsConfig
from engine.risk.config import RiskConfig
from engine.store.config import BackupConfig
from engine.strategies.config import StrategyEntry
from engine.surface.config import SurfaceConfig


class GeneralSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme: Literal["dark", "light"] = "dark"
    start_mode: Literal["paper"] = Field("paper", description="The app always starts in paper mode; live is opt-in.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    seed: int = Field(7, ge=0, description="Seed of the simulated market (numpy seeds are non-negative).")
    ui_refresh_hz: float = Field(10.0, gt=0.5, le=60.0, description="How often the GUI repaints coalesced events.")


#: shortcuts the window already owns (File, Trading menus, kill switch): a trading hotkey may not take them
RESERVED_SHORTCUTS = {"ctrl+q": "Quit", "ctrl+,": "Settings", "ctrl+shift+k": "the kill switch"}


class ShortcutsConfig(BaseModel):
    """Trading hotkeys of the window (Qt key sequences such as ``F5``, ``Shift+F7``, ``Ctrl+Return``; empty
    switches one off). Buy/sell put the chain's selected contract on the ticket at that price; submit and
    cancel all take the ticket's and the Orders panel's path (approval, confirmation)."""

    model_config = ConfigDict(extra="forbid")

    buy_bid: str = "F5"
    buy_mid: str = "F6"
    buy_ask: str = "F7"
    sell_bid: str = "Shift+F5"
    sell_mid: str = "Shift+F6"
    sell_ask: str = "Shift+F7"
    flip: str = "F8"
    submit: str = "Ctrl+Return"
    cancel_all: str = "Ctrl+Shift+X"
    shortcuts_sheet: str = "F1"

    @model_validator(mode="after")
    def _distinct(self) -> ShortcutsConfig:
        seen: dict[str, str] = {}
        for name, value in self.model_dump().items():
            key = value.replace(" ", "").lower()
            if not key:
                continue
            if key in RESERVED_SHORTCUTS:
                raise ValueError(f"{name}: {value} is already the shortcut of {RESERVED_SHORTCUTS[key]}")
            if key in seen:
                raise ValueError(f"{name}: {value} is already the shortcut of {seen[key]}")
            seen[key] = name
        return self


class Settings(BaseModel):
    """Root settings. Unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    general: GeneralSettings = Field(default_factory=GeneralSettings)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    brokers: BrokersConfig = Field(default_factory=BrokersConfig)
    oms: OmsConfig = Field(default_factory=OmsConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    surface: SurfaceConfig = Field(default_factory=SurfaceConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    shortcuts: ShortcutsConfig = Field(default_factory=ShortcutsConfig)
    #: ``[[strategies]]``: the strategies the engine hosts (engine/strategies/config.py, docs/strategies.md)
    strategies: list[StrategyEntry] = Field(default_factory=list)
