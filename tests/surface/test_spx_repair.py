"""The fast arbitrage repair: analytic derivatives, the eSSVI backbone, an SPX-shaped chain end to end, bad quotes,
and the service's unrepaired-then-repaired publication."""

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
from engine.surface.repair import essvi_calendar, essvi_raw, fit_essvi, isotonic, svi_g_jacobian
from engine.surface.service import SurfaceService, SurfaceUpdated
from engine.surface.svi import durrleman_g, fit_svi_batch, svi_total_variance
from tests.surface.synthetic import (
    build_chain,
    equity_like_params,
    expiry_dates,
    log_strikes,
    spx_like_chain,
    svi_price_fn,
)

R = 0.045
VOGT = np.array([-0.0410, 0.1331, 0.3060, 0.3586, 0.4153])


@pytest.fixture(scope="module")
def spx_small() -> OptionChain:
    """20 of the 48 SPX-shaped expiries (dailies included) × 104 strikes: 4,160 rows, the same tick noise."""
    return spx_like_chain(20, 104)


@pytest.fixture(scope="module")
def spx_unrepaired(spx_small: OptionChain) -> SurfaceFit:
    return fit_chain(spx_small, rate=R, repair=False)


def _dense_checks(fit: SurfaceFit):
    """The existing checks on grids five times denser than the repair's (2,001 + 101 points per slice)."""
    ranges, params = [], []
    for i, s in enumerate(fit.slices):
        if s.params is not None:
            rows = fit.ivs.used & (fit.ivs.expiry_index == i)
            ranges.append((fit.ivs.k[rows].min(), fit.ivs.k[rows].max()))
            params.append(s.params.as_array())
    return check_slices(np.array(params), check_grids(np.array(ranges), n=2001))


# ---- derivatives -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [VOGT, np.array([0.01, 0.2, -0.6, 0.05, 0.1]),
                                    np.array([2e-4, 0.01, 0.55, 0.044, 0.0055])])
