"""The listed contracts of the simulated universe: one flat, sorted contract table per session.

Rows are grouped by underlying (in universe order) and, inside an underlying, sorted like an
:class:`~engine.model.OptionChain`: by expiry instant, strike, calls before puts. A chain is then a
contiguous slice. Listing is refreshed at each session open: expired contracts roll off, new
expiries list with strikes around the spot, and strikes are added to live expiries when the spot
has moved (listed strikes never move).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
from numpy.typing import DTypeLike

from engine.market.config import RootSpec, SimulatorConfig
from engine.market.simulated.calendar import MarketCalendar, listed_expiries, strike_grid
from engine.model.instruments import AM_SETTLEMENT_TIME, EQUITY_OPTION_EXPIRY_TIME, NEW_YORK


@dataclass(frozen=True, eq=False)
class Listing:
    """Flat contract table (one row per option) plus the (underlying, expiry) pair table."""

    session: date
    symbol: np.ndarray  # object: compact OCC
    und: np.ndarray  # int: index into config.universe
    root: np.ndarray  # object: OCC root per row
    strike: np.ndarray
    is_call: np.ndarray
    expiry: np.ndarray  # datetime64[s] UTC expiry instant
    pair: np.ndarray  # int: index into the pair table
    monthly: np.ndarray  # bool: 3rd-Friday style standard expiry (more open interest)
    scheme: np.ndarray  # object: tick scheme per row
    american: np.ndarray  # bool: American exercise style
    pair_und: np.ndarray  # int per pair
    pair_expiry: np.ndarray  # datetime64[s] per pair
    slices: tuple[tuple[int, int], ...]  # per underlying: rows [start, stop)

    def __len__(self) -> int:
        return len(self.symbol)


def _expiry_instant(d: date, root: RootSpec) -> np.datetime64:
    t = AM_SETTLEMENT_TIME if root.settlement == "cash_am" else EQUITY_OPTION_EXPIRY_TIME
    utc = datetime.combine(d, t, tzinfo=NEW_YORK).astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(utc, "s")


def occ_keys(root: str, expiry: date, strikes: np.ndarray, call: bool) -> list[str]:
    ymd = expiry.strftime("%y%m%d")
    cp = "C" if call else "P"
    milli = np.rint(strikes * 1000).astype(np.int64)
    return [f"{root}{ymd}{cp}{m:08d}" for m in milli]


class ListingBook:
    """Remembers which strikes each (root, expiry) has listed, and builds the :class:`Listing` per session."""

    def __init__(self, config: SimulatorConfig, calendar: MarketCalendar) -> None:
        self.config = config
        self.calendar = calendar
        self._strikes: dict[tuple[str, date], np.ndarray] = {}
        self._grid_spot: dict[tuple[str, date], float] = {}  # spot when strikes were last added
        self._keys: dict[tuple[str, date], tuple[np.ndarray, list[str]]] = {}  # OCC keys of a strike array

    def build(self, session: date, spots: np.ndarray) -> Listing:
        cal = self.calendar
        rows: list[dict[str, np.ndarray | list[str]]] = []
        live: set[tuple[str, date]] = set()
        pair_und: list[int] = []
        pair_exp: list[np.datetime64] = []
        slices: list[tuple[int, int]] = []
        start = 0
        for ui, spec in enumerate(self.config.universe):
            spot = float(spots[ui])
            per_und: list[tuple[np.datetime64, np.ndarray, str, bool, str, bool]] = []
            for root in spec.roots:
                exps = listed_expiries(cal, session, list(root.cycles), months_ahead=root.months_ahead,
                                       weeks_ahead=root.weeks_ahead, days_ahead=root.days_ahead)
                monthly_set = set(listed_expiries(cal, session, ["monthly"], months_ahead=root.months_ahead,
                                                  weeks_ahead=0, days_ahead=0))
                for d in exps:
                    key = (root.root, d)
                    live.add(key)
                    old = self._strikes.get(key)
                    moved = abs(spot / self._grid_spot.get(key, spot) - 1.0)
                    if old is not None and moved < spec.near_band / 4:
                        strikes = old  # the spot has not moved enough to list new strikes
                    else:
                        years = max((d - session).days, 0.5) / 365.0
                        fresh = strike_grid(spot, years, spec.strike_steps, spec.near_band, spec.mid_band,
                                            spec.strike_range, spec.max_strikes)
                        strikes = fresh if old is None else self._merge(old, fresh)
                        self._grid_spot[key] = spot
                    self._strikes[key] = strikes
                    per_und.append((_expiry_instant(d, root), strikes, root.root, d in monthly_set, d.isoformat(),
                                    root.style == "american"))
            per_und.sort(key=lambda item: item[0])
            for inst, strikes, root_name, is_monthly, iso, american in per_und:
                d = date.fromisoformat(iso)
                n = len(strikes)
                pi = len(pair_und)
                pair_und.append(ui)
                pair_exp.append(inst)
                # calls before puts at each strike
                k2 = np.repeat(strikes, 2)
                calls = np.tile(np.array([True, False]), n)
                cached = self._keys.get((root_name, d))
                if cached is not None and cached[0] is strikes:
                    syms = cached[1]
                else:
                    sym_c = occ_keys(root_name, d, strikes, True)
                    sym_p = occ_keys(root_name, d, strikes, False)
                    syms = [s for pair in zip(sym_c, sym_p, strict=True) for s in pair]
                    self._keys[(root_name, d)] = (strikes, syms)
                rows.append({
                    "symbol": syms, "und": np.full(2 * n, ui), "root": [root_name] * (2 * n), "strike": k2,
                    "is_call": calls, "expiry": np.full(2 * n, inst), "pair": np.full(2 * n, pi),
                    "monthly": np.full(2 * n, is_monthly), "scheme": [spec.tick_scheme] * (2 * n),
                    "american": np.full(2 * n, american),
                })
            stop = start + sum(2 * len(s) for _, s, *_ in per_und)
            slices.append((start, stop))
            start = stop
        for key in [k for k in self._strikes if k not in live]:
            del self._strikes[key]
            self._grid_spot.pop(key, None)
            self._keys.pop(key, None)
        return self._assemble(session, rows, pair_und, pair_exp, slices)

    @staticmethod
    def _merge(old: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        """Old and new strikes together: a listed strike stays until expiry (it may have open interest;
        exchanges do not delist it), so a held contract always has a quote."""
        return np.union1d(old, fresh)

    @staticmethod
    def _assemble(session: date, rows: list[dict], pair_und: list[int], pair_exp: list[np.datetime64],
                  slices: list[tuple[int, int]]) -> Listing:
        def cat(name: str, dtype: DTypeLike | None = None) -> np.ndarray:
            if not rows:
                return np.array([], dtype=dtype)
            parts = [np.asarray(r[name], dtype=dtype) for r in rows]
            return np.concatenate(parts)

        return Listing(
            session=session,
            symbol=cat("symbol", object),
            und=cat("und", np.int64),
            root=cat("root", object),
            strike=cat("strike", float),
            is_call=cat("is_call", bool),
            expiry=cat("expiry", "datetime64[s]"),
            pair=cat("pair", np.int64),
            monthly=cat("monthly", bool),
            scheme=cat("scheme", object),
            american=cat("american", bool),
            pair_und=np.asarray(pair_und, dtype=np.int64),
            pair_expiry=np.asarray(pair_exp, dtype="datetime64[s]"),
            slices=tuple(slices),
        )

    # ---- persistence of the strike memory (restart / history resume) --------------------------
    def state(self) -> dict[str, list[float]]:
        return {f"{root}|{d.isoformat()}": s.tolist() for (root, d), s in self._strikes.items()}

    def restore(self, state: dict[str, list[float]]) -> None:
        self._strikes = {}
        for key, strikes in state.items():
            root, iso = key.split("|")
            self._strikes[(root, date.fromisoformat(iso))] = np.asarray(strikes, dtype=float)
