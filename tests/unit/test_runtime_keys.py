"""Runtime keys, pure parts and the pool: the vault (Fernet, rotation), key shapes and import splitting,
the secret-key config, two pools ("workers") on one database seeing each other's adds and removals, and
a config key that comes back getting its config weight (the old override cleared, said in the audit)."""
from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.fernet import Fernet
from keys_support import FAST, SPECS, Clock, eventually, make_pool

from proxy.config import ConfigError, load_config, parse_config
from proxy.errors import NoKeyAvailable
from proxy.keys import KeyAdmin, KeySpec, key_id
from proxy.keys.key_format import malformed, split_import
from proxy.keys.runtime import RuntimeKeyError, RuntimeKeys
from proxy.keys.vault import NoSecretKey, UndecryptableSecret, Vault

K1, K2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SECRET = "AIzaRUNTIME-unit-key-000000001"
M = "gemini-2.5-flash"


# --- vault ------------------------------------------------------------------------------------------


def test_vault_round_trip_rotation_and_refusals():
    token = Vault(K1).encrypt(SECRET)
    assert SECRET not in token and Vault(K1).decrypt(token) == SECRET
    assert Vault(K2, (K1,)).decrypt(token) == SECRET  # the previous key still decrypts
    rotated = Vault(K2, (K1,)).rotate(token)
    assert Vault(K2).decrypt(rotated) == SECRET
    with pytest.raises(UndecryptableSecret):
        Vault(K2).decrypt(token)
    with pytest.raises(NoSecretKey, match="KEYRELAY_SECRET_KEY"):
        Vault(None).encrypt(SECRET)
    assert not Vault(None).available and Vault(K1).available


# --- shapes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret, why", [
    ("AIzaSy" + "x" * 33, None),
    ("sk-proj-" + "A" * 156, None),
    ("x" * 16, None),
    ("x" * 15, "too short"),
    ("x" * 257, "too long"),
    ("AIza with space 000000000", "whitespace"),
    ("AIza\ttab-inside-000000000", "whitespace"),
    ("AIza\x07bell-inside-00000000", "control"),
    ("AIzaé-accent-inside-000000", "non-ASCII"),
])
def test_malformed(secret, why):
    got = malformed(secret)
    assert (got is None) if why is None else (why in got)
    assert got is None or secret not in got


def test_split_import_newlines_commas_blanks_comments():
    text = "# keys, for gem\na1, a2,,\r\n\n  a3  \n#x\na4"
    assert split_import(text) == [(2, "a1"), (2, "a2"), (4, "a3"), (6, "a4")]


# --- config -----------------------------------------------------------------------------------------


def test_secret_key_from_env_or_file_named_paths_never_quoted(tmp_path):
    path = tmp_path / "c.yaml"
    providers = "providers: [{name: mock, type: mock}]\n"
    path.write_text("server: {}\n" + providers)
    cfg = load_config(path, env={"KEYRELAY_SECRET_KEY": K1, "KEYRELAY_SECRET_KEYS_PREVIOUS": f"{K2}, "})
    assert (cfg.server.secret_key, cfg.server.secret_keys_previous) == (K1, (K2,))
    assert K1 in cfg.secrets() and K2 in cfg.secrets() and K1 not in repr(cfg.server)
    path.write_text(f"server: {{secret_key: {K2}}}\n" + providers)
    assert load_config(path, env={"KEYRELAY_SECRET_KEY": K1}).server.secret_key == K2  # the file wins
    mock = [{"name": "mock", "type": "mock"}]
    assert parse_config({"providers": mock}).server.secret_key is None
    with pytest.raises(ConfigError, match=r"^server\.secret_key: not a Fernet key") as exc:
        parse_config({"server": {"secret_key": "not-a-key-but-maybe-a-secret"}, "providers": mock})
    assert "not-a-key" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"^server\.secret_keys_previous\[1\]: not a Fernet key"):
        parse_config({"server": {"secret_key": K1, "secret_keys_previous": [K2, "short"]}, "providers": mock})
    with pytest.raises(ConfigError, match=r"^server\.secret_keys_previous: needs server\.secret_key"):
        parse_config({"server": {"secret_keys_previous": [K2]}, "providers": mock})


# --- the pool: two workers on one database ----------------------------------------------------------


@pytest.fixture
def clock():
    return Clock()


def runtime(pool) -> RuntimeKeys:
    return RuntimeKeys(pool, {"gemini": "gemini", "ollama": "ollama"})


