"""The surface's compiled kernels (engine/surface/_svi_kernels.py: the SVI fit's inner solve, the arbitrage
repair's pointwise evaluation) against their numpy reference: the same bits for every candidate and every
evaluation, degenerate ones included, and so the same fits and repairs; loaded by the pricing kernels' warm-up,
never by importing the surface package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.pricing import _kernels
from engine.surface import repair, svi
from engine.surface.fit import fit_chain, repair_fit
from tests.surface.synthetic import spx_like_chain

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not _kernels.numba_available(), reason="numba not in use here")


@pytest.fixture(scope="module")
def compiled() -> object:
    """The kernels loaded in this process (the pricing kernels' warm-up loads the SVI ones after them)."""
    assert _kernels.warm_up(), _kernels.status()
    assert svi.compiled_kernels() is not None
    return svi.compiled_kernels()


def _smiles(S: int, N: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S noisy smiles of N points in (k, total variance), random weights, some points missing."""
    rng = np.random.default_rng(seed)
    k = np.sort(rng.uniform(-0.6, 0.35, (S, N)), axis=1)
    T = rng.uniform(0.02, 2.0, (S, 1))
    w = T * (0.04 + 0.25 * np.maximum(-k, 0) ** 1.5 + 0.05 * k * k) + rng.normal(0, 2e-5, (S, N))
    om = rng.uniform(0.2, 1.0, (S, N))
    om[rng.random((S, N)) < 0.2] = 0.0  # padding / missing quotes
    return k, w, om


def test_inner_solve_gives_the_numpy_bits_for_every_candidate(compiled) -> None:  # type: ignore[no-untyped-def]
    k, w, om = _smiles(9, 70, seed=3)
    om = om / om.sum(1, keepdims=True)
    pre = svi._prepare(k, w, om)
    rng = np.random.default_rng(4)
    P = 200
    m = rng.uniform(-1.2, 1.0, (9, P))
    s = np.exp(rng.uniform(np.log(1e-9), np.log(40.0), (9, P)))  # down to a kink so sharp the moments degenerate
    m[:, :3] = k[:, :1]  # the vertex on a quote
    s[:, 3] = 1e300  # z → huge: overflow to inf, NaN objectives
    a = svi._inner_solve(pre, m, s)
    with np.errstate(all="ignore"):
        b = svi._inner_solve_impl(pre, m, s)
    for x, y, name in zip(a, b, ("objective", "a", "d", "c"), strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert np.isfinite(a[0]).mean() > 0.9 and not np.isfinite(a[0]).all()  # the degenerate ones are in it


@pytest.mark.parametrize("warm", [False, True])
def test_batch_fits_equal_the_numpy_path_bit_for_bit(compiled, warm) -> None:  # type: ignore[no-untyped-def]
    """Whole fits, the coarse grid or a warm start, thinned search (more points than SEARCH_POINTS), an empty
    slice and non-finite points: the same parameters and errors on both paths."""
    k, w, om = _smiles(12, 150, seed=5)
    om[7] = 0.0  # an empty slice
    w[2, 10] = np.nan
    start = None
    if warm:
        start = svi.fit_svi_batch(k, w, om).params * (1 + 1e-3)
    a = svi.fit_svi_batch(k, w, om, start=start)
    with _kernels.numpy_only():
        assert svi.compiled_kernels() is None
        b = svi.fit_svi_batch(k, w, om, start=start)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.wrmse, b.wrmse)
    assert np.isnan(a.params[7]).all() and np.isfinite(np.delete(a.params, 7, axis=0)).all()
    fitted = np.arange(12) != 7
    assert np.all(a.wrmse[fitted] < 0.02 * np.nanmean(w, axis=1)[fitted])  # and they are fits (within 2 %)


@pytest.mark.parametrize("N", [60, 195])
def test_polish_terms_give_the_numpy_bits(compiled, N) -> None:  # type: ignore[no-untyped-def]
    """The polish's objective, residuals and Jacobian (svi_ssr, svi_residuals_jacobian) against their numpy
    reference (svi._polish_ssr, svi._polish_residuals_jacobian), bit for bit: random slices, b = 0, a σ of
    1e-12 (a kink on the quotes), σ = 0 with the vertex on a quote (0/0), NaN parameters; rows within one
    summation block and over it."""
    k, w, om = _smiles(30, N, seed=9)
    om = om / om.sum(1, keepdims=True)
    sq = np.sqrt(om)
    rng = np.random.default_rng(10)
    p = np.column_stack([rng.uniform(-0.02, 0.05, 30), rng.uniform(0.0, 0.4, 30), rng.uniform(-0.9, 0.5, 30),
                         rng.uniform(-0.2, 0.2, 30), rng.uniform(0.02, 0.4, 30)]) * rng.uniform(0.97, 1.03, (30, 5))
    p[1, 1] = 0.0
    p[2, 4] = 1e-12
    p[3, 3], p[3, 4] = k[3, 5], 0.0
    p[4, 2] = np.nan
    ssr = np.empty(30)
    compiled.svi_ssr(k, w, om, p, ssr)
    res, jac = np.empty(k.shape), np.empty((*k.shape, 5))
    compiled.svi_residuals_jacobian(k, w, sq, p, res, jac)
    with np.errstate(all="ignore"):
        want_ssr = svi._polish_ssr(k, w, om, p)
        want_res, want_jac = svi._polish_residuals_jacobian(k, w, sq, p)
    np.testing.assert_array_equal(ssr, want_ssr)
    np.testing.assert_array_equal(res, want_res)
    np.testing.assert_array_equal(jac, want_jac)
    assert np.isnan(ssr[4]) and np.isnan(jac[3]).any() and np.isfinite(ssr[np.arange(30) != 4]).all()


def test_importing_the_surface_package_imports_no_numba() -> None:
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from engine.surface import fit, svi
        r = svi.fit_svi_batch(np.linspace(-0.3, 0.2, 30)[None], 0.04 + 0.1 * np.linspace(-0.3, 0.2, 30)[None] ** 2)
        print(json.dumps({"numba": "numba" in sys.modules, "kernels": "engine.surface._svi_kernels" in sys.modules,
                          "fitted": bool(np.isfinite(r.params).all())}))
    """)
    env = {k: v for k, v in os.environ.items() if k != _kernels.DISABLE_ENV}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"numba": False, "kernels": False, "fitted": True}


