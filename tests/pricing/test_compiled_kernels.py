"""The compiled (numba) pricing kernels against the numpy reference path, and the rules that keep them safe:
no numba at package import, no compile on a caller's thread, numpy whenever numba is missing or switched off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engine.pricing import _kernels, black76, bsm
from engine.pricing.inputs import Reason

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _numba_cache_dir_left_as_found():  # type: ignore[no-untyped-def]
    """No test may leave NUMBA_CACHE_DIR changed: every later subprocess would compile every kernel into it."""
    before = os.environ.get("NUMBA_CACHE_DIR")
    yield
    assert os.environ.get("NUMBA_CACHE_DIR") == before


@pytest.fixture(scope="module")
def compiled(monkeypatch_module: pytest.MonkeyPatch) -> object:
    """The kernels loaded in this process (a first run compiles them: tens of seconds, once per cache)."""
    monkeypatch_module.delenv(_kernels.DISABLE_ENV, raising=False)
    assert _kernels.warm_up(), _kernels.status()
    k = _kernels.kernels()
    assert k is not None
    return k


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _both(fn):  # type: ignore[no-untyped-def]
    """(compiled result, numpy result) of fn()."""
    assert _kernels.kernels() is not None
    a = fn()
    with _kernels.numpy_only():
        assert _kernels.kernels() is None
        b = fn()
    return a, b


def _book(n: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.5, rng.uniform(50, 150, n), rng.uniform(20, 300, n), rng.uniform(1e-3, 5, n),
            rng.uniform(-0.01, 0.08, n), rng.uniform(0.0, 0.04, n), rng.uniform(0.02, 2.5, n))


def _units(S: np.ndarray, K: np.ndarray) -> dict[str, np.ndarray | float]:
    """The natural size of each output (a price is in units of S): differences are measured against it."""
    return {"price": S, "delta": 1.0, "gamma": 1 / S, "vega": S / 100, "theta": S / 365, "rho": K / 100,
            "vanna": 0.01, "volga": S / 1e4, "charm": 1 / 365}


def _assert_close(name: str, a: np.ndarray, b: np.ndarray, unit: np.ndarray | float) -> None:
    assert a.shape == b.shape, name
    assert np.array_equal(np.isnan(a), np.isnan(b)), name
    ok = ~np.isnan(b)
    err = np.abs(a[ok] - b[ok]) / (np.abs(b[ok]) + np.broadcast_to(unit, b.shape)[ok])
    assert err.size == 0 or err.max() <= 1e-14, (name, float(err.max()))


@pytest.mark.parametrize("outputs", [None, ("price", "delta"), ("price", "delta", "gamma", "vega", "theta", "rho"),
                                     ("price", "delta", "gamma", "vega", "theta"), ("delta", "gamma", "vega", "theta"),
                                     ("delta", "gamma"), "vega", ("vanna", "volga", "charm"), "gamma"])
def test_greeks_equal_the_numpy_path(compiled, outputs):  # type: ignore[no-untyped-def]
    """The engine's output sets have kernels of their own; any other set runs the all-outputs kernel."""
    want = bsm.select_outputs(outputs)
    specialised = compiled.greeks_kernel(want)
    assert (specialised is not compiled.greeks) == (want in compiled.GREEKS_SETS[1:])
    c, S, K, T, r, q, v = _book(20_001, seed=3)
    a, b = _both(lambda: bsm.greeks(c, S, K, T, r, q, v, outputs=outputs))
    units = _units(S, K)
    for name in bsm.OUTPUTS:
        if getattr(b, name) is None:
            assert getattr(a, name) is None, name
        else:
            _assert_close(name, getattr(a, name), getattr(b, name), units[name])


def test_greeks_scalars_shapes_and_extreme_moneyness_equal_the_numpy_path(compiled):  # type: ignore[no-untyped-def]
    K = np.exp(np.linspace(-4, 4, 61))[:, None] * 100  # deep in and out of the money: tails of N(d)
    T = np.array([1 / 365, 0.1, 2.0, 30.0])[None, :]
    for right in ("c", "p"):
        for sigma in (1e-300, 0.01, 0.3, 4.0):
            a, b = _both(lambda right=right, sigma=sigma: bsm.greeks(right, 100.0, K, T, 0.05, 0.0, sigma))
            for name, unit in _units(np.full(a.price.shape, 100.0), np.broadcast_to(K, a.price.shape)).items():
                _assert_close(name, getattr(a, name), getattr(b, name), unit)
    a, b = _both(lambda: bsm.greeks("p", 100.0, 95.0, 0.5, 0.03, 0.01, 0.2))
    assert a.delta.shape == () and abs(float(a.delta) - float(b.delta)) <= 1e-15