def test_g_and_w_derivatives_match_central_differences(params: np.ndarray) -> None:
    k = np.linspace(-1.2, 1.2, 41)[None, :]
    g, dg, w, dw = svi_g_jacobian(k, params[None, :])
    np.testing.assert_allclose(g[0], durrleman_g(k[0], *params), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(w[0], svi_total_variance(k[0], *params), rtol=1e-14)
    for j in range(5):
        h = 1e-6 * max(abs(params[j]), 1e-3)
        up, dn = params.copy(), params.copy()
        up[j] += h
        dn[j] -= h
        fd_g = (durrleman_g(k[0], *up) - durrleman_g(k[0], *dn)) / (2 * h)
        fd_w = (svi_total_variance(k[0], *up) - svi_total_variance(k[0], *dn)) / (2 * h)
        np.testing.assert_allclose(dg[0, :, j], fd_g, rtol=1e-5, atol=1e-6 * np.abs(fd_g).max())
        np.testing.assert_allclose(dw[0, :, j], fd_w, rtol=1e-6, atol=1e-9)


# ---- the eSSVI backbone -------------------------------------------------------------------------------------
def test_isotonic_pools_adjacent_violators() -> None:
    np.testing.assert_allclose(isotonic(np.array([1.0, 3.0, 2.0, 4.0, 0.0])), [1.0, 2.25, 2.25, 2.25, 2.25])
    np.testing.assert_allclose(isotonic(np.array([1.0, 2.0, 3.0])), [1.0, 2.0, 3.0])


def test_essvi_backbone_is_free_of_static_arbitrage_for_any_fitted_slices() -> None:
    # random slice parameters (skews that flip sign, wings that shrink with maturity): after the calendar
    # step the slices pass the existing butterfly and calendar checks, whatever went in
    rng = np.random.default_rng(7)
    for _ in range(25):
        S = 12
        theta = np.cumsum(rng.uniform(1e-5, 0.02, S))
        rho = rng.uniform(-0.98, 0.6, S)
        psi = rng.uniform(0.001, 0.5, S) * np.sqrt(theta / theta[-1])
        k = np.linspace(-0.6, 0.4, 50)
        grids = np.vstack(check_grids(np.tile([k[0], k[-1]], (S, 1))))
        r2, p2 = essvi_calendar(theta, np.clip(rho, -0.999, 0.999), np.minimum(psi, 1.0), grids)
        checks = check_slices(essvi_raw(theta, r2, p2), list(grids))
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_essvi_fit_follows_an_essvi_surface_it_can_represent() -> None:
    theta = np.array([0.005, 0.012, 0.03])
    rho_true, psi_true = np.array([-0.7, -0.6, -0.5]), np.array([0.05, 0.08, 0.12])
    k = np.tile(np.linspace(-0.5, 0.3, 40), (3, 1))
    truth = essvi_raw(theta, rho_true, psi_true)
    w = np.vstack([svi_total_variance(k[i], *truth[i]) for i in range(3)])
    rho, psi = fit_essvi(theta, k, w, np.ones_like(k), np.full(3, -0.2), np.full(3, 0.02))
    np.testing.assert_allclose(rho, rho_true, atol=1e-6)
    np.testing.assert_allclose(psi, psi_true, rtol=1e-6)


# ---- the SPX-shaped chain ------------------------------------------------------------------------------------
def test_spx_shaped_chain_has_arbitrage_before_the_repair(spx_unrepaired: SurfaceFit) -> None:
    rep = spx_unrepaired.arbitrage
    assert len(spx_unrepaired.fitted_slices()) == 20
    assert not rep.arbitrage_free and rep.repairs == ()  # the test below repairs something real
    assert rep.butterfly_points > 0 and rep.calendar_points > 0


def test_spx_shaped_chain_fits_arbitrage_free_on_a_dense_grid(spx_small: OptionChain,
                                                             spx_unrepaired: SurfaceFit,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the batched repair alone must do it: the slow slice-by-slice fallback is not allowed to run
    def no_fallback(*args, **kwargs):
        raise AssertionError("the SLSQP fallback ran")

    monkeypatch.setattr(arbitrage, "_constrained_refit", no_fallback)
    fit = fit_chain(spx_small, rate=R)
    assert fit.arbitrage.arbitrage_free and fit.arbitrage.unresolved == ()
    assert fit.arbitrage.butterfly_points == 0 and fit.arbitrage.calendar_points == 0
    assert all(c.ok for c in _dense_checks(fit))
    # the repair stays close to the quotes: a few bp on average, bounded on the worst slice
    before = np.array([s.rmse_bp for s in spx_unrepaired.fitted_slices()])
    after = np.array([s.rmse_bp for s in fit.fitted_slices()])
    assert np.mean(after - before) < 3.0
    assert after.max() < before.max() + 25.0


def test_repairing_afterwards_gives_the_one_step_fit(spx_small: OptionChain, spx_unrepaired: SurfaceFit) -> None:
    one_step = fit_chain(spx_small, rate=R)
    later = repair_fit(spx_unrepaired, spx_small)
    np.testing.assert_array_equal(later.surface.params, one_step.surface.params)
    assert later.arbitrage.repairs == one_step.arbitrage.repairs
    assert later.elapsed_ms >= spx_unrepaired.elapsed_ms
    assert repair_fit(later, spx_small) is later  # nothing left to repair


def test_crossed_missing_and_zero_quotes_still_fit_arbitrage_free(spx_small: OptionChain) -> None:
    rng = np.random.default_rng(11)
    bid, ask = spx_small.bid.copy(), spx_small.ask.copy()
    n = len(bid)
    crossed = rng.choice(n, n // 20, replace=False)
    bid[crossed], ask[crossed] = ask[crossed] + 0.5, bid[crossed]
    nan_bid = rng.choice(n, n // 25, replace=False)
    bid[nan_bid] = np.nan
    nan_ask = rng.choice(n, n // 25, replace=False)
    ask[nan_ask] = np.nan
    zero = rng.choice(n, n // 30, replace=False)
    bid[zero] = 0.0
    fit = fit_chain(spx_small.with_quotes(bid, ask), rate=R)
    assert fit.ok and len(fit.fitted_slices()) == 20
    reasons = set(fit.ivs.reason)
    assert {"crossed", "missing_quote", "zero_bid"} <= reasons
    assert not np.any(fit.ivs.used & np.isin(np.arange(n), crossed))
    assert fit.arbitrage.arbitrage_free
    assert all(np.isfinite(s.params.as_array()).all() for s in fit.fitted_slices())


def test_a_failing_batched_repair_falls_back_to_the_slice_by_slice_refit(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("singular")

    monkeypatch.setattr(arbitrage, "fit_essvi", broken)
    fit = fit_chain(_arbitrageable_chain(), rate=0.0)
    assert fit.arbitrage.found and fit.arbitrage.repairs
    assert fit.arbitrage.arbitrage_free


# ---- warm starts on a streaming chain -------------------------------------------------------------------------
def _moved(chain: OptionChain, seed: int, size: float) -> OptionChain:
    bump = 1.0 + size * np.random.default_rng(seed).standard_normal(len(chain))
    return chain.with_quotes(chain.bid * bump, chain.ask * bump)


def test_a_warm_svi_search_never_ends_worse_than_its_start() -> None:
    k = np.tile(np.linspace(-0.4, 0.3, 40), (3, 1))
    truth = np.array([[0.01, 0.1, -0.5, 0.02, 0.1], [0.02, 0.12, -0.4, 0.03, 0.15], [0.04, 0.15, -0.3, 0.05, 0.2]])
    rng = np.random.default_rng(2)
    w = np.vstack([svi_total_variance(k[i], *truth[i]) for i in range(3)]) * (1 + 0.01 * rng.standard_normal(k.shape))
    start = truth + np.array([0.001, 0.01, 0.1, 0.02, 0.02])
    res = fit_svi_batch(k, w, np.ones_like(k), start=start)
    at_start = np.sqrt(np.mean((np.vstack([svi_total_variance(k[i], *start[i]) for i in range(3)]) - w) ** 2, 1))
    cold = fit_svi_batch(k, w, np.ones_like(k))
    assert np.all(res.wrmse <= at_start + 1e-15)
    np.testing.assert_allclose(res.wrmse, cold.wrmse, rtol=0.02)


def test_warm_started_refits_match_cold_ones(spx_small: OptionChain, spx_unrepaired: SurfaceFit) -> None:
    warm = WarmStart.from_fit(spx_unrepaired)
    moved = _moved(spx_small, 3, 0.002)
    hot = fit_chain(moved, rate=R, warm=warm)
    cold = fit_chain(moved, rate=R)
    assert hot.arbitrage.arbitrage_free
    for h, c in zip(hot.slices, cold.slices, strict=True):
        assert h.rmse_bp <= c.rmse_bp + 0.5


def test_a_warm_start_from_another_surface_is_caught_and_refitted(spx_small: OptionChain, spx_unrepaired: SurfaceFit,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # "previous" slices from another market (flat, far-off vertex, claiming a 0.1 bp fit): the guard must refit
    # them from scratch, so the result is as good as a cold fit
    import engine.surface.fit as fit_module

    cold_calls = []
    real = fit_module.fit_svi_batch

    def spy(*args, **kwargs):
        if kwargs.get("start") is None:
            cold_calls.append(len(args[0]))
        return real(*args, **kwargs)

    expiries = np.array([s.expiry for s in spx_unrepaired.fitted_slices()], dtype="datetime64[s]")
    flat = WarmStart(expiries, np.tile([0.01, 1e-3, 0.0, 0.3, 0.5], (len(expiries), 1)), np.full(len(expiries), 0.1))
    monkeypatch.setattr(fit_module, "fit_svi_batch", spy)
    hot = fit_chain(spx_small, rate=R, repair=False, warm=flat)
    assert cold_calls and cold_calls[0] > 0  # the guard refitted slices cold
    for h, c in zip(hot.slices, spx_unrepaired.slices, strict=True):
        assert h.rmse_bp <= c.rmse_bp + 0.5


def test_warm_start_needs_every_expiry() -> None:
    e = np.array(["2026-03-20", "2026-04-17"], dtype="datetime64[s]")
    ws = WarmStart(e, np.ones((2, 5)), np.ones(2))
    assert ws.start_for(e).shape == (2, 5)
    assert ws.start_for(np.array(["2026-03-20", "2026-05-15"], dtype="datetime64[s]")) is None
    assert np.isnan(ws.rmse_for(np.array(["2026-06-19"], dtype="datetime64[s]"))).all()


# ---- the service: unrepaired first, repaired next -----------------------------------------------------------------
class _LoggingPool(ThreadPoolExecutor):
    """A one-thread pool that notes, at each submit, which job it is and what the service had published."""

    def __init__(self, svc_ref: list[SurfaceService]) -> None:
        super().__init__(max_workers=1)
        self.svc_ref = svc_ref
        self.log: list[tuple[str, bool | None]] = []
        self.warm: list[WarmStart | None] = []  # the warm start each fit job was given

    def submit(self, fn, /, *args, **kwargs):
        latest = self.svc_ref[0].latest("SPX") if self.svc_ref else None
        self.log.append((fn.__name__, None if latest is None else latest.repair_pending))
        if fn.__name__ == "run_fit_job":
            self.warm.append(args[-1])
        return super().submit(fn, *args, **kwargs)


def _arbitrageable_chain() -> OptionChain:
    def params(T: float):
        return tuple(VOGT) if T < 0.55 else (0.03, 0.04, -0.1, 0.0, 0.2)

    return build_chain(spot=100.0, expiries=expiry_dates([180, 210]),
                       strikes=log_strikes(-2.5, 2.5, 60, spot=100.0, vol=0.45),
                       price=svi_price_fn(params, spot=100.0, r=0.0, q=0.0),
                       half_spread=lambda p: np.maximum(1e-4, 0.001 * p))


async def _refit_recording(chain: OptionChain, times: int = 1) -> tuple[list[SurfaceUpdated], _LoggingPool,
                                                                         SurfaceService]:
    bus = Bus()
    seen: list[SurfaceUpdated] = []
    bus.subscribe(SurfaceUpdated, seen.append)
    ref: list[SurfaceService] = []
    pool = _LoggingPool(ref)
    svc = SurfaceService(bus, rate=0.0, config=SurfaceConfig(), executor=pool)
    ref.append(svc)
    await svc.start()
    try:
        for _ in range(times):
            final = await svc.refit(chain)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        while not (seen and seen[-1] is final):
            assert loop.time() < deadline, "the final SurfaceUpdated was not delivered"
            await asyncio.sleep(0.01)
    finally:
        await svc.stop()
        pool.shutdown(wait=True)
        await bus.close()
    return seen, pool, svc


async def test_the_service_publishes_the_unrepaired_fit_first_and_the_repaired_one_next() -> None:
    seen, pool, svc = await _refit_recording(_arbitrageable_chain())
    assert [e.repair_pending for e in seen] == [True, False]
    first, final = seen
    assert first.chain_ts == final.chain_ts
    assert not first.fit.arbitrage.arbitrage_free and first.fit.arbitrage.repairs == ()
    assert final.fit.arbitrage.arbitrage_free and final.fit.arbitrage.repairs
    assert final.fit_ms >= first.fit_ms
    # the repair job was submitted only after the unrepaired surface was cached and published
    jobs = [entry for entry in pool.log if entry[0] != "_warm_worker"]
    assert jobs == [("run_fit_job", None), ("run_repair_job", True)]
    assert svc.latest("SPX") is final and svc.fit_count("SPX") == 1


async def test_a_clean_fit_is_published_once() -> None:
    chain = build_chain(spot=100.0, expiries=expiry_dates([14, 45, 90]),
                        strikes=log_strikes(-2.0, 1.75, 30, spot=100.0, vol=0.3),
                        price=svi_price_fn(equity_like_params, spot=100.0, r=0.0, q=0.0))
    seen, pool, _ = await _refit_recording(chain)
    assert [e.repair_pending for e in seen] == [False]
    assert seen[0].fit.arbitrage.arbitrage_free
    assert [name for name, _ in pool.log if name != "_warm_worker"] == ["run_fit_job"]


async def test_the_repair_job_runs_in_the_default_process_pool_too() -> None:
    # the unrepaired fit travels to the worker and back (pickled): the two-stage path works across processes
    bus = Bus()
    seen: list[SurfaceUpdated] = []
    bus.subscribe(SurfaceUpdated, seen.append)
    svc = SurfaceService(bus, rate=0.0)  # config default: one spawned worker process
    await svc.start()
    try:
        final = await svc.refit(_arbitrageable_chain())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while not (seen and seen[-1] is final):
            assert loop.time() < deadline, "the final SurfaceUpdated was not delivered"
            await asyncio.sleep(0.01)
    finally:
        await svc.stop()
        await bus.close()
    assert svc.executor_info()["executor"] is None  # stopped and released
    assert [e.repair_pending for e in seen] == [True, False]
    assert final.fit.arbitrage.arbitrage_free


async def test_the_next_fit_of_an_underlying_starts_from_the_previous_one() -> None:
    _, pool, _ = await _refit_recording(_arbitrageable_chain(), times=2)
    first, second = pool.warm
    assert first is None
    # the warm start is the first fit before its repair (the unconstrained optimum the search looks for)
    assert isinstance(second, WarmStart) and len(second.expiries) == 2
    raw = fit_chain(_arbitrageable_chain(), rate=0.0, repair=False)
    np.testing.assert_allclose(second.params, raw.surface.params, rtol=1e-12)
