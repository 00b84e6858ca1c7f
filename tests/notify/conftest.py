from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.notify.servers import HttpServer, SmtpServer, http_server, smtp_server

SMTP_USER, SMTP_PASSWORD = "trader@example.test", "s3cret-smtp-pass"


@pytest.fixture()
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    yield from smtp_server(tmp_path, SMTP_USER, SMTP_PASSWORD)


@pytest.fixture()
def web() -> Iterator[HttpServer]:
    yield from http_server()