def _numpy_repair_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the repair's kernel off (numpy_only() would switch the implied vols too, and so change the fits)."""
    monkeypatch.setattr(repair, "compiled_kernels", lambda: None)


@pytest.mark.parametrize("N, G, Gc", [(50, 120, 90), (195, 502, 301)])
def test_repair_evaluations_give_the_numpy_bits(compiled, monkeypatch, N, G, Gc) -> None:  # type: ignore[no-untyped-def]
    """Random and degenerate parameters (w ≤ 0 on the grid, b = 0, a σ so small the grid sees a kink, NaN, steep
    wings with g < 0 over most of the grid) on a problem with floors and ceilings: objective, quote part, clean
    flags, JᵀJ and Jᵀr bit for bit; rows of up to one summation block (128) and of several (the SPX chain's
    sizes), whose sums numpy splits in halves."""
    rng = np.random.default_rng(8)
    V = 27
    kq = np.sort(rng.uniform(-0.5, 0.3, (V, N)), axis=1)
    wq = 0.05 + 0.2 * kq * kq - 0.05 * kq
    kb = np.tile(np.linspace(-1.5, 1.0, G), (V, 1))
    kc = np.tile(np.linspace(-1.2, 0.8, Gc), (V, 1))
    prob = repair.RepairProblem(
        kq=kq, wq=wq, om=rng.uniform(0.1, 1.0, (V, N)), kb=kb, mb=rng.random((V, G)) < 0.9,
        floor=0.03 + 0.15 * kb * kb, has_f=rng.random((V, G)) < 0.7, kc=kc, ceil=0.09 + 0.25 * kc * kc,
        has_c=rng.random((V, Gc)) < 0.7, start=np.zeros((V, 5)))
    params = np.column_stack([rng.uniform(-0.02, 0.05, V), rng.uniform(0.0, 0.4, V), rng.uniform(-0.9, 0.5, V),
                              rng.uniform(-0.2, 0.2, V), rng.uniform(0.02, 0.4, V)])
    params[1, 0] = -0.5  # w < 0 on part of the grid
    params[2, 1] = 0.0  # flat
    params[3, 4] = 1e-12  # a kink on a grid point
    params[4, 3] = np.nan
    steep = np.array([[0.001, 1.5, -0.3, 0.0, 0.05], [0.0, 1.2, -0.9, 0.1, 0.02], [0.02, 0.9, 0.8, -0.1, 0.3],
                      [-0.01, 1.9, 0.05, 0.0, 0.01]])  # butterfly arbitrage over much of the grid: g penalties count
    # jittered off round values, so that a reordered product in g would round differently somewhere
    params[7:] = np.tile(steep, (5, 1)) * rng.uniform(0.97, 1.03, (20, 5))
    sc, sq, wl, cal = repair._scales(prob)
    x = params / sc
    mu = np.full(V, 10.0)
    th = x * sc
    pointwise = repair._points_compiled(compiled, th, prob, sq, cal, 1.0 / wl, mu, 1e-9)
    reference = repair._points(th, prob, sq, cal, 1.0 / wl, 1e-9)
    for got, want, name in zip(pointwise, reference, ("x", "r", "rq", "hb", "hf", "hc", "bad_w", "clean"),
                               strict=False):
        np.testing.assert_array_equal(got, want, err_msg=name)
    rq, hb, hf, hc, bad_w = reference[2:7]
    fq = (rq * rq).sum(1)
    f = fq + mu * ((hb * hb).sum(1) + (hf * hf).sum(1) + (hc * hc).sum(1))
    np.testing.assert_array_equal(pointwise[8], fq, err_msg="fq")
    np.testing.assert_array_equal(pointwise[9], np.where(bad_w | ~np.isfinite(f), np.inf, f), err_msg="f")
    assert len(set(pointwise[8].tolist())) == V  # every slice's sum its own (no row summed twice or skipped)
    assert (reference[3] < 0).sum() > 200  # butterfly penalties on hundreds of grid points
    for jac in (False, True):
        a = repair._evaluate(x, prob, sc, sq, wl, cal, mu, jac)
        with monkeypatch.context() as mp:
            _numpy_repair_path(mp)
            b = repair._evaluate(x, prob, sc, sq, wl, cal, mu, jac)
        for name in ("f", "fq", "clean", "jtj", "jtr"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not a.clean.all() and np.isinf(a.f).any() and np.isfinite(a.f).sum() >= 4


def test_the_kernels_row_sums_are_numpys_pairwise_sums_bit_for_bit(compiled) -> None:  # type: ignore[no-untyped-def]
    """Every length from 1 to 700 and a few long ones (numpy: eight accumulators up to 128 elements, halves
    above), values over twelve orders of magnitude and both signs, where any other order rounds differently."""
    rng = np.random.default_rng(21)
    lengths = [*range(1, 701), 1000, 2001, 4097]
    for n in lengths:
        x = rng.standard_normal((3, n)) * 10.0 ** rng.uniform(-6, 6, (3, n))
        out = np.empty(3)
        compiled.row_sums(x, out)
        np.testing.assert_array_equal(out, x.sum(1), err_msg=f"length {n}")
    x = rng.standard_normal((2, 300))
    naive = np.array([sum(row.tolist()) for row in x])
    assert not np.array_equal(x.sum(1), naive)  # the order matters on such rows


def test_a_repair_gives_the_numpy_paths_surface_bit_for_bit(compiled, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    chain = spx_like_chain(12, 64)
    first = fit_chain(chain, rate=0.045, repair=False)
    assert not first.arbitrage.arbitrage_free  # there is something to repair
    a = repair_fit(first, chain)
    _numpy_repair_path(monkeypatch)
    b = repair_fit(first, chain)
    assert a.arbitrage.arbitrage_free and b.arbitrage.arbitrage_free
    for sa, sb in zip(a.slices, b.slices, strict=True):
        if sa.params is None:
            assert sb.params is None
        else:
            np.testing.assert_array_equal(sa.params.as_array(), sb.params.as_array())


@pytest.mark.parametrize("with_quotes, with_grids", [(True, True), (False, True), (True, False)])
def test_the_essvi_calendar_pass_gives_the_numpy_bits(compiled, monkeypatch, with_quotes, with_grids) -> None:  # type: ignore[no-untyped-def]
    """The backbone's calendar pass (repair.essvi_calendar) compiled and on numpy: 40 slices whose skews swing
    from −0.95 to 0.95 between neighbours (the wing bounds force ρ along its path, and in some slices no
    point of the path is admissible), ψ at and beyond its butterfly bound, crossings the blend must undo."""
    rng = np.random.default_rng(17)
    S, G, Nt = 40, 301, 49
    theta = np.cumsum(rng.uniform(1e-4, 0.01, S))
    rho = np.clip(rng.uniform(-0.95, 0.95, S) * rng.choice([1.0, -1.0], S), -0.99, 0.99)
    psi = repair._psi_max(theta, rho) * rng.uniform(0.2, 1.3, S)
    grids = np.tile(np.linspace(-1.5, 0.8, G), (S, 1)) * np.sqrt(theta / theta.mean())[:, None]
    kq = np.tile(np.linspace(-0.6, 0.3, Nt), (S, 1))
    wq = theta[:, None] * (1.0 + 0.8 * kq * kq - 0.6 * kq) + rng.normal(0, 1e-5, (S, Nt))
    om = rng.uniform(0.1, 1.0, (S, Nt))
    quotes = (kq, wq, om) if with_quotes else None
    gr = grids if with_grids else None
    a = repair.essvi_calendar(theta, rho, psi, gr, quotes)
    with monkeypatch.context() as mp:
        _numpy_repair_path(mp)
        b = repair.essvi_calendar(theta, rho, psi, gr, quotes)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    moved = (a[0] != rho) | (a[1] != psi)
    assert moved[1:].sum() >= 10  # the pass did work on many slices
    if with_grids:
        no_blend = repair.essvi_calendar(theta, rho, psi, None, quotes)
        assert ((no_blend[0] != a[0]) | (no_blend[1] != a[1])).sum() >= 3  # and the blend moved some


def test_slice_checks_give_the_numpy_numbers(compiled, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """check_slices compiled and on numpy: clean slices, butterfly arbitrage, w ≤ 0 on the grid, calendar
    crossings, a NaN slice (skipped, its neighbours compared across it) and σ = 0 with the vertex on a grid
    point (a NaN g, which numpy's min propagates)."""
    from engine.surface import arbitrage

    rng = np.random.default_rng(23)
    S = 30
    p = np.column_stack([np.linspace(0.002, 0.06, S), rng.uniform(0.02, 0.3, S), rng.uniform(-0.8, 0.2, S),
                         rng.uniform(-0.1, 0.1, S), rng.uniform(0.05, 0.3, S)]) * rng.uniform(0.97, 1.03, (S, 5))
    p[4] = [0.001, 1.5, -0.3, 0.0, 0.05]  # steep wings: g < 0
    p[7, 0] = -0.2  # w < 0 near the vertex
    p[9, 0] = 0.0  # below slice 8: calendar arbitrage
    p[12] = np.nan
    grids = arbitrage.check_grids(np.column_stack([np.full(S, -0.5), np.full(S, 0.3)]))
    p[15, 3], p[15, 4] = grids[15][200], 0.0
    a = arbitrage.check_slices(p, grids)
    with monkeypatch.context() as mp:
        mp.setattr(arbitrage, "compiled_kernels", lambda: None)
        with np.errstate(invalid="ignore"):  # the 0/0 of σ = 0
            b = arbitrage.check_slices(p, grids)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert (x.butterfly_points, x.lee_ok, x.calendar_points) == (y.butterfly_points, y.lee_ok, y.calendar_points), i
        np.testing.assert_array_equal([x.min_g, x.worst_calendar], [y.min_g, y.worst_calendar], err_msg=str(i))
    assert a[4].butterfly_points > 0 and a[7].min_g == -np.inf and a[9].calendar_points > 0
    assert np.isnan(a[15].min_g) and a[13].calendar_points == b[13].calendar_points
    assert 3 <= sum(c.ok for c in a) < S - 5


def test_the_essvi_backbone_fit_gives_the_numpy_bits(compiled, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """repair.fit_essvi (its residuals and (ρ, ψ) derivatives compiled) against the numpy path: 30 noisy
    smiles over 150 quotes (padding with weight 0), starts at and beyond the bounds and one NaN start."""
    k, w, om = _smiles(30, 150, seed=29)
    rng = np.random.default_rng(30)
    theta = np.maximum(np.sort(w[:, np.argmin(np.abs(k), axis=1)].diagonal()), 1e-4)
    rho0 = rng.uniform(-1.2, 0.6, 30)
    psi0 = rng.uniform(0.0, 1.5, 30)
    rho0[3] = np.nan
    a = repair.fit_essvi(theta, k, w, om, rho0, psi0)
    with monkeypatch.context() as mp:
        _numpy_repair_path(mp)
        b = repair.fit_essvi(theta, k, w, om, rho0, psi0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.isfinite(a[0]).all() and (np.abs(a[0] - np.nan_to_num(rho0)) > 1e-3).sum() >= 20  # it fitted