def test_a_runtime_key_added_by_one_pool_is_used_and_dropped_by_another(any_database, clock):
    now = replace(FAST, refresh_interval_s=0.0)  # as the app: the change token looked at on every acquire
    a = make_pool(any_database, clock, now, vault=Vault(K1), start_flusher=False)
    b = make_pool(any_database, clock, now, vault=Vault(K1), start_flusher=False)
    only_new = frozenset(key_id("gemini", s.secret) for s in SPECS if s.secret)
    with pytest.raises(NoKeyAvailable):
        b.acquire("gemini", M, exclude=only_new)
    kid = runtime(a).add("gemini", SECRET, "t", label="new", weight=2)["id"]

    def b_has(kid: str | None) -> bool:
        """b sees the change (PostgreSQL: when a's notification arrives, within the 1 s promised)"""
        try:
            return b.acquire("gemini", M, exclude=only_new).id == kid
        except NoKeyAvailable:
            return kid is None

    eventually(lambda: b_has(kid))
    got = b.acquire("gemini", M, exclude=only_new)
    assert (got.id, got.secret, got.label, got.weight) == (kid, SECRET, "new", 2.0)
    b.sync(list(SPECS))  # a restart with the same config keeps runtime keys
    assert b.acquire("gemini", M, exclude=only_new).id == kid
    assert b.get(kid)["source"] == "runtime" and b.get(kid)["hint"] == "AIza…001"
    runtime(a).remove(kid, "t")
    eventually(lambda: b_has(None))
    assert b.get(kid)["retired"] is True and b.get(kid)["source"] is None
    for p in (a, b):
        p.close()


def test_a_pool_whose_secret_key_cannot_decrypt_leaves_the_key_unusable(any_database, clock, caplog):
    a = make_pool(any_database, clock, vault=Vault(K1), start_flusher=False)
    kid = runtime(a).add("gemini", SECRET, "t")["id"]
    other = make_pool(any_database, clock, vault=Vault(K2), start_flusher=False)
    assert other.key(kid) is None and other.get(kid)["usable"] is False
    assert "cannot be used" in caplog.text and SECRET not in caplog.text
    with pytest.raises(RuntimeKeyError) as exc:
        runtime(other).test(kid, lambda key: {"ok": True, "outcome": "ok"}, "t")
    assert exc.value.code == "key_not_usable"
    for p in (a, other):
        p.close()


def test_keyless_provider_and_config_duplicates_are_refused(any_database, clock):
    pool = make_pool(any_database, clock, vault=Vault(K1), start_flusher=False)
    with pytest.raises(RuntimeKeyError, match="takes no API key"):
        runtime(pool).add("ollama", SECRET, "t")
    with pytest.raises(RuntimeKeyError, match="the config") as exc:
        runtime(pool).add("gemini", SPECS[0].secret, "t")
    assert exc.value.status == 409 and SPECS[0].secret not in exc.value.message
    pool.close()


def test_a_config_key_that_comes_back_gets_its_config_weight_and_the_audit_says_so(any_database, clock):
    pool = make_pool(any_database, clock, start_flusher=False)
    kid = key_id("gemini", SPECS[0].secret)
    KeyAdmin(pool).set_weight(kid, 7, actor="op")
    pool.sync(list(SPECS[1:]))  # removed from config
    pool.sync([KeySpec("gemini", SPECS[0].secret, weight=3.0), *SPECS[1:]])  # and back
    assert pool.get(kid)["weight"] == 3.0
    restore = KeyAdmin(pool).audit(1)[0]
    assert restore["action"] == "restore"
    assert restore["before"]["weight_override"] == 7.0 and restore["after"]["weight_override"] is None
    pool.close()


def test_an_operator_label_survives_a_sync_unless_config_gives_one(any_database, clock):
    specs = [KeySpec("gemini", SPECS[0].secret), KeySpec("gemini", SPECS[1].secret, label="cfg")]
    pool = make_pool(any_database, clock, start_flusher=False, specs=specs)
    k0, k1 = (key_id("gemini", s.secret) for s in SPECS[:2])
    rk = RuntimeKeys(pool, {"gemini": "gemini"})
    rk.set_label(k0, "mine", "op")
    rk.set_label(k1, "mine", "op")
    pool.sync(specs)
    assert (pool.get(k0)["label"], pool.get(k1)["label"]) == ("mine", "cfg")
    pool.close()
