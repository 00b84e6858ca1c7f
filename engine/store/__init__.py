"""SQLite store (WAL, ordered migrations, repositories)."""

from engine.store.database import SchemaTooNewError, Store, StoreError, utc_iso
from engine.store.migrations import MIGRATIONS, Migration, ordered_migrations

__all__ = ["MIGRATIONS", "Migration", "SchemaTooNewError", "Store", "StoreError", "ordered_migrations", "utc_iso"]
