"""Logging: a rotating file in the log dir, a redaction filter, the tastytrade logger at WARNING.

The redaction filter masks anything that looks like a credential (bearer tokens, JWTs, long opaque
tokens, ``secret=``/``token=``/``password=`` values) and account numbers beyond their last 4 characters
for account ids registered with :func:`register_sensitive`.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import threading
from pathlib import Path

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "***jwt***"),
    (re.compile(
        r"(?i)([\"']?(?:access[_-]?token|refresh[_-]?token|client[_-]?secret|provider[_-]?secret|secret|password|"
        r"passwd|token|api[_-]?key|authorization|session[_-]?token|auth[_-]?token)[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}&]+)"),
        r"\1***"),
]
_LONG_TOKEN = re.compile(r"\b[A-Za-z0-9_\-]{40,}\b")
_sensitive_lock = threading.Lock()
_sensitive: set[str] = set()


def register_sensitive(value: str, keep_last: int = 4) -> None:
    """Mask ``value`` wherever it appears in a log line (e.g. an account number; last 4 kept)."""
    if value and len(value) > keep_last:
        with _sensitive_lock:
            _sensitive.add(value)


def redact(text: str) -> str:
    for pat, repl in _PATTERNS:
        text = pat.sub(repl, text)
    text = _LONG_TOKEN.sub("***", text)
    with _sensitive_lock:
        values = sorted(_sensitive, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, "*" * (len(v) - 4) + v[-4:])
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with secrets masked (args are merged first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a record whose args do not format is still redacted and logged
            msg = str(record.msg)
        clean = redact(msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg, record.args = clean, None
        return True


FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_configured: dict[str, logging.Handler] = {}


def app_file_handler() -> logging.Handler | None:
    """The rotating file handler :func:`setup_logging` installed, if any (the CLI's error policy writes a
    failure's traceback there and nowhere else)."""
    return _configured.get("file")


def quiet_third_party() -> None:
    """The tastytrade SDK logs bearer tokens at DEBUG: never below WARNING."""
    for name in ("tastytrade", "httpx", "httpx2", "httpcore", "httpcore2", "websockets", "ib_async", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(log_dir: Path | None, level: str = "INFO", *, console: bool = False) -> Path | None:
    """Configure the root logger once per process: rotating file (5 × 5 MB) + redaction everywhere."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    redactor = RedactingFilter()
    log_file = None
    if log_dir is not None and "file" not in _configured:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / "optiondesk.log"
        fh = logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=5, encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        fh.addFilter(redactor)
        root.addHandler(fh)
        _configured["file"] = fh
    if console and "console" not in _configured:
        ch = logging.StreamHandler()
        ch.setFormatter(logging.Formatter(FORMAT))
        ch.addFilter(redactor)
        root.addHandler(ch)
        _configured["console"] = ch
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(redactor)
    quiet_third_party()
    return log_file
