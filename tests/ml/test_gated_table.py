"""The backtest results table's ML-gated iv_rank_put_spread twin: its model trained in the same run on the
history before the backtest window, its row beside the ungated one."""

from __future__ import annotations

from engine.cli import main


def test_backtest_table_adds_the_ml_gated_twin_beside_the_ungated_row(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPTIONDESK_HOME", str(tmp_path / "home"))  # the app registry stays empty: not used
    out = tmp_path / "results.md"
    code = main(["backtest-table", "--years", "0.3", "--seed", "7", "--strategy", "iv_rank_put_spread",
                 "--workers", "1", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    names = [line.split("|")[1].strip() for line in rows]
    assert names == ["iv_rank_put_spread", "iv_rank_put_spread (ML-gated)"]
    gated = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert gated[-1] == "yes"  # completed and reconciles to the cent
    # the note says what gated it, trained before the window the row trades
    assert "trained in the same run on 5 years of the seeded daily history ending before" in text
    assert "not an edge" in text
    assert not (tmp_path / "home" / "data" / "models").exists()  # nothing registered in the app's folder

    import json

    data = json.loads(captured.out[:captured.out.rindex("]") + 1])
    twin = next(r for r in data if r["strategy"] == "iv_rank_put_spread (ML-gated)")
    plain = next(r for r in data if r["strategy"] == "iv_rank_put_spread")
    assert twin["ml_model"]["trained_before"] == plain["first_day"]
    assert twin["ml_model"]["training_window"][1] < plain["first_day"]  # no day of the window was trained on