def test_greeks_invalid_inputs_give_the_same_reasons_and_nan(compiled):  # type: ignore[no-untyped-def]
    S = [100, np.nan, -1, 100, 100, 100, 100, 100, 100]
    K = [100, 100, 100, 0, 100, 100, 100, 100, np.inf]
    T = [0.5, 0.5, 0.5, 0.5, 0, 0.5, 0.5, 0.5, 0.5]
    v = [0.2, 0.2, 0.2, 0.2, 0.2, np.nan, -0.1, 0.0, 0.2]
    (ga, ra), (gb, rb) = _both(lambda: bsm.greeks("c", S, K, T, 0.03, 0.0, v, return_reason=True))
    assert ra.tolist() == rb.tolist() == [0, Reason.NAN_INPUT, Reason.NONPOSITIVE_SPOT, Reason.NONPOSITIVE_STRIKE,
                                          Reason.NONPOSITIVE_TIME, Reason.NAN_INPUT, Reason.NONPOSITIVE_VOL,
                                          Reason.NONPOSITIVE_VOL, Reason.NAN_INPUT]
    for name in bsm.OUTPUTS:
        for g in (ga, gb):
            assert np.isfinite(getattr(g, name)[0]) and np.all(np.isnan(getattr(g, name)[1:])), name
    (_, ra), (_, rb) = _both(lambda: bsm.greeks("c", 100.0, 100.0, 0.5, np.nan, 0.0, 0.2, return_reason=True))
    assert int(ra) == int(rb) == Reason.NAN_INPUT


@pytest.mark.parametrize("outputs", [None, ("price", "delta"), ("vanna", "charm")])
def test_greeks_blocks_with_scattered_invalid_rows_and_broadcast_inputs_equal_the_numpy_path(compiled, outputs):
    """The kernel works in blocks of 512 with the reasons as selects: invalid rows anywhere (a block's first and
    last row, a partial last block) give NaN and the numpy path's reason, their neighbours are untouched, and a
    broadcast spot, rate and yield equal the same values given per option."""
    rng = np.random.default_rng(17)
    n = 3 * 512 + 7
    c, _, K, T, r, q, v = _book(n, seed=17)
    S = np.full(n, 100.0)
    bad = np.concatenate([[0, 511, 512, 1023, n - 1], rng.choice(n, 40, replace=False)])
    kinds = rng.integers(0, 6, bad.size)
    for i, kind in zip(bad, kinds, strict=True):
        if kind == 0:
            S[i] = np.nan
        elif kind == 1:
            K[i] = -K[i]
        elif kind == 2:
            T[i] = 0.0
        elif kind == 3:
            v[i] = 0.0
        elif kind == 4:
            v[i] = np.inf
        else:
            r[i] = np.nan
    (a, ra), (b, rb) = _both(lambda: bsm.greeks(c, S, K, T, r, q, v, outputs=outputs, return_reason=True))
    assert np.array_equal(ra, rb) and np.count_nonzero(ra) == np.unique(bad).size
    units = _units(S, np.abs(K))
    for name in bsm.OUTPUTS:
        if getattr(b, name) is not None:
            _assert_close(name, getattr(a, name), getattr(b, name), units[name])
            assert np.all(np.isnan(getattr(a, name)[ra != 0])) and np.all(np.isfinite(getattr(a, name)[ra == 0]))
    good = np.flatnonzero(rb == 0)
    c, K, T, v = c[good], K[good], T[good], v[good]
    per_option = bsm.greeks(c, np.full(good.size, 100.0), K, T, np.full(good.size, 0.03), np.full(good.size, 0.01),
                            v, outputs=outputs)
    broadcast = bsm.greeks(c, 100.0, K, T, 0.03, 0.01, v, outputs=outputs)
    for name in bsm.OUTPUTS:
        if getattr(b, name) is not None:
            np.testing.assert_array_equal(getattr(broadcast, name), getattr(per_option, name), err_msg=name)


