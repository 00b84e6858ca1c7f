"""A synthetic index of simulated components, each listing options, and its correlation model.

An underlying whose spec has ``components`` (shares per member) is an index: at every step of the dynamics its
level is Σ shares × the members' prices (:class:`IndexBasket`, applied by
:meth:`engine.market.simulated.dynamics.FactorDynamics.advance`), so index and members never disagree.

**Correlation model.** Members follow the one-factor model of the dynamics: log returns β_i·(market factor) +
idiosyncratic noise whose variance grows with √stress. The pairwise correlation is therefore regime-dependent,
``ρ_ij = β_i β_j v / (σ_i σ_j)`` with ``σ_i² = β_i² v + s_i² √stress`` (:func:`model_correlation`): low in calm
markets, high in crises, when the factor dominates — the behaviour dispersion trades live on.

**Its options** are priced by the quote engine from the index's own ``beta``, ``idio_vol`` and
``variance_premium``; :func:`basket_universe` sets the first two from the members' (weights at the start) so
the index's implied vol matches the basket's variance, and gives the index a larger variance premium than its
members: index options richer than the correlation that is realized, as on real indices.
"""

from __future__ import annotations

import numpy as np

from engine.market.config import RootSpec, UnderlyingSpec

#: the default basket: (symbol, spot, beta, idiosyncratic vol, shares in the index) — an index near 315, so that
#: one defined-risk index option structure fits a $100,000 account's risk per trade
BASKET: tuple[tuple[str, float, float, float, float], ...] = (
    ("DSPA", 180.0, 1.20, 0.28, 0.3),
    ("DSPB", 95.0, 0.90, 0.22, 0.6),
    ("DSPC", 240.0, 1.10, 0.30, 0.2),
    ("DSPD", 60.0, 0.80, 0.20, 0.9),
    ("DSPE", 130.0, 1.30, 0.35, 0.4),
    ("DSPF", 75.0, 1.00, 0.25, 0.7),
)


class IndexBasket:
    """The index rows of a universe and their members (row indices and shares), for the dynamics."""

    def __init__(self, names: list[str], components: list[dict[str, float]]) -> None:
        self.rows: list[tuple[int, np.ndarray, np.ndarray]] = []
        for row, comp in enumerate(components):
            if comp:
                members = np.array([names.index(c) for c in comp], dtype=np.int64)
                self.rows.append((row, members, np.array(list(comp.values()), dtype=float)))

    def __bool__(self) -> bool:
        return bool(self.rows)

    def apply(self, log_s: np.ndarray, path: np.ndarray | None = None) -> None:
        """Set each index's log level from its members' (in ``log_s``, and in every step of ``path``)."""
        for row, members, shares in self.rows:
            log_s[row] = np.log(np.exp(log_s[members]) @ shares)
            if path is not None:
                path[:, row] = np.log(np.exp(path[:, members]) @ shares)


def index_weights(spots: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Value weights of the members: shares × price over the index level."""
    value = np.asarray(spots, float) * np.asarray(shares, float)
    return value / value.sum()


def model_correlation(beta: np.ndarray, idio: np.ndarray, factor_variance: float, stress: float) -> np.ndarray:
    """The members' correlation matrix under the one-factor model at factor variance ``v`` and ``stress``."""
    beta = np.asarray(beta, float)
    idio2 = np.asarray(idio, float) ** 2 * np.sqrt(stress)
    cov = np.outer(beta, beta) * factor_variance + np.diag(idio2)
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def basket_universe(symbol: str = "DSPX", basket: tuple[tuple[str, float, float, float, float], ...] = BASKET,
                    *, variance_premium: float = 1.35, member_premium: float = 1.05) -> list[UnderlyingSpec]:
    """The members (equities with weekly and monthly options) and the index (European, cash-settled) as specs to
    add to a simulator universe: ``SimulatorConfig(universe=[*default_universe(), *basket_universe()])``."""
    if not 5 <= len(basket) <= 10:
        raise ValueError(f"an index basket has 5-10 members, got {len(basket)}")
    members = [UnderlyingSpec(symbol=s, kind="equity", spot=spot, beta=b, idio_vol=iv, dividend_yield=0.0,
                              roots=[RootSpec(root=s, cycles=["monthly", "weekly"], months_ahead=3, weeks_ahead=3)],
                              strike_steps=(1.0, 2.5, 5.0), max_strikes=24, strike_range=0.6, liquidity=0.7,
                              skew_rho=-0.45, variance_premium=member_premium)
               for s, spot, b, iv, _ in basket]
    spots = np.array([m[1] for m in basket])
    shares = np.array([m[4] for m in basket])
    w = index_weights(spots, shares)
    beta = float(w @ np.array([m[2] for m in basket]))
    idio = float(np.sqrt(w**2 @ np.array([m[3] for m in basket]) ** 2))
    level = float(spots @ shares)
    index = UnderlyingSpec(symbol=symbol, kind="index", spot=level, beta=beta, idio_vol=idio, dividend_yield=0.0,
                           tick_scheme="standard", components={m[0]: m[4] for m in basket},
                           roots=[RootSpec(root=symbol, cycles=["monthly", "weekly"], settlement="cash_pm",
                                           style="european", months_ahead=3, weeks_ahead=3)],
                           strike_steps=(1.0, 5.0, 10.0), max_strikes=36, strike_range=0.4, liquidity=0.8,
                           skew_rho=-0.7, variance_premium=variance_premium)
    return [*members, index]
