"""Volatility surface and chain analytics: parity forwards, per-strike IVs, SVI slices with arbitrage
repair, surface queries, term structure/skew/expected move, IV rank and realized vol.

Import the pieces from their modules (``engine.surface.fit.fit_chain``, ``engine.surface.service.SurfaceService``,
``engine.surface.views.smile_view`` ...); this package module stays light.
"""

from engine.surface.config import SurfaceConfig

__all__ = ["SurfaceConfig"]