@pytest.mark.parametrize("outputs", [None, ("price", "delta"), ("vanna", "charm")])
def test_greeks_split_over_threads_equal_one_thread_bit_for_bit_and_the_numpy_path(compiled, outputs):  # type: ignore[no-untyped-def]
    """A large batch runs in chunks on several threads, each computing its own ln(S/K) and discount factors:
    the same bits as on one thread, invalid rows in every chunk keep their reasons, and the numpy path agrees."""
    from engine.pricing import _split

    n = 3 * bsm._GREEKS_SPLIT_CHUNK + 1_001
    c, S, K, T, r, q, v = _book(n, seed=29)
    K[::9] = np.nan
    v[4::11] = -0.2
    try:
        _split.set_threads(1)
        one, r1 = bsm.greeks(c, S, K, T, r, q, v, outputs=outputs, return_reason=True)
        _split.set_threads(3)
        many, r3 = bsm.greeks(c, S, K, T, r, q, v, outputs=outputs, return_reason=True)
        broadcast = bsm.greeks(c, 100.0, K, T, 0.03, 0.01, v, outputs=outputs)
        _split.set_threads(1)
        broadcast_one = bsm.greeks(c, 100.0, K, T, 0.03, 0.01, v, outputs=outputs)
    finally:
        _split.set_threads(None)
    np.testing.assert_array_equal(r1, r3)
    assert (r3[::9] == Reason.NAN_INPUT).all() and (r3 == 0).mean() > 0.8
    with _kernels.numpy_only():
        ref, rref = bsm.greeks(c, S, K, T, r, q, v, outputs=outputs, return_reason=True)
    np.testing.assert_array_equal(r3, rref)
    units = _units(S, np.abs(np.nan_to_num(K, nan=100.0)))
    for name in bsm.OUTPUTS:
        if getattr(ref, name) is None:
            assert getattr(many, name) is None, name
            continue
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name), err_msg=name)
        np.testing.assert_array_equal(getattr(broadcast, name), getattr(broadcast_one, name), err_msg=name)
        _assert_close(name, getattr(many, name), getattr(ref, name), units[name])


def test_black76_greeks_equal_the_numpy_path(compiled):  # type: ignore[no-untyped-def]
    c, F, K, T, r, _, v = _book(3_000, seed=11)
    a, b = _both(lambda: black76.greeks(c, F, K, T, r, v))
    for name, unit in _units(F, K).items():
        _assert_close(name, getattr(a, name), getattr(b, name), unit)


