"""A database this release cannot safely use is refused at open, with a message naming the problem
(issue 14, findings 8 and 15): a newer schema, a file that is not SQLite, an SQLite file that is not
ours, a malformed file, a read-only file, a folder. A zero-byte file is an empty database and opens."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store import Store, StoreError
from engine.store.migrations import MIGRATIONS, Migration

# A later release rebuilds `orders` with a required column: this release's inserts would fail with
# IntegrityError at the first order if it opened such a database.
V32_NEWER = """
CREATE TABLE orders_new AS SELECT * FROM orders WHERE 0;
ALTER TABLE orders_new ADD COLUMN venue TEXT;
DROP TABLE orders;
CREATE TABLE orders (order_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL UNIQUE, venue TEXT NOT NULL);
DROP TABLE orders_new
"""


def test_open_when_a_newer_release_added_a_migration_then_refused_naming_both_versions(tmp_path, monkeypatch):
    path = tmp_path / "optiondesk.db"
    latest = Store.latest_version()
    with monkeypatch.context() as m:
        m.setattr("engine.store.migrations.MIGRATIONS", [*MIGRATIONS, Migration(latest + 1, "newer", V32_NEWER)])
        Store.open(path).close()
    with pytest.raises(StoreError) as info:
        Store.open(path)
    msg = str(info.value)
    assert f"schema version {latest + 1}" in msg and f"up to {latest}" in msg and str(path) in msg


def test_open_when_schema_is_999_then_refused_and_the_file_is_untouched(tmp_path):
    path = tmp_path / "optiondesk.db"
    Store.open(path).close()
    con = sqlite3.connect(path)
    con.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (999, 'future', '2030-01-01')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"schema version 999\b.*up to {Store.latest_version()}"):
        Store.open(path)
    assert path.read_bytes() == before


def test_doctor_when_database_is_from_a_newer_release_then_problem_names_both_versions(tmp_path):
    from engine.doctor import run_doctor
    from engine.paths import AppPaths

    paths = AppPaths.under(tmp_path).ensure()
    Store.open(paths.database).close()
    con = sqlite3.connect(paths.database)
    con.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (999, 'future', '2030-01-01')")
    con.commit()
    con.close()
    report = run_doctor(paths)
    assert not report.ok
    assert any("schema version 999" in p and f"up to {Store.latest_version()}" in p for p in report.problems)
    assert report.database.get("schema_version") == 999 and report.database.get("latest") == Store.latest_version()


def test_open_when_file_is_random_bytes_then_store_error_says_not_a_database(tmp_path):
    path = tmp_path / "optiondesk.db"
    path.write_bytes(bytes(range(256)) * 32)
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        Store.open(path)
    assert str(path) in str(info.value)


def test_open_when_pages_are_corrupt_then_store_error_says_malformed(tmp_path):
    path = tmp_path / "optiondesk.db"
    Store.open(path).close()
    data = bytearray(path.read_bytes())
    data[100:4000] = bytes((i * 37) % 251 for i in range(3900))
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"damaged|malformed") as info:
        Store.open(path)
    assert str(path) in str(info.value)


def test_open_when_sqlite_file_of_another_program_then_refused_and_not_modified(tmp_path):
    path = tmp_path / "optiondesk.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE orders (id INTEGER, what TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not an Optiondesk database") as info:
        Store.open(path)
    assert "orders" in str(info.value)
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert tables == {"orders"}


def test_open_when_path_is_a_folder_then_store_error_names_it(tmp_path):
    path = tmp_path / "optiondesk.db"
    path.mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(path)


def test_open_when_file_is_zero_bytes_then_it_is_an_empty_database_and_migrates(tmp_path):
    path = tmp_path / "optiondesk.db"
    path.write_bytes(b"")
    store = Store.open(path)
    try:
        assert store.schema_version == Store.latest_version()
        store.audit.record("test", "written", {"ok": True})
        assert store.audit.list("written")[0]["detail"] == {"ok": True}
    finally:
        store.close()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (chmod alone does not stop root: use the immutable flag)."""
    path.chmod(0o444)
    immutable = False
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                            capture_output=True).returncode != 0:
            path.chmod(0o644)
            pytest.skip("running as root without chattr +i: cannot make a file read-only")
        immutable = True
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def test_open_when_database_file_is_read_only_then_store_error_says_read_only(tmp_path):
    path = tmp_path / "optiondesk.db"
    Store.open(path).close()
    for extra in (tmp_path / "optiondesk.db-wal", tmp_path / "optiondesk.db-shm"):
        extra.unlink(missing_ok=True)
    with read_only(path):
        with pytest.raises(StoreError, match="read-only") as info:
            Store.open(path)
        assert str(path) in str(info.value)
