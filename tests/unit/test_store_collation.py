"""Text sorts the same on both backends: by code point, as SQLite compares it, even when the PostgreSQL
database was created with a locale that sorts case-insensitively ('alpha' < 'Zeta' in en-US)."""
from __future__ import annotations

import time

import pytest

from proxy.clients.registry import ClientRegistry
from tests.stores import Backend

NAMES = ["Zeta", "alpha", "b-c", "bb", "9x", "gpt-4o", "gpt-4o-mini", "gpt4", "Alpha"]


@pytest.fixture(params=["sqlite", "postgresql-en-US"])
def localized(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        backend = Backend("sqlite", str(tmp_path / "c.db"))
    else:
        server = request.getfixturevalue("pg_server")
        name = f"icu_{len(server.psql('SELECT datname FROM pg_database').split())}"
        server.psql(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                    " LOCALE 'C'")
        backend = Backend("postgresql", server.url(name))
        # the database's own order really is the locale's: the columns' collation makes the difference
        assert backend.scalar("SELECT 'alpha' < 'Zeta'") is True
    yield backend
    backend.close()


def test_listings_sort_by_code_point(localized: Backend) -> None:
    store = localized.open()
    registry = ClientRegistry(store, time.time)
    for name in NAMES:
        registry.create({"name": name}, "test")
    assert [c.name for c in registry.list()] == sorted(NAMES)  # "9x" < "Alpha" < "Zeta" < "alpha"
    with store.snapshot() as tx:
        assert tx._run("SELECT COUNT(*) FROM clients WHERE name > ?", ("Zeta",)).fetchone()[0] == 6