def test_cumulative_normal_matches_scipy(compiled):  # type: ignore[no-untyped-def]
    from scipy.special import ndtr

    x = np.concatenate([np.linspace(-40, 40, 160_001), [0.0, -0.0, np.inf, -np.inf, 1e300, -1e300]])
    out = np.empty_like(x)
    compiled.ndtr(x, out)
    ref = ndtr(x)
    assert np.max(np.abs(out - ref)) <= 2.3e-16
    core = np.abs(x) <= 8
    assert np.max(np.abs(out[core] - ref[core]) / ref[core]) <= 2e-14
    nan = np.empty(1)
    compiled.ndtr(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_scaled_complementary_error_function_matches_scipy(compiled):  # type: ignore[no-untyped-def]
    from scipy.special import erfcx

    x = np.linspace(-26, 60, 400_001)
    out = np.empty_like(x)
    compiled.erfcx(x, out)
    rel = np.abs(out - erfcx(x)) / erfcx(x)
    assert rel[x >= -1].max() <= 12 * np.finfo(float).eps  # 1 − erf(x) near x = 1 costs a few bits
    assert np.all(rel[x < -1] <= 4 * np.finfo(float).eps * (1 + x[x < -1] ** 2))  # exp(x²) rounding
    ends = np.array([1e300, 1e9, -30.0, np.inf, -np.inf, np.nan])
    compiled.erfcx(ends, out[:6])
    np.testing.assert_allclose(out[:6], erfcx(ends), rtol=1e-15)


def _iv_book(kind: str, n: int = 40_000):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(21 if kind == "normal" else 22)
    if kind == "normal":
        c = rng.random(n) < 0.5
        S, K, T, v = np.full(n, 100.0), rng.uniform(50, 150, n), rng.uniform(0.02, 2.0, n), rng.uniform(0.05, 1.5, n)
    else:  # one day, ±6 standard deviations, out of the money
        T = np.full(n, 1 / 365)
        v = rng.uniform(0.05, 1.5, n)
        F = 100.0 * np.exp(0.02 * T)
        K = F * np.exp(rng.uniform(-6, 6, n) * v * np.sqrt(T))
        c, S = K >= F, np.full(n, 100.0)
    p = bsm.price(c, S, K, T, 0.03, 0.01, v)
    keep = p >= 1e-12 * S
    return tuple(a[keep] for a in (c, S, K, T, v, p))


@pytest.mark.parametrize("kind", ["normal", "hard"])
def test_implied_vol_equals_the_numpy_path_and_the_truth(compiled, kind):  # type: ignore[no-untyped-def]
    c, S, K, T, v, p = _iv_book(kind)
    (a, ra), (b, rb) = _both(lambda: bsm.implied_vol(p, c, S, K, T, 0.03, 0.01, return_reason=True))
    fwd = S * np.exp(0.02 * T)
    otm = np.where(c, K >= fwd, K <= fwd)
    assert otm.mean() > 0.4 and (kind == "hard" or (~otm).mean() > 0.4)  # the hard book is out of the money
    # only the normalised solve is compiled: the time value is rounded the same way on both paths, so
    # reasons agree everywhere and vols to the last bits, in and out of the money
    assert np.array_equal(ra, rb)
    ok = ra == 0
    assert np.max(np.abs(a[ok] - b[ok]) / b[ok]) <= 1e-14
    assert np.all(ra[otm] == 0) and np.max(np.abs(a[otm] - v[otm])) < 1e-12
    assert set(np.unique(ra).tolist()) <= {0, Reason.BELOW_INTRINSIC, Reason.AT_INTRINSIC}


def test_price_equals_the_numpy_path_within_1e_14_of_spot_and_1e_12_relative_far_out_of_the_money(compiled):  # type: ignore[no-untyped-def]
    c, S, K, T, r, q, v = _book(20_001, seed=6)
    K[:5] = [S[0] * 5, S[1] / 5, S[2], S[3] * (1 + 1e-9), S[4] * 40]  # far OTM both ways, at the money
    a, b = _both(lambda: bsm.price(c, S, K, T, r, q, v))
    _assert_close("price", a, b, S)
    tiny = (b > 0) & (b < 1e-10 * S)
    assert tiny.sum() > 100  # deep out of the money: relative accuracy holds there too (a few hundred ulps)
    assert np.max(np.abs(a[tiny] - b[tiny]) / b[tiny]) <= 1e-12
    (a0, ra), (b0, rb) = _both(lambda: bsm.price("c", 100.0, [90.0, -1.0, 110.0], 0.5, 0.03, 0.0, [0.2, 0.2, np.nan],
                                                 return_reason=True))
    assert ra.tolist() == rb.tolist() == [0, Reason.NONPOSITIVE_STRIKE, Reason.NAN_INPUT]
    assert abs(a0[0] - b0[0]) <= 1e-14 * 100


@pytest.mark.parametrize("kind", ["normal", "hard"])
def test_implied_vol_split_over_threads_equals_one_thread_bit_for_bit(compiled, kind):  # type: ignore[no-untyped-def]
    from engine.pricing import _split

    c, S, K, T, _, p = _iv_book(kind)
    K = K.copy()
    K[::7] = np.nan  # invalid rows in every chunk keep their reasons
    try:
        _split.set_threads(1)
        one, r1 = bsm.implied_vol(p, c, S, K, T, 0.03, 0.01, return_reason=True)
        _split.set_threads(3)
        many, r3 = bsm.implied_vol(p, c, S, K, T, 0.03, 0.01, return_reason=True)
        scalar_strike, rs = bsm.implied_vol(p, c, S, 100.0, T, 0.03, 0.01, return_reason=True)
        _split.set_threads(1)
        scalar_one, rs1 = bsm.implied_vol(p, c, S, 100.0, T, 0.03, 0.01, return_reason=True)
    finally:
        _split.set_threads(None)
    assert p.size >= 3 * bsm._IV_SPLIT_CHUNK  # so the book really is split three ways
    np.testing.assert_array_equal(r1, r3)
    np.testing.assert_array_equal(one, many)
    assert (r3[::7] == Reason.NAN_INPUT).all() and (r3 == 0).mean() > 0.5
    np.testing.assert_array_equal(rs, rs1)
    np.testing.assert_array_equal(scalar_strike, scalar_one)


@pytest.mark.parametrize("kind", ["normal", "hard"])
def test_implied_vol_batch_in_phases_equals_the_one_option_solve_bit_for_bit(compiled, kind):  # type: ignore[no-untyped-def]
    """The batch kernel solves a block's options phase by phase (checks, guesses, steps); each option must get
    the bits and the reason of the one-option solve the American kernel calls, invalid rows in any block."""
    from engine.pricing import _jit

    c, S, K, T, _, p = (a[:2_003] for a in _iv_book(kind))
    p = p.copy()
    p[5::97] = 0.0  # non-positive price
    p[9::131] = np.nan
    p[3::61] *= 1e3  # above the maximum
    vol, reason = bsm.implied_vol(p, c, S, K, T, 0.03, 0.01, return_reason=True)
    F, df = S * np.exp((0.03 - 0.01) * T), np.exp(-0.03 * T)  # as bsm computes them for the kernel
    x = np.log(F / K)
    b_max = np.exp((c - 0.5) * x)
    one = [_jit.implied_vol_one(True, p[i], bool(c[i]), S[i], K[i], T[i], 0.03, 0.01, F[i], df[i], x[i], b_max[i])
           for i in range(p.size)]
    np.testing.assert_array_equal(vol, np.array([v for v, _ in one]))
    np.testing.assert_array_equal(reason, np.array([r for _, r in one]))
    assert (reason == 0).mean() > 0.9 and {int(r) for r in reason} > {0}


def test_implied_vol_reasons_equal_the_numpy_path(compiled):  # type: ignore[no-untyped-def]
    cases = [  # (price, right, S, K, T, r, q, expected)
        (5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0, Reason.OK),
        (np.nan, "c", 100.0, 100.0, 0.5, 0.03, 0.0, Reason.NAN_INPUT),
        (5.0, "c", 100.0, 100.0, 0.5, np.inf, 0.0, Reason.NAN_INPUT),
        (5.0, "c", -100.0, 100.0, 0.5, 0.03, 0.0, Reason.NONPOSITIVE_SPOT),
        (5.0, "c", 100.0, 0.0, 0.5, 0.03, 0.0, Reason.NONPOSITIVE_STRIKE),
        (5.0, "c", 100.0, 100.0, 0.0, 0.03, 0.0, Reason.NONPOSITIVE_TIME),
        (0.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0, Reason.NONPOSITIVE_PRICE),
        (1e-320, "c", 100.0, 100.0, 0.5, 0.03, 0.0, Reason.PRICE_UNDERFLOW),
        (10.0, "c", 120.0, 100.0, 0.5, 0.03, 0.0, Reason.BELOW_INTRINSIC),
        (120.0, "c", 120.0, 100.0, 0.5, 0.03, 0.0, Reason.ABOVE_MAXIMUM),
        (100.0, "p", 120.0, 100.0, 0.5, 0.0, 0.0, Reason.ABOVE_MAXIMUM),
        (30.0, "p", 70.0, 100.0, 0.5, 0.0, 0.0, Reason.AT_INTRINSIC),
        (1e-200, "c", 100.0, 300.0, 0.01, 0.0, 0.0, Reason.OK),
    ]
    cols = list(zip(*cases, strict=True))
    (a, ra), (b, rb) = _both(lambda: bsm.implied_vol(*(np.array(col) for col in cols[:7]), return_reason=True))
    assert ra.tolist() == rb.tolist() == [int(e) for e in cols[7]]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(b)
    assert np.max(np.abs(a[ok] - b[ok]) / b[ok]) <= 1e-14
    (a0, r0), (b0, _) = _both(lambda: bsm.implied_vol(5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0, return_reason=True))
    assert a0.shape == r0.shape == () and abs(float(a0) - float(b0)) <= 1e-15


def test_black76_implied_vol_equals_the_numpy_path(compiled):  # type: ignore[no-untyped-def]
    c, F, K, T, r, _, v = _book(5_000, seed=4)
    K = F * np.exp(np.random.default_rng(40).uniform(-0.5, 0.5, F.size))
    otm = np.where(c, K >= F, K <= F)
    assert otm.mean() > 0.4
    p = black76.price(c, F, K, T, r, v)
    (a, ra), (b, rb) = _both(lambda: black76.implied_vol(p, c, F, K, T, r, return_reason=True))
    assert np.array_equal(ra[otm], rb[otm])
    assert np.max(np.abs(a[otm] - b[otm])) <= 1e-14


def test_kernels_refuse_new_argument_types_instead_of_compiling(compiled):  # type: ignore[no-untyped-def]
    """Every kernel is compiled for its exact signatures at warm-up; a caller can never trigger a compile."""
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError):
        compiled.ndtr(x, np.empty(3, dtype=np.float32))


