"""The tables whose writes send no NOTIFY are tables of the schema (a misspelt name would notify on
every usage flush and make every worker of every instance re-read its views)."""
import re

from proxy.store.db import MIGRATIONS_DIR
from proxy.store.postgres import QUIET_TABLES


def test_quiet_tables_exist_in_the_schema():
    tables = set()
    for f in MIGRATIONS_DIR.glob("*.sql"):
        tables |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", f.read_text()))
    assert QUIET_TABLES <= tables, sorted(QUIET_TABLES - tables)
    viewed = {"keys", "key_cooldowns", "clients", "client_keys", "runtime_keys", "quota_limits",
              "catalog_entries"}
    assert not viewed & QUIET_TABLES  # what workers keep in memory must notify
