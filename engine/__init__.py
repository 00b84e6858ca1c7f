"""Optiondesk engine: headless asyncio core (no Qt, ever)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("optiondesk")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