def _run(code: str, **env: str) -> dict:
    full_env = {k: v for k, v in os.environ.items() if k != _kernels.DISABLE_ENV}
    full_env.update(env)
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                         capture_output=True, text=True, timeout=170)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_importing_the_pricing_package_imports_no_numba() -> None:
    out = _run("""
        import json, sys
        import engine.pricing
        from engine.pricing import bsm, black76, american, heston, merton, _kernels
        g = bsm.greeks("c", 100.0, 100.0, 0.5, 0.03, 0.0, 0.2)  # before any warm-up: numpy
        print(json.dumps({"numba": "numba" in sys.modules, "jit": "engine.pricing._jit" in sys.modules,
                          "llvmlite": "llvmlite" in sys.modules, "in_use": _kernels.status()["in_use"],
                          "delta": float(g.delta)}))
    """)
    assert out["numba"] is False and out["jit"] is False and out["llvmlite"] is False
    assert out["in_use"] is False and 0.5 < out["delta"] < 0.7


def test_background_warm_up_switches_to_the_kernels_and_stops(compiled) -> None:  # type: ignore[no-untyped-def]
    out = _run("""
        import json, sys
        import numpy as np
        from engine.pricing import bsm, _kernels
        before = bsm.implied_vol(5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0)
        w = _kernels.WarmUp()
        started = w.start()
        finished = w.wait(150)
        stopped = w.stop(5)
        after = bsm.implied_vol(5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0)
        again = _kernels.WarmUp()
        print(json.dumps({"started": started, "finished": finished, "stopped": stopped, "result": w.result,
                          "in_use": _kernels.status()["in_use"], "diff": abs(float(after) - float(before)),
                          "second_start": again.start(), "second_stop": again.stop(0)}))
    """)
    assert out["started"] and out["finished"] and out["stopped"] and out["result"] is True
    assert out["in_use"] is True and out["diff"] <= 1e-15
    assert out["second_start"] is False and out["second_stop"] is True  # loaded: no second thread


