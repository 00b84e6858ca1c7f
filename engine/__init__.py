"""Optiondesk engine: headless asyncio core (no Qt, ever)."""

import os as _os
from importlib import metadata as _metadata

# One BLAS thread per process, set before numpy loads. Our linear algebra is small (chains of a few
# thousand rows); OpenBLAS's default thread pool spins on every core after each call and takes CPU
# from the event loop and the fit workers, for no speed-up. Parallel work uses processes instead.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

try:
    __version__ = _metadata.version("optiondesk")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
