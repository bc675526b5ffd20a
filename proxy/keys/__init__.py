"""The key manager: stable key ids, health, circuit breakers, cooldowns, selection, shared state."""
from .admin import KeyAdmin
from .ids import key_id
from .pool import KeyPool
from .revalidate import revalidate_once, run_revalidation
from .snapshot import SnapshotError
from .specs import Key, KeySettings, KeySpec

__all__ = ["Key", "KeyAdmin", "KeyPool", "KeySettings", "KeySpec", "SnapshotError", "key_id",
           "revalidate_once", "run_revalidation"]
