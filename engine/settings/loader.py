"""Load and save the TOML settings file.

A malformed file or an invalid value never stops the app: it starts on defaults for the bad parts,
``LoadResult.errors`` names each bad key and why, and the user's file is copied aside
(``settings.toml.bad-<timestamp>``) — never overwritten silently.
"""

from __future__ import annotations

import os
import reprlib
import shutil
import stat
import tomllib
from dataclasses import dataclass, field
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
        """Short whatever the input: a 20 MB value or a 5,000-level table is shown as its first characters."""
        message = _cap(self.message, 200)
        return f"{self.key}: {message}" + (f" (got {_short_repr(self.value)})" if self.value is not None else "")


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel, _REPR.maxdict, _REPR.maxlist = 60, 60, 2, 4, 4


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: Any) -> str:
    """reprlib stops at a depth and a length, so a huge or deeply nested value never floods a message."""
    try:
        text = _REPR.repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    text = _cap(text, 80)
    if isinstance(value, str) and len(value) > _REPR.maxstring and "…" not in text:
        text = text[:-1] + "…" + text[-1:]  # reprlib's "..." elision, marked the way the rest of the UI does
    return text


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
    if _depth(data) > MAX_SETTINGS_DEPTH:
        return Settings(), [SettingsError("<file>", f"not usable: tables are nested more than {MAX_SETTINGS_DEPTH} "
                                                    "levels deep")]
    errors: list[SettingsError] = []
    work = _deep_copy(data)
    if "strategies" in work:
        errors.extend(_keep_valid_strategies(work))
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


def _keep_valid_strategies(work: dict[str, Any]) -> list[SettingsError]:
    """Strategy entries are validated one by one: a bad entry is dropped (the host shows it as a disabled
    strategy with an alert) and the rest of the file, other strategies included, still applies."""
    from engine.strategies.config import split_entries

    raw = work.get("strategies")
    _, bad = split_entries(raw)
    if not bad:
        return []
    work["strategies"] = [raw[i] for i, item in enumerate(raw) if i not in {b[0] for b in bad}] \
        if isinstance(raw, list) else []
    return [SettingsError(key, f"strategy {label!r} not run: {message}") for _, label, key, message in bad]


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


#: a settings file is a few kilobytes; anything past this is not one (and is not read into memory)
MAX_SETTINGS_BYTES = 1_000_000
#: the deepest real setting is 4 tables down (``risk.low.regime_multipliers``)
MAX_SETTINGS_DEPTH = 16


def load_settings(path: str | Path) -> LoadResult:
    """Read ``path``; missing file → defaults. Bad file → defaults + errors + a backup copy.

    Nothing about the file may stop the start: a FIFO would block a plain ``open`` forever (so the file
    is opened non-blocking and its type checked on the open descriptor), a huge file is not read, a
    deeply nested one would raise ``RecursionError`` in the TOML parser or the validator."""
    p = Path(path)

    def bad(message: str, backup: bool) -> LoadResult:
        return LoadResult(Settings(), p, (SettingsError("<file>", message),), _backup(p) if backup else None, True)

    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return LoadResult(Settings(), p)
    except IsADirectoryError:
        return bad(f"{p} is a folder, not a settings file", backup=False)
    except OSError as exc:
        return bad(f"cannot read {p}: {exc.strerror or exc}", backup=False)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return bad(f"{p} is a folder, not a settings file", backup=False)
        if not stat.S_ISREG(st.st_mode):
            return bad(f"{p} is not a regular file (a pipe, socket or device): not read", backup=False)
        if st.st_size > MAX_SETTINGS_BYTES:
            return bad(f"the file is {st.st_size / 1e6:.1f} MB; a settings file is at most "
                       f"{MAX_SETTINGS_BYTES / 1e6:.0f} MB: not read", backup=True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as exc:
        return bad(f"cannot read {p}: {exc.strerror or exc}", backup=False)
    finally:
        os.close(fd)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return bad(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start})", backup=True)
    except tomllib.TOMLDecodeError as exc:
        return bad(f"not valid TOML: {exc}", backup=True)
    except RecursionError:
        return bad("not usable: values are nested too deeply", backup=True)
    depth = _depth(raw)
    if depth > MAX_SETTINGS_DEPTH:
        return bad(f"not usable: tables are nested {depth} levels deep (at most {MAX_SETTINGS_DEPTH})", backup=True)
    settings, errors = validate(raw)
    backup = _backup(p) if errors else None
    return LoadResult(settings, p, tuple(errors), backup, True, raw)


def _depth(value: Any) -> int:
    """How deep tables and arrays nest, without recursion (the value may be thousands of levels deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def _backup(p: Path) -> Path | None:
    from engine.clock import WallClock

    stamp = WallClock().now().strftime("%Y%m%dT%H%M%S")  # a file name on the disk: real time
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
