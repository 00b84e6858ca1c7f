"""The streaming refit (issue 22): its repair starts from the previous repaired surface instead of a fresh eSSVI
backbone, and must be exactly as free of arbitrage as the cold path — on the SPX-shaped chain and on adversarial
ones (crossed and missing quotes, one expiry, a same-day expiry, a market that jumped). The service passes the
previous repaired slices along and always replaces its unrepaired surface with the repaired one."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import engine.surface.arbitrage as arbitrage
from engine.bus import Bus
from engine.model.chain import OptionChain
from engine.surface.arbitrage import check_grids, check_slices
from engine.surface.config import SurfaceConfig
from engine.surface.fit import SurfaceFit, WarmStart, fit_chain, repair_fit
from engine.surface.service import SurfaceService, SurfaceUpdated
from engine.surface.svi import fit_svi_batch
from tests.surface.synthetic import (
    SPX_HESTON,
    build_chain,
    expiry_dates,
    log_strikes,
    spx_expiry_days,
    spx_like_chain,
    svi_price_fn,
)

R = 0.045


@pytest.fixture(scope="module")
def spx_small() -> OptionChain:
    """20 of the 48 SPX-shaped expiries (dailies included) × 104 strikes: 4,160 rows with the SPX tick noise."""
    return spx_like_chain(20, 104)


@pytest.fixture(scope="module")
def first(spx_small: OptionChain) -> tuple[SurfaceFit, SurfaceFit]:
    """(unrepaired, repaired) fits of the first snapshot: what the service holds before the next one."""
    raw = fit_chain(spx_small, rate=R, repair=False)
    return raw, repair_fit(raw, spx_small)


def _moved(chain: OptionChain, seed: int, size: float = 0.002) -> OptionChain:
    bump = 1.0 + size * np.random.default_rng(seed).standard_normal(len(chain))
    return chain.with_quotes(chain.bid * bump, chain.ask * bump)


def _dense_checks(fit: SurfaceFit):
    """The existing checks on grids five times denser than the repair's (2,001 + 101 points per slice)."""
    ranges, params = [], []
    for i, s in enumerate(fit.slices):
        if s.params is not None:
            rows = fit.ivs.used & (fit.ivs.expiry_index == i)
            ranges.append((fit.ivs.k[rows].min(), fit.ivs.k[rows].max()))
            params.append(s.params.as_array())
    return check_slices(np.array(params), check_grids(np.array(ranges), n=2001))


def _warm(fits: tuple[SurfaceFit, SurfaceFit]) -> WarmStart:
    ws = WarmStart.from_fit(fits[0])
    assert ws is not None
    return ws.with_repaired(fits[1])


def _assert_arbitrage_free(fit: SurfaceFit) -> None:
    assert fit.ok
    assert fit.arbitrage.arbitrage_free and fit.arbitrage.unresolved == ()
    assert fit.arbitrage.butterfly_points == 0 and fit.arbitrage.calendar_points == 0
    bad = [c for c in _dense_checks(fit) if not c.ok]
    assert not bad, bad


def _spx_shaped(days: list[int], heston_params: tuple[float, ...] = SPX_HESTON, n_strikes: int = 60) -> OptionChain:
    """SPX-shaped quotes (Heston prices, 5-point strikes from −5 to +2.5 ATM sd, 0.05 ticks, 1.5 % spreads)."""
    from engine.pricing import heston

    spot, q, tick = 5000.0, 0.013, 0.05

    def strikes(T: float) -> np.ndarray:
        F = spot * np.exp((R - q) * T)
        sd = 0.21 * np.sqrt(max(T, 1.0 / 365.0))
        return np.unique(np.round(F * np.exp(np.linspace(-5.0 * sd, 2.5 * sd, n_strikes)) / 5.0) * 5.0)

    chain = build_chain(spot=spot, expiries=expiry_dates(days), strikes=strikes,
                        price=lambda c, K, T: heston.price(c, spot, K, T, R, q, *heston_params),
                        half_spread=lambda p: np.maximum(tick, 0.015 * p))
    return chain.with_quotes(np.floor(np.maximum(chain.bid, 0.0) / tick + 1e-9) * tick,
                             np.ceil(chain.ask / tick - 1e-9) * tick)


def _jumped() -> OptionChain:
    """The expiries of ``spx_small`` after a volatility spike: spot variance 0.02 → 0.08, skew steeper."""
    return _spx_shaped(spx_expiry_days(20), (0.08, 2.0, 0.06, 0.8, -0.8), 104)


