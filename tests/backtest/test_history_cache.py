"""The simulated-history cache (.npz, no pyarrow) and Parquet refused clearly where pyarrow is absent."""

import subprocess
import sys
import textwrap

import numpy as np

from engine.backtest.sources import _cache_path, simulated_history


def test_cached_history_when_read_back_then_equals_the_generated_one(tmp_path):
    fresh = simulated_history("SPY", 0.08, 3, cache_dir=tmp_path)
    files = list((tmp_path / "histories").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "histories").glob("*.tmp"))
    cached = simulated_history("SPY", 0.08, 3, cache_dir=tmp_path)
    assert "cached" in cached.source and "cached" not in fresh.source
    for name in ("dates", "spot", "offsets", "contract", "bid", "ask", "iv", "delta", "c_expiry", "c_strike",
                 "c_is_call"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(fresh, name), err_msg=name)
    assert (cached.underlying, cached.root, cached.style, cached.settlement, cached.multiplier) == \
        (fresh.underlying, fresh.root, fresh.style, fresh.settlement, fresh.multiplier)
    np.testing.assert_array_equal(cached.symbols, fresh.symbols)


def test_cached_history_when_file_damaged_then_regenerated(tmp_path):
    first = simulated_history("SPY", 0.05, 4, cache_dir=tmp_path)
    path = next((tmp_path / "histories").glob("*.npz"))
    path.write_bytes(b"not a zip archive")
    again = simulated_history("SPY", 0.05, 4, cache_dir=tmp_path)
    assert "cached" not in again.source
    np.testing.assert_array_equal(again.bid, first.bid)
    assert path.stat().st_size > 1000  # rewritten


def test_cache_path_names_symbol_years_and_seed(tmp_path):
    from engine.market.config import SimulatorConfig

    p = _cache_path("spy", 5, 7, tmp_path, SimulatorConfig())
    assert p.name.startswith("SPY-5y-seed7-") and p.suffix == ".npz"


def test_parquet_when_pyarrow_missing_then_one_clear_sentence(tmp_path):
    """The lite desktop build leaves pyarrow out: a Parquet file is refused naming the file and the way out,
    a CSV still loads, and the CLI prints one line with exit 2."""
    csv = tmp_path / "chains.csv"
    csv.write_text("quote_date,expiration,strike,option_type,bid,ask,underlying_price\n"
                   "2024-01-02,2024-02-16,100,C,1.0,1.2,100\n")
    pq = tmp_path / "chains.parquet"
    pq.write_bytes(b"PAR1")
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "pyarrow" or name.startswith("pyarrow."):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from engine.backtest.chain_files import DataFileError, load_chains
        from engine.history.importer import HistoryImportError, read_file
        try:
            load_chains({str(pq)!r})
        except DataFileError as exc:
            print("DATA:", exc)
        try:
            read_file(__import__("pathlib").Path({str(pq)!r}))
        except HistoryImportError as exc:
            print("HISTORY:", exc)
        h = load_chains({str(csv)!r}, underlying="SPY")
        print("CSV rows:", h.n_rows)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"DATA: {pq}: reading or writing Parquet needs pyarrow" in out.stdout
    assert "convert the file to CSV" in out.stdout
    assert f"HISTORY: {pq}: reading or writing Parquet needs pyarrow" in out.stdout
    assert "CSV rows: 1" in out.stdout
