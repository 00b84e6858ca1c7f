"""TOML settings in the platform config dir, validated with clear errors."""

from engine.settings.loader import (
    SETTINGS_FILENAME,
    LoadResult,
    SettingsError,
    load_settings,
    save_settings,
    to_toml,
    validate,
)
from engine.settings.model import GeneralSettings, Settings

__all__ = [
    "SETTINGS_FILENAME", "GeneralSettings", "LoadResult", "Settings", "SettingsError",
    "load_settings", "save_settings", "to_toml", "validate",
]
