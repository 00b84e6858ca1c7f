"""One error policy for every ``optiondesk`` command (issue 14, finding 15): a known problem prints one
line on stderr and exits non-zero; an unexpected one prints one line naming the log, whose file holds the
traceback; a closed pipe ends quietly; ``--json`` is valid JSON (null for a missing number); pricing
inputs are checked with named reasons."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.pricing import bsm
from engine.store import Store

PRICE = ["price", "--right", "c", "--spot", "100", "--strike", "100", "--days", "30"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity (Python's own json accepts them; real JSON does not)."""
    def bad(token: str):
        raise ValueError(f"invalid JSON constant {token}")
    return json.loads(text, parse_constant=bad)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- pricing input ------------------------------------------------------------------------------
def test_price_when_right_is_not_c_or_p_then_one_line_and_exit_2(capsys):
    assert main(["price", "--right", "x", "--spot", "100", "--strike", "100", "--days", "30", "--vol", "0.2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--right" in line and "'x'" in line


@pytest.mark.parametrize("vol", ["20", "1e308", "inf", "nan"])
def test_price_when_vol_is_above_5_or_not_finite_then_refused_with_a_hint(capsys, vol):
    assert main([*PRICE, "--vol", vol]) == 2
    out = capsys.readouterr()
    line = _one_line(out.err)
    assert "--vol" in line and out.out == ""
    if vol == "20":
        assert "did you mean 20%?" in line


def test_price_when_vol_has_a_percent_suffix_then_it_is_percent(capsys):
    assert main([*PRICE, "--vol", "20%", "--json"]) == 0
    out = _strict_json(capsys.readouterr().out)
    assert out["price"] == pytest.approx(float(bsm.price("c", 100, 100, 30 / 365, 0.0, 0.0, 0.20)), rel=1e-12)


def test_price_when_days_is_zero_then_reason_is_named_and_json_has_null(capsys):
    assert main([*PRICE[:-1], "0", "--vol", "0.2", "--json"]) == 2
    cap = capsys.readouterr()
    out = _strict_json(cap.out)
    assert out["price"] is None and out["delta"] is None
    assert out["reason"] == "NONPOSITIVE_TIME"
    assert "NONPOSITIVE_TIME" in _one_line(cap.err)


def test_price_when_days_is_zero_as_text_then_reason_is_named(capsys):
    assert main([*PRICE[:-1], "0", "--vol", "0.2"]) == 2
    cap = capsys.readouterr()
    assert "NONPOSITIVE_TIME" in cap.out and "reason  4" not in cap.out


@pytest.mark.parametrize("flag", ["--spot", "--strike", "--days", "--rate", "--div"])
def test_price_when_an_input_is_not_finite_then_refused_naming_it(capsys, flag):
    argv = [*PRICE, "--vol", "0.2"]
    i = argv.index(flag) if flag in argv else None
    if i is None:
        argv += [flag, "nan"]
    else:
        argv[i + 1] = "nan"
    assert main(argv) == 2
    assert flag in _one_line(capsys.readouterr().err)


def test_iv_when_json_and_no_vol_then_null_not_nan(capsys):
    assert main(["iv", "--right", "c", "--spot", "100", "--strike", "105", "--days", "30", "--price", "150",
                 "--json"]) == 2
    out = _strict_json(capsys.readouterr().out)
    assert out["implied_vol"] is None and out["reason"] == "ABOVE_MAXIMUM"


def test_finite_json_replaces_nan_and_inf_everywhere():
    import numpy as np

    from engine.cli_errors import dumps_json

    text = dumps_json({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": np.float64("nan"),
                       "e": np.float32(1.5), "f": (2, np.int64(3))})
    assert _strict_json(text) == {"a": None, "b": [1.0, None, {"c": None}], "d": None, "e": 1.5, "f": [2, 3]}


# ---- databases that cannot be used --------------------------------------------------------------
def _random_bytes(p: Path) -> None:
    p.write_bytes(bytes(range(256)) * 16)


def _other_program(p: Path) -> None:
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.commit()
    con.close()


def _newer(p: Path) -> None:
    Store.open(p).close()
    con = sqlite3.connect(p)
    con.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (999, 'future', '2030-01-01')")
    con.commit()
    con.close()


def _folder(p: Path) -> None:
    p.mkdir()


@pytest.mark.parametrize("command", [["risk"], ["risk", "--json"], ["kill"], ["kill", "--reset", "--yes"]])
@pytest.mark.parametrize(("make", "words"), [(_random_bytes, "not an SQLite database"),
                                             (_other_program, "not an Optiondesk database"),
                                             (_newer, "schema version 999"),
                                             (_folder, "is a folder")])
def test_risk_and_kill_when_database_is_unusable_then_one_line_and_nonzero(capsys, tmp_path, command, make, words):
    db = tmp_path / "bad.db"
    make(db)
    code = main([*command, "--db", str(db)])
    cap = capsys.readouterr()
    assert code != 0
    line = _one_line(cap.err)
    assert words in line and str(db) in line
    assert cap.out == ""


def test_risk_when_database_is_unusable_then_details_are_in_the_log(capsys, tmp_path, home):
    db = tmp_path / "bad.db"
    _random_bytes(db)
    assert main(["risk", "--db", str(db)]) != 0
    capsys.readouterr()
    log = (home / "logs" / "optiondesk.log").read_text()
    assert "StoreError" in log and "not an SQLite database" in log


def test_unexpected_error_then_one_line_naming_the_log_and_traceback_in_it(capsys, monkeypatch, home):
    def boom(args):
        raise ZeroDivisionError("deliberately broken handler")

    monkeypatch.setattr("engine.pricing.cli._cmd_price", boom)
    assert main([*PRICE, "--vol", "0.2"]) == 1
    line = _one_line(capsys.readouterr().err)
    log_file = home / "logs" / "optiondesk.log"
    assert "ZeroDivisionError" in line and str(log_file) in line
    text = log_file.read_text()
    assert "Traceback" in text and "deliberately broken handler" in text and "boom" in text


# ---- through the console script (a real process) ------------------------------------------------
def _cli(*args: str, home: Path, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "OPTIONDESK_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                            env=env, text=True)


def test_chain_when_stdout_reader_is_gone_then_no_traceback(home):
    """``optiondesk chain SPY | head``: the reader closes the pipe; the command ends quietly."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line is written: every write fails with EPIPE
    try:
        proc = _cli("chain", "SPY", "--date", "2026-11-18", home=home, stdout=w)
    finally:
        os.close(w)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode != 0


def test_risk_when_database_is_random_bytes_then_process_prints_one_line(tmp_path, home):
    db = tmp_path / "bad.db"
    _random_bytes(db)
    proc = _cli("risk", "--db", str(db), home=home)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    assert "not an SQLite database" in _one_line(err)


def test_window_when_database_is_random_bytes_then_one_line_not_a_traceback_and_log_has_it(tmp_path):
    """``python -m app`` (the optiondesk-gui entry): the engine's start refuses the file before a window exists."""
    home = tmp_path / "portable"
    (home / "data").mkdir(parents=True)
    _random_bytes(home / "data" / "optiondesk.db")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "app", "--home", str(home), "--seconds", "1"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("optiondesk gui:")]
    assert len(ours) == 1 and "not an SQLite database" in ours[0]
    assert "Traceback" in (home / "logs" / "optiondesk.log").read_text()
