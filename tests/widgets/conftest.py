"""Widget tests: the shared qasync session loop (tests/qt_fixtures.py), a started engine, real chains."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from tests.analytics.conftest import NOW, priced_chain  # noqa: E402
from tests.qt_fixtures import *  # noqa: E402, F403
from tests.qt_fixtures import run_async  # noqa: E402

SHOTS = Path(__file__).resolve().parents[2] / "build" / "panel-shots"


def _settings(strategies=(), **oms):
    from engine.oms.config import OmsConfig
    from engine.settings import Settings
    from engine.surface.config import SurfaceConfig
    from tests.sim_start import pinned_settings

    # thread executor for the surface service: no process spawn per test
    return pinned_settings(Settings(surface=SurfaceConfig(executor="thread"), oms=OmsConfig(**oms),
                                    strategies=list(strategies)))


def _start_engine(qtbot, tmp_path, strategies=(), **oms):
    from engine.clock import ManualClock
    from engine.core import Engine, EngineConfig

    eng = Engine(EngineConfig.for_directory(tmp_path, feed="none", settings=_settings(strategies, **oms)))
    eng.clock = ManualClock(NOW)  # market time of the XYZ test chain
    run_async(qtbot, eng.start(), timeout=30)
    return eng


@pytest.fixture()
def engine_strategies():
    """The ``[[strategies]]`` entries the ``engine`` fixture starts with: none, unless a test module overrides
    this fixture (the host reads its entries at start only)."""
    return ()


@pytest.fixture()
def engine(qtbot, async_cleanup, tmp_path, engine_strategies):
    """A real, started Engine (bus, store, paper broker, risk, OMS, surfaces) without a market feed."""
    eng = _start_engine(qtbot, tmp_path, strategies=engine_strategies)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


#: the XYZ chain the paper-fill tests trade (spot 100), and its front expiry
XYZ_CHAIN = priced_chain()
XYZ_FRONT = XYZ_CHAIN.expiries()[0]


def xyz_put(strike: float):
    """(front-expiry put at ``strike``, its bid, its ask) on :data:`XYZ_CHAIN`."""
    import numpy as np

    i = int(np.flatnonzero((XYZ_CHAIN.expiry == XYZ_FRONT) & (XYZ_CHAIN.strike == strike) & ~XYZ_CHAIN.is_call)[0])
    return XYZ_CHAIN.option(i), float(XYZ_CHAIN.bid[i]), float(XYZ_CHAIN.ask[i])


@pytest.fixture()
def paper(qtbot, async_cleanup, tmp_path):
    """A started engine (no manual approval) on the XYZ chain: marketable orders fill on the paper exchange."""
    from engine.bus.events import ChainUpdated, UnderlyingUpdated

    eng = _start_engine(qtbot, tmp_path)
    eng.bus.publish(ChainUpdated(chain=XYZ_CHAIN))
    eng.bus.publish(UnderlyingUpdated(symbol="XYZ", price=100.0))
    eng.bus.publish(UnderlyingUpdated(symbol="SPY", price=600.0))
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


@pytest.fixture()
def shot():
    """Save a widget's grab() as PNG under build/panel-shots and check it is not blank."""

    def save(widget, name: str):
        from PySide6.QtGui import QImage
        from PySide6.QtWidgets import QApplication

        widget.resize(widget.size() if widget.width() > 200 else widget.sizeHint())
        widget.show()  # lay out and paint once (pyqtgraph sizes axes and ranges while painting)
        for _ in range(3):
            QApplication.processEvents()
        img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        img.save(str(path))
        # non-blank: many distinct colours
        colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
        assert len(colours) > 8, f"{name} looks blank ({len(colours)} colours)"
        return path

    return save


SIM_START = "2026-03-02"


@pytest.fixture(scope="session")
def sim_chain():
    """A real SPY chain from the simulated market (seed 7, 2 Mar 2026 open)."""
    from datetime import date

    from engine.bus import Bus
    from engine.market.simulated.feed import SimulatedFeed

    feed = SimulatedFeed.quickstart(Bus(), symbols=("SPY",), seed=7, start=date.fromisoformat(SIM_START))
    return feed.market.chain("SPY")


@pytest.fixture(scope="session")
def spy_surface(sim_chain):
    """A ``SurfaceUpdated`` from the engine's surface fit of four SPY expiries (the real fit job)."""
    import numpy as np

    from engine.surface.config import SurfaceConfig
    from engine.surface.ivrank import iv_rank
    from engine.surface.service import SurfaceUpdated, run_fit_job

    ex = sim_chain.expiries()
    chain = sim_chain.take(np.isin(sim_chain.expiry, ex[[1, 3, 6, 9]]))
    res = run_fit_job(chain, 0.04, 0.0, SurfaceConfig(), 30.0)
    history = 0.12 + 0.06 * np.sin(np.linspace(0, 6, 252))  # a year of daily ATM IVs for the rank
    return SurfaceUpdated(underlying="SPY", fit=res.fit, grid=res.grid, atm_iv=res.atm_iv, tenor_days=30.0,
                          iv_rank=iv_rank(history, res.atm_iv), fit_ms=res.elapsed_ms, chain_ts=chain.ts)


@pytest.fixture()
def desk(qtbot, async_cleanup, tmp_path):
    """The engine's real order path with manual approval in paper, on the XYZ chain (priced with
    engine.pricing) at ``NOW``; the paper account starts with the default cash."""
    from engine.bus.events import ChainUpdated, UnderlyingUpdated

    eng = _start_engine(qtbot, tmp_path, approval_in_paper=True, approval_expiry_s=90.0)
    eng.bus.publish(ChainUpdated(chain=priced_chain()))
    eng.bus.publish(UnderlyingUpdated(symbol="XYZ", price=100.0))
    eng.bus.publish(UnderlyingUpdated(symbol="SPY", price=600.0))  # beta-weighting benchmark
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)
