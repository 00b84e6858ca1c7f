"""Parquet is optional: the lite desktop build leaves pyarrow (80 MB) out, everything else has it.

Every place that reads or writes Parquet imports it through :func:`parquet_module`, so a build without
pyarrow refuses a Parquet file with one clear sentence (and what to do instead) rather than a bare
``ModuleNotFoundError``; CSV works everywhere.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

WITHOUT_PYARROW = ("reading or writing Parquet needs pyarrow, which this build leaves out (the lite desktop "
                   "build); convert the file to CSV, or use the ML build or a pip install (`pip install pyarrow`)")


class ParquetUnavailable(RuntimeError):
    """Parquet was asked for in a build without pyarrow."""


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def parquet_module(path: str | Path | None = None) -> ModuleType:
    """``pyarrow.parquet``, or :class:`ParquetUnavailable` naming ``path`` and the way out."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        where = f"{path}: " if path is not None else ""
        raise ParquetUnavailable(where + WITHOUT_PYARROW) from None
    return pq


__all__ = ["WITHOUT_PYARROW", "ParquetUnavailable", "parquet_available", "parquet_module"]
