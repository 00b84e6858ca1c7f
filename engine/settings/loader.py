"""Load and save the TOML settings file.

A malformed file or an invalid value never stops the app: it starts on defaults for the bad parts,
``LoadResult.errors`` names each bad key and why, and the user's file is copied aside
(``settings.toml.bad-<timestamp>``) — never overwritten silently.
"""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.settings.model import Settings

SETTINGS_FILENAME = "settings.toml"


@dataclass(frozen=True)
class SettingsError:
    key: str  # dotted path, e.g. "risk.presets.low.max_daily_loss_pct"
    message: str
    value: Any = None

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" + (f" (got {self.value!r})" if self.value is not None else "")


@dataclass(frozen=True)
class LoadResult:
    settings: Settings
    path: Path
    errors: tuple[SettingsError, ...] = ()
    backup_path: Path | None = None
    existed: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _errors_from_validation(exc: ValidationError, data: dict[str, Any]) -> list[SettingsError]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown setting (typo?)"
        out.append(SettingsError(loc, msg, e.get("input") if e["type"] != "missing" else None))
    return out


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    """Remove the offending key so the rest of the file still applies."""
    node: Any = data
    for part in loc[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def validate(data: dict[str, Any]) -> tuple[Settings, list[SettingsError]]:
    """Validate a settings mapping; invalid keys fall back to defaults, each reported once."""
    errors: list[SettingsError] = []
    work = _deep_copy(data)
    for _ in range(50):
        try:
            return Settings.model_validate(work), errors
        except ValidationError as exc:
            errors.extend(_errors_from_validation(exc, work))
            before = repr(work)
            for e in exc.errors():
                loc = tuple(e["loc"])
                _drop(work, loc if e["type"] != "missing" else loc[:-1])
            if repr(work) == before:  # nothing more to drop: whole-section problem
                break
    return Settings(), errors


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_settings(path: str | Path) -> LoadResult:
    """Read ``path``; missing file → defaults. Bad file → defaults + errors + a backup copy."""
    p = Path(path)
    if not p.exists():
        return LoadResult(Settings(), p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        backup = _backup(p)
        return LoadResult(Settings(), p, (SettingsError("<file>", f"not valid TOML: {exc}"),), backup, True)
    except OSError as exc:
        return LoadResult(Settings(), p, (SettingsError("<file>", f"cannot read: {exc}"),), None, True)
    settings, errors = validate(raw)
    backup = _backup(p) if errors else None
    return LoadResult(settings, p, tuple(errors), backup, True, raw)


def _backup(p: Path) -> Path | None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dst = p.with_name(f"{p.name}.bad-{stamp}")
    n = 1
    while dst.exists():
        n += 1
        dst = p.with_name(f"{p.name}.bad-{stamp}-{n}")
    try:
        shutil.copy2(p, dst)
    except OSError:
        return None
    return dst


def to_toml(model: BaseModel) -> str:
    """Serialize settings as TOML. ``None`` values are omitted (TOML has no null; the default applies)."""
    import tomli_w

    return tomli_w.dumps(model.model_dump(mode="json", exclude_none=True))


def save_settings(settings: Settings, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(to_toml(settings), encoding="utf-8")
    tmp.replace(p)
    return p
