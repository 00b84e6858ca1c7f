"""Where Optiondesk keeps its files (platformdirs), overridable for tests and portable installs.

``OPTIONDESK_HOME`` puts data, config and logs under one folder (``data/``, ``config/``, ``logs/``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "optiondesk"


@dataclass(frozen=True)
class AppPaths:
    data_dir: Path
    config_dir: Path
    log_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "optiondesk.db"

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.toml"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "optiondesk.log"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def ensure(self) -> AppPaths:
        for d in (self.data_dir, self.config_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def default(cls) -> AppPaths:
        home = os.environ.get("OPTIONDESK_HOME")
        if home:
            base = Path(home).expanduser()
            return cls(base / "data", base / "config", base / "logs")
        return cls(
            Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        )

    @classmethod
    def under(cls, base: Path) -> AppPaths:
        return cls(base / "data", base / "config", base / "logs")


def cache_dir() -> Path:
    """Derived data that can be rebuilt (market-calendar sessions, simulated histories):
    ``$OPTIONDESK_CACHE_DIR`` or the platform's user cache folder."""
    return Path(os.environ.get("OPTIONDESK_CACHE_DIR") or platformdirs.user_cache_dir(APP_NAME, appauthor=False))
