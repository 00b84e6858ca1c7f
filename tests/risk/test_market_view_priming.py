"""The risk service primes chain IVs only for the underlyings the book holds."""

from __future__ import annotations

from dataclasses import replace

from engine.risk.market_view import MarketView
from tests.analytics.conftest import NOW, priced_chain


def test_prime_ivs_prices_only_the_requested_underlyings() -> None:
    mv = MarketView(rate=0.04)
    xyz = priced_chain()
    abc = replace(priced_chain(), underlying="ABC")
    for chain in (xyz, abc):
        mv.update_chain(chain)
        mv.update_spot(chain.underlying, 100.0)
    assert mv.prime_ivs(NOW, {"XYZ"}) == len(xyz)
    assert mv._chains["XYZ"].iv is not None and mv._chains["ABC"].iv is None
    assert mv.prime_ivs(NOW, set()) == 0
    assert mv.prime_ivs(NOW) == len(xyz) + len(abc)  # None: every chain
    assert mv._chains["ABC"].iv is not None
