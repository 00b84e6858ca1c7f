"""A settings file that cannot be used never stops the app (issue 14, finding 9): defaults, a named and
short error, the user's file kept (with a copy beside it when it is a regular file)."""

from __future__ import annotations

import os
import threading

import pytest

from engine.risk.config import HIGH, RiskConfig
from engine.settings import Settings, load_settings, validate


def _load_in_time(path, seconds: float = 10.0):
    """Run load_settings on a thread: a loader that blocks (a FIFO opened for reading) fails the test
    instead of hanging it."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", load_settings(path)), daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():  # unblock the reader so the thread can end, then fail
        with open(path, "wb"):
            pass
        t.join(5)
        pytest.fail(f"load_settings blocked on {path}")
    return box["r"]


def _short(r, limit: int = 300) -> str:
    assert r.errors, "expected an error"
    text = "; ".join(str(e) for e in r.errors)
    assert len(text) <= limit, text[:500]
    return text


def test_load_when_arrays_are_nested_thousands_deep_then_defaults_error_and_backup(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("[general]\nx = " + "[" * 50_000 + "]" * 50_000 + "\n")
    r = load_settings(p)
    assert r.settings == Settings()
    assert r.errors[0].key == "<file>" and "nested" in r.errors[0].message
    _short(r)
    assert r.backup_path is not None and r.backup_path.read_text() == p.read_text()


def test_load_when_tables_are_nested_thousands_deep_then_defaults_and_a_named_error(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("[general]\ntheme = \"light\"\n" + "[" + ".".join(f"t{i}" for i in range(5000)) + "]\nv = 1\n")
    r = load_settings(p)
    assert r.settings.general.theme in ("light", "dark")  # whatever survives, it is valid
    _short(r)
    assert r.backup_path is not None


def test_load_when_seed_is_negative_then_error_names_it_and_default_seed(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("[general]\nseed = -1\n[simulator]\nseed = -5\n")
    r = load_settings(p)
    assert {e.key for e in r.errors} == {"general.seed", "simulator.seed"}
    assert r.settings.general.seed == Settings().general.seed
    assert r.settings.simulator.seed == Settings().simulator.seed


def test_load_when_low_preset_is_looser_than_high_then_refused_and_risk_defaults(tmp_path):
    p = tmp_path / "settings.toml"
    loose = {**HIGH.model_dump(), "max_position_pct": 0.9, "max_daily_loss_pct": 0.5}
    body = "\n".join(f"{k} = {v!r}" for k, v in loose.items() if k != "regime_multipliers")
    p.write_text(f"[risk]\nlevel = 20\n[risk.low]\n{body}\n[risk.low.regime_multipliers]\n"
                 "low_vol = 1.0\nnormal = 1.0\nhigh_vol = 0.5\n")
    r = load_settings(p)
    assert r.settings.risk == RiskConfig()
    text = _short(r)
    assert "risk" in {e.key.split(".")[0] for e in r.errors}
    assert "max_position_pct" in text and "low" in text and "high" in text


@pytest.mark.parametrize(("preset", "field", "value"), [
    ("moderate", "max_positions", 50),      # Moderate above High
    ("high", "max_delta", 10.0),            # High below Low
    ("low", "stress_move_pct", 0.05),       # a smaller stress move is looser: Low's must be the largest
    ("moderate", "regime_multipliers", {"low_vol": 2.0, "normal": 3.0, "high_vol": 0.5}),
])
def test_risk_presets_when_not_monotone_on_any_limit_then_invalid(preset, field, value):
    base = RiskConfig()
    data = base.model_dump()
    data[preset][field] = value
    settings, errors = validate({"risk": data})
    assert settings.risk == base
    assert errors and field in str(errors[0])


def test_default_presets_are_monotone():
    settings, errors = validate({"risk": RiskConfig().model_dump()})
    assert errors == [] and settings.risk == RiskConfig()


def test_load_when_settings_is_a_fifo_then_no_hang_and_no_backup(tmp_path):
    p = tmp_path / "settings.toml"
    os.mkfifo(p)
    r = _load_in_time(p)
    assert r.settings == Settings() and r.backup_path is None
    assert "not a regular file" in _short(r)


def test_load_when_settings_is_a_folder_then_defaults_and_named_error(tmp_path):
    p = tmp_path / "settings.toml"
    p.mkdir()
    r = load_settings(p)
    assert r.settings == Settings() and r.backup_path is None
    assert "folder" in _short(r)


def test_load_when_file_is_not_utf8_then_defaults_error_says_so_and_backup(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_bytes(b'[general]\ntheme = "d\xe9j\xe0 vu"\n')
    r = load_settings(p)
    assert r.settings == Settings()
    assert "UTF-8" in _short(r)
    assert r.backup_path is not None and r.backup_path.read_bytes() == p.read_bytes()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_load_when_file_is_unreadable_then_defaults_and_named_error(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("[general]\nseed = 3\n")
    p.chmod(0)
    try:
        r = load_settings(p)
    finally:
        p.chmod(0o644)
    assert r.settings == Settings()
    assert "cannot read" in _short(r)


def test_load_when_file_is_20_mb_then_refused_without_echoing_it(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text('[general]\ntheme = "' + "x" * 20_000_000 + '"\n')
    r = load_settings(p)
    assert r.settings == Settings()
    assert "MB" in _short(r)


def test_bad_value_when_long_then_echo_is_capped(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text('[general]\ntheme = "' + "x" * 200_000 + '"\nseed = 4\n')
    r = load_settings(p)
    assert r.settings.general.seed == 4 and r.settings.general.theme == "dark"
    text = _short(r)
    assert "general.theme" in text and "…" in text