def _crossed_and_missing(chain: OptionChain) -> OptionChain:
    rng = np.random.default_rng(11)
    bid, ask = chain.bid.copy(), chain.ask.copy()
    n = len(bid)
    crossed = rng.choice(n, n // 20, replace=False)
    bid[crossed], ask[crossed] = ask[crossed] + 0.5, bid[crossed]
    bid[rng.choice(n, n // 25, replace=False)] = np.nan
    ask[rng.choice(n, n // 25, replace=False)] = np.nan
    return chain.with_quotes(bid, ask)


def _one_expiry(chain: OptionChain) -> OptionChain:
    return chain.take(chain.expiry == np.unique(chain.expiry)[3])


# ---- WarmStart carries the repaired slices ------------------------------------------------------------------------
def test_warm_start_carries_the_repaired_slices_of_its_own_expiries(first: tuple[SurfaceFit, SurfaceFit]) -> None:
    raw, repaired = first
    ws = WarmStart.from_fit(raw)
    assert ws is not None and ws.repaired is None  # the unrepaired fit has arbitrage: nothing to reuse from it
    assert ws.repaired_for(ws.expiries) is None
    with_rep = ws.with_repaired(repaired)
    np.testing.assert_array_equal(with_rep.repaired, repaired.surface.params)
    # an expiry the previous surface did not have gets a NaN row; other rows stay aligned
    asked = np.concatenate([ws.expiries[:2], np.array(["2031-01-17"], dtype="datetime64[s]")])
    rows = with_rep.repaired_for(asked)
    assert rows is not None
    np.testing.assert_array_equal(rows[:2], repaired.surface.params[:2])
    assert np.isnan(rows[2]).all()
    assert with_rep.repaired_for(np.array(["2031-01-17"], dtype="datetime64[s]")) is None
    # a "repair" that left arbitrage (here: the unrepaired fit itself) contributes nothing
    assert np.isnan(ws.with_repaired(raw).repaired).all()


def test_a_clean_fit_is_its_own_repaired_surface() -> None:
    fit = fit_chain(spx_like_chain(3, 40), rate=R, repair=False)
    assert fit.arbitrage.arbitrage_free  # three well-spaced expiries of the SPX shape fit clean
    ws = WarmStart.from_fit(fit)
    assert ws is not None and ws.repaired is not None
    np.testing.assert_array_equal(ws.repaired, ws.params)


# ---- the streaming repair ------------------------------------------------------------------------------------------
def test_a_streaming_repair_reuses_the_previous_surface_and_skips_the_backbone(
        spx_small: OptionChain, first: tuple[SurfaceFit, SurfaceFit], monkeypatch: pytest.MonkeyPatch) -> None:
    moved = _moved(spx_small, 3)
    cold = fit_chain(moved, rate=R)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the eSSVI backbone was rebuilt")

    def no_fallback(*args, **kwargs):
        raise AssertionError("the SLSQP fallback ran")

    monkeypatch.setattr(arbitrage, "fit_essvi", no_backbone)
    monkeypatch.setattr(arbitrage, "_constrained_refit", no_fallback)
    hot = fit_chain(moved, rate=R, warm=_warm(first))
    _assert_arbitrage_free(hot)
    # starting from the last arbitrage-free surface keeps the fit at least as close to the quotes as a cold repair
    rm_hot = np.array([s.rmse_bp for s in hot.fitted_slices()])
    rm_cold = np.array([s.rmse_bp for s in cold.fitted_slices()])
    assert rm_hot.mean() <= rm_cold.mean() + 0.25
    assert rm_hot.max() <= rm_cold.max() + 1.0


def test_the_repair_afterwards_with_the_same_warm_start_gives_the_one_step_fit(
        spx_small: OptionChain, first: tuple[SurfaceFit, SurfaceFit]) -> None:
    moved = _moved(spx_small, 4)
    warm = _warm(first)
    raw = fit_chain(moved, rate=R, repair=False, warm=warm)
    one_step = fit_chain(moved, rate=R, warm=warm)
    later = repair_fit(raw, moved, warm=warm)
    np.testing.assert_array_equal(later.surface.params, one_step.surface.params)
    assert later.arbitrage.repairs == one_step.arbitrage.repairs


def test_previous_slices_from_a_market_that_jumped_get_a_fresh_backbone(
        spx_small: OptionChain, first: tuple[SurfaceFit, SurfaceFit], monkeypatch: pytest.MonkeyPatch) -> None:
    # after a volatility spike the old surface is far from the new quotes, so reusing it would cost fit; the
    # repair must build the backbone again and stay as good as a cold repair
    jumped = _jumped()
    calls: list[int] = []
    real = arbitrage.fit_essvi

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    raw = fit_chain(jumped, rate=R, repair=False)
    assert raw.arbitrage.found  # something to repair
    cold = repair_fit(raw, jumped)
    monkeypatch.setattr(arbitrage, "fit_essvi", spy)
    hot = repair_fit(raw, jumped, warm=_warm(first))
    assert calls, "the backbone was not rebuilt for a market that jumped"
    _assert_arbitrage_free(hot)
    rm_hot = np.array([s.rmse_bp for s in hot.fitted_slices()])
    rm_cold = np.array([s.rmse_bp for s in cold.fitted_slices()])
    assert rm_hot.mean() <= rm_cold.mean() + 0.25


@pytest.mark.parametrize("variant", ["crossed_and_missing", "one_expiry", "same_day_expiry", "jumped"])
def test_streaming_and_cold_refits_are_equally_arbitrage_free_on_adversarial_chains(
        variant: str, spx_small: OptionChain, first: tuple[SurfaceFit, SurfaceFit]) -> None:
    if variant == "same_day_expiry":
        base = _spx_shaped([0, 1, 2, 7, 30, 60])
        raw = fit_chain(base, rate=R, repair=False)
        previous = (raw, repair_fit(raw, base))
        chain = _moved(base, 5)
        assert np.min(chain.time_to_expiry(chain.ts)) * 365.0 < 1.0  # really a same-day expiry
    else:
        previous = first
        chain = {"crossed_and_missing": lambda: _crossed_and_missing(_moved(spx_small, 6)),
                 "one_expiry": lambda: _one_expiry(_moved(spx_small, 7)),
                 "jumped": _jumped}[variant]()
    cold = fit_chain(chain, rate=R)
    hot = fit_chain(chain, rate=R, warm=_warm(previous))
    for fit in (cold, hot):
        _assert_arbitrage_free(fit)
        assert all(np.isfinite(s.params.as_array()).all() for s in fit.fitted_slices())
    assert len(hot.fitted_slices()) == len(cold.fitted_slices())
    if variant == "same_day_expiry":
        assert len(hot.fitted_slices()) == 6  # the same-day expiry is fitted too


def test_the_search_on_fewer_points_finds_the_full_search_optimum(spx_small: OptionChain,
                                                                  first: tuple[SurfaceFit, SurfaceFit]) -> None:
    # the (m, σ) search sees 64 points a slice before its last zoom levels; on a dense smile it must end where
    # the search over every point ends (the polish runs on every point in both)
    from engine.surface.fit import _smile_arrays

    raw = first[0]
    ivs = raw.ivs
    fit_idx = [i for i, s in enumerate(raw.slices) if s.params is not None]
    rows = [np.nonzero(ivs.used & (ivs.expiry_index == i))[0] for i in fit_idx]
    K, W, OM, _ = _smile_arrays(ivs, fit_idx, rows, SurfaceConfig())
    assert max(len(r) for r in rows) > 64  # the thinning really applies
    thin = fit_svi_batch(K, W, OM)
    full = fit_svi_batch(K, W, OM, search_points=0)
    np.testing.assert_allclose(thin.wrmse, full.wrmse, rtol=0.05)
    assert thin.wrmse.sum() <= full.wrmse.sum() * 1.005


# ---- the service ---------------------------------------------------------------------------------------------------
class _RecordingPool(ThreadPoolExecutor):
    """One thread; notes every job and the warm start each fit or repair job was given."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs: list[tuple[str, WarmStart | None]] = []

    def submit(self, fn, /, *args, **kwargs):
        if fn.__name__ in ("run_fit_job", "run_repair_job"):
            self.jobs.append((fn.__name__, args[-1]))
        return super().submit(fn, *args, **kwargs)


def _arbitrageable_chain(shift: float = 0.0) -> OptionChain:
    """Two expiries; the first is Axel Vogt's smile (butterfly arbitrage that every SVI fit of it reproduces)."""
    vogt = (-0.0410 + shift, 0.1331, 0.3060, 0.3586, 0.4153)

    def params(T: float) -> tuple[float, ...]:
        return vogt if T < 0.55 else (0.03 + shift, 0.04, -0.1, 0.0, 0.2)

    return build_chain(spot=100.0, expiries=expiry_dates([180, 210]),
                       strikes=log_strikes(-2.5, 2.5, 60, spot=100.0, vol=0.45),
                       price=svi_price_fn(params, spot=100.0, r=0.0, q=0.0),
                       half_spread=lambda p: np.maximum(1e-4, 0.001 * p))


async def test_the_service_repairs_each_refit_from_the_previous_repaired_surface() -> None:
    bus = Bus()
    seen: list[SurfaceUpdated] = []
    bus.subscribe(SurfaceUpdated, seen.append)
    pool = _RecordingPool()
    svc = SurfaceService(bus, rate=0.0, config=SurfaceConfig(), executor=pool)
    await svc.start()
    try:
        finals = [await svc.refit(_arbitrageable_chain()), await svc.refit(_arbitrageable_chain(2e-4))]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while not (seen and seen[-1] is finals[-1]):
            assert loop.time() < deadline, "the final SurfaceUpdated was not delivered"
            await asyncio.sleep(0.01)
    finally:
        await svc.stop()
        pool.shutdown(wait=True)
        await bus.close()
    assert all(f is not None for f in finals)
    # each snapshot: the unrepaired surface first, then its repaired one, which is what the service keeps
    assert [e.repair_pending for e in seen] == [True, False, True, False]
    assert [e.chain_ts for e in seen[::2]] == [e.chain_ts for e in seen[1::2]]
    assert svc.latest("SPX") is seen[-1] and svc.fit_count("SPX") == 2
    for e in seen[1::2]:
        assert e.fit.arbitrage.arbitrage_free
    # the second repair was given the first repaired surface's slices
    names = [name for name, _ in pool.jobs]
    assert names == ["run_fit_job", "run_repair_job", "run_fit_job", "run_repair_job"]
    second_repair_warm = pool.jobs[3][1]
    assert second_repair_warm is not None and second_repair_warm.repaired is not None
    np.testing.assert_array_equal(second_repair_warm.repaired, seen[1].fit.surface.params)
