"""A real option chain priced with engine.pricing.bsm (skewed smile, half-spread quotes)."""

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from engine.model import Option, OptionChain  # noqa: E402
from engine.pricing import bsm  # noqa: E402

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def priced_chain(spot: float = 100.0, expiries: tuple[date, ...] = (date(2026, 3, 20), date(2026, 4, 17)),
                 strikes: np.ndarray | None = None, r: float = 0.04, q: float = 0.0) -> OptionChain:
    strikes = np.arange(80.0, 121.0, 5.0) if strikes is None else strikes
    opts = [Option("XYZ", e, k, right) for e in expiries for k in strikes for right in ("C", "P")]
    k = np.array([float(o.strike) for o in opts])
    t = np.array([o.time_to_expiry(NOW) for o in opts])
    vol = 0.25 - 0.3 * np.log(k / spot)  # put skew
    fair = bsm.price(np.array([o.is_call for o in opts]), spot, k, t, r, q, vol)
    half = np.maximum(0.02, 0.02 * fair)
    return OptionChain.build("XYZ", spot, NOW, opts, bid=np.round(np.maximum(fair - half, 0.0), 2),
                             ask=np.round(fair + half, 2), open_interest=np.arange(len(opts)) * 10.0)


@pytest.fixture()
def chain() -> OptionChain:
    return priced_chain()
