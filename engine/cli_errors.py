"""The one error policy of every ``optiondesk`` command (and of the window's start).

A user at a terminal needs one sentence saying what is wrong, not a Python traceback; whoever debugs it
later needs the traceback. So:

- a *known* problem (:class:`CliError`, an unusable database, a file that cannot be read) prints one
  line on stderr and exits 2; the details go to the log file;
- anything else prints one line naming the exception and the log file, exits 1, and the traceback is
  written only to the log;
- a reader that went away (``optiondesk chain SPY | head``) ends the command quietly the way the Python
  documentation prescribes (stdout pointed at devnull, exit 1), instead of a ``BrokenPipeError`` traceback;
- :func:`dumps_json` writes valid JSON: NaN and ±inf (which ``json.dumps`` emits as bare ``NaN``,
  which no JSON parser accepts) become ``null``.

Imports stay light: this module is loaded by every command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("optiondesk.cli")

#: exit code of a known problem (bad input, unusable file); 1 is an unexpected failure
EXIT_KNOWN = 2
EXIT_UNEXPECTED = 1


class CliError(Exception):
    """A problem the user can fix (bad input, an unusable file): printed as one line, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_KNOWN) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _known_types() -> tuple[type[BaseException], ...]:
    """Errors whose message already says what is wrong. Imported here so the CLI's start stays cheap."""
    import sqlite3

    from pydantic import ValidationError

    from engine.parquet_support import ParquetUnavailable
    from engine.store.database import StoreError

    return (CliError, StoreError, sqlite3.Error, OSError, ValidationError, ParquetUnavailable)


def run_guarded(command: str, fn: Callable[[], int | None]) -> int:
    """Run one command under the policy above; returns the process exit code."""
    try:
        code = int(fn() or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the policy, not at interpreter exit
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return 1
    except KeyboardInterrupt:
        print(f"optiondesk {command}: interrupted", file=sys.stderr)
        return 130
    except _known_types() as exc:
        code = exc.exit_code if isinstance(exc, CliError) else EXIT_KNOWN
        _log_failure(command, exc, logging.WARNING)
        print(f"optiondesk {command}: {_one_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:  # the CLI's last line of defence: any bug is one line plus the log, never a traceback
        where = _log_failure(command, exc, logging.ERROR)
        hint = f" (details in {where})" if where is not None else " (the log file could not be written)"
        print(f"optiondesk {command}: unexpected error: {type(exc).__name__}: {_one_line(exc)}{hint}",
              file=sys.stderr)
        return EXIT_UNEXPECTED


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stdout_to_devnull() -> None:
    """Python's documented EPIPE recipe: the reader is gone, so route the remaining output (including the
    interpreter's final flush) to devnull instead of failing once more at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured, closed)
        pass


def _log_failure(command: str, exc: BaseException, level: int) -> Path | None:
    """Append the traceback to the app's log file (redacted); returns the file, or None if it cannot be written.

    When the process has configured its log file (the window does, at its own ``--home``), the record goes
    there. Otherwise a handler of its own is attached for this record only: a command line run has usually
    not configured logging, and configuring the root logger from here would leave a handler behind."""
    from engine.logging_setup import FORMAT, RedactingFilter, app_file_handler

    exc_info = (type(exc), exc, exc.__traceback__)
    configured = app_file_handler()
    if isinstance(configured, logging.FileHandler):  # to the file only: the console handler would print it all
        configured.handle(log.makeRecord(log.name, level, __file__, 0, "optiondesk %s failed: %s", (command, exc),
                                         exc_info))
        return Path(configured.baseFilename)
    try:
        from engine.paths import AppPaths

        log_file = AppPaths.default().log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    except Exception:  # no log file (read-only home, full disk, bad path): the message says so instead
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    previous = log.propagate
    log.propagate = False  # the root's file handler (GUI) may point at the same file: write it once
    log.addHandler(handler)
    try:
        log.log(level, "optiondesk %s failed: %s", command, exc, exc_info=exc_info)
    finally:
        log.removeHandler(handler)
        log.propagate = previous
        handler.close()
    return log_file


# ---- JSON -----------------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, numpy scalars made plain."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "ndim", None) == 0:
        return finite(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return finite(tolist())
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes valid JSON (NaN/inf → null); ``default=str`` for the rest."""
    kwargs.setdefault("default", str)
    return json.dumps(finite(value), allow_nan=False, **kwargs)