def test_switched_off_or_broken_numba_leaves_the_numpy_path() -> None:
    off = _run("""
        import json, sys
        from engine.pricing import bsm, _kernels
        w = _kernels.WarmUp()
        print(json.dumps({"available": _kernels.numba_available(), "started": w.start(),
                          "warm": _kernels.warm_up(), "numba": "numba" in sys.modules,
                          "vol": float(bsm.implied_vol(5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0))}))
    """, OPTIONDESK_NO_NUMBA="1")
    assert off == {"available": False, "started": False, "warm": False, "numba": False, "vol": off["vol"]}
    assert 0.1 < off["vol"] < 0.3
    broken = _run("""
        import json
        from engine.pricing import bsm, _kernels
        _kernels._KERNEL_MODULE = "engine.pricing._no_such_kernels"
        ok = _kernels.warm_up()
        print(json.dumps({"ok": ok, "failure": _kernels.status()["failure"], "again": _kernels.warm_up(),
                          "vol": float(bsm.implied_vol(5.0, "c", 100.0, 100.0, 0.5, 0.03, 0.0))}))
    """)
    assert broken["ok"] is False and broken["again"] is False
    assert "ModuleNotFoundError" in broken["failure"] and 0.1 < broken["vol"] < 0.3


def test_cache_dir_goes_to_the_app_cache_when_the_package_is_read_only(tmp_path, monkeypatch) -> None:
    import numba

    # setenv first, so that the undo restores what was there before (configure_cache_dir sets the variable
    # itself; a bare delenv of an unset variable records nothing, and the undo of the later delenv would leave
    # it pointing at this test's folder: every later subprocess then compiled every kernel afresh, ~50 s)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "unused"))
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(_kernels, "_writable", lambda path: False)
    assert _kernels.configure_cache_dir() == tmp_path / "cache" / "numba"
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "numba")
    assert numba.config.CACHE_DIR == str(tmp_path / "cache" / "numba")  # numba was imported: updated in place
    assert (tmp_path / "cache" / "numba").is_dir()
    assert _kernels.configure_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(_kernels, "_writable", lambda path: True)
    assert _kernels.configure_cache_dir() is None  # a writable checkout: numba's own __pycache__


