"""``proxy/store/copy.py`` pure parts: which tables the migrations seed, value conversion per column type
(SQLite columns hold any type; PostgreSQL's do not). The copy itself: tests/integration/test_db_copy.py."""
from __future__ import annotations

import pytest

from proxy.store.copy import CopyError, _convert, seeded_tables


def test_seeded_tables_come_from_the_migrations() -> None:
    assert seeded_tables() == {"client_changes", "catalog_state", "cache_totals"}


@pytest.mark.parametrize(("value", "kind", "want"), [
    (None, "bigint", None),
    (3.0, "bigint", 3),
    (7, "bigint", 7),
    (0, "double precision", 0.0),
    ("abc", "bytea", b"abc"),
    (b"\x00\xff", "bytea", b"\x00\xff"),
    (b"text", "text", "text"),
    ("x", "text", "x"),
])
def test_values_take_the_target_column_type(value, kind, want) -> None:
    got = _convert(value, kind, "t.c")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("value", "kind", "text"), [
    (1.5, "bigint", "not a whole number"),
    (b"\xff\xfe", "text", "binary data in a text column"),
])
def test_values_that_cannot_be_copied_name_the_column(value, kind, text) -> None:
    with pytest.raises(CopyError, match=text) as err:
        _convert(value, kind, "usage_records.status")
    assert "usage_records.status" in str(err.value)