def test_prewarm_fills_a_fresh_cache_dir_that_a_new_process_loads(tmp_path) -> None:
    """What a frozen build or an installer runs once: the kernels compiled into a folder of its choice."""
    cache = tmp_path / "numba-cache"
    first = _run(f"""
        import json
        from engine.pricing import _kernels
        print(json.dumps({{"ok": _kernels.prewarm_cache({str(cache)!r}), "status": _kernels.status()}}))
    """)
    assert first["ok"] and first["status"]["cache_dir"] == str(cache)
    assert any(cache.rglob("*.nbi")) and any(cache.rglob("*.nbc"))
    second = _run("""
        import json
        from engine.pricing import _kernels, _jit_probe
    """.replace("from engine.pricing import _kernels, _jit_probe", """from engine.pricing import _kernels
        ok = _kernels.warm_up()
        from engine.pricing import _jit
        hits = sum(sum(d.stats.cache_hits.values()) for d in (_jit.greeks, _jit.implied_vol))
        misses = sum(sum(d.stats.cache_misses.values()) for d in (_jit.greeks, _jit.implied_vol))
        print(json.dumps({"ok": ok, "hits": hits, "misses": misses}))"""), NUMBA_CACHE_DIR=str(cache))
    assert second == {"ok": True, "hits": 2, "misses": 0}


def test_the_engine_owns_the_warm_up_thread(tmp_path, compiled) -> None:  # type: ignore[no-untyped-def]
    """Engine.start loads the kernels on a background thread, never the loop's, and stop joins it."""
    out = _run(f"""
        import asyncio, json, threading, time
        from engine.core import Engine, EngineConfig
        from engine.pricing import _kernels

        async def main():
            engine = Engine(EngineConfig.for_directory({str(tmp_path)!r}, feed="none"))
            await engine.start()
            warmup = engine._kernel_warmup
            deadline = time.monotonic() + 150
            while _kernels.kernels() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            loaded = _kernels.kernels() is not None
            finished = await asyncio.to_thread(warmup.wait, 150)  # other pricers' kernels load after ours
            await engine.stop()
            return {{"started_thread": warmup is not None and warmup._thread is not None, "loaded": loaded,
                     "loaded_on": _kernels.status()["loaded_on_thread"], "loop_thread": threading.current_thread().name,
                     "cleared": engine._kernel_warmup is None,
                     "finished": finished, "daemon": warmup._thread.daemon, "thread_alive": warmup._thread.is_alive(),
                     "threads": sorted(t.name for t in threading.enumerate() if "numba" in t.name)}}

        print(json.dumps(asyncio.run(main())))
    """)
    assert out["started_thread"] and out["loaded"] and out["cleared"]
    assert out["loaded_on"] == "optiondesk-numba-warmup" != out["loop_thread"]  # never on the loop's thread
    assert out["daemon"] and out["finished"]  # a compile cannot be interrupted: stop's wait is bounded
    assert out["thread_alive"] is False and out["threads"] == []


def test_a_deferred_warm_up_waits_for_the_caller_and_never_starts_after_stop(tmp_path, compiled) -> None:  # type: ignore[no-untyped-def]
    """The window defers the load until its first paint; a call on a stopped engine starts nothing."""
    out = _run(f"""
        import asyncio, json, sys
        from engine.core import Engine, EngineConfig

        async def main():
            engine = Engine(EngineConfig.for_directory({str(tmp_path)!r}, feed="none", defer_kernel_warmup=True))
            await engine.start()
            before = engine._kernel_warmup is None and "numba" not in sys.modules
            started = engine.start_kernel_warmup()
            again = engine.start_kernel_warmup()
            warmup = engine._kernel_warmup
            finished = await asyncio.to_thread(warmup.wait, 150)
            await engine.stop()
            after_stop = engine.start_kernel_warmup()
            return {{"before": before, "started": started, "again": again, "finished": finished,
                     "after_stop": after_stop, "cleared": engine._kernel_warmup is None}}

        print(json.dumps(asyncio.run(main())))
    """)
    assert out == {"before": True, "started": True, "again": False, "finished": True, "after_stop": False,
                   "cleared": True}
