"""Configuration: YAML with ${VAR} / ${VAR:-default} substitution, validated into typed objects at load.

Every validation error names the exact path of the bad value (``providers[1].keys[0]: ...``).
The names ``server.host/port/database/admin_token``, ``providers[].name/type/base_url/keys`` and
``models[].name/targets[].provider/model`` are a contract: extend, never rename.
"""
from __future__ import annotations

import base64
import builtins
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml

from proxy import model_names
from proxy.clients.model import PERIODS, Client, ModelLimit, config_client_id, key_hint

if TYPE_CHECKING:
    from proxy.inspect.settings import InspectorConfig, LoggingConfig
    from proxy.transforms import Transforms

REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_DIR / "config" / "keyrelay.yaml"

PROVIDER_TYPES = ("gemini", "openai", "anthropic", "ollama", "mock")
DEFAULT_BASE_URLS = {
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "ollama": "http://127.0.0.1:11434",
    "mock": "mock://local",
}
KEYLESS_TYPES = ("ollama", "mock")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_ADMIN_TOKEN = 16
AUTH_MODES = ("keys", "open")
CLIENT_KEY = re.compile(r"kr-[A-Za-z0-9_-]{43}")


class ConfigError(Exception):
    """A configuration problem; the message starts with the path of the offending value."""


# ---------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4806
    # a SQLite file, or postgresql://user:password@host:port/db (docs/postgresql.md); never in a repr
    database: str = field(default="var/keyrelay.db", repr=False)
    database_pool_size: int = 4  # PostgreSQL connections per worker (plus one for LISTEN)
    admin_token: str | None = None
    workers: int = 2
    max_body_bytes: int = 10 * 1024 * 1024
    graceful_timeout: float = 30.0
    log_level: str = "info"
    access_log: bool = False
    trusted_proxies: int = 0  # X-Forwarded-For hops to trust (nginx in front: 1)
    allowed_hosts: tuple[str, ...] = ()  # Host header names allowed besides the bind address and loopback
    pidfile: str | None = None  # the gunicorn master writes its pid here (resolved like ``database``)
    # Fernet keys for runtime upstream keys (docs/runtime-keys.md), or KEYRELAY_SECRET_KEY(S_PREVIOUS)
    secret_key: str | None = field(default=None, repr=False)
    secret_keys_previous: tuple[str, ...] = field(default=(), repr=False)  # still decrypt, never encrypt


@dataclass(frozen=True)
class KeyManagerConfig:
    default_cooldown_s: float = 60.0
    daily_reset_tz: str = "America/Los_Angeles"
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    revalidate_interval_s: float = 300.0
    max_cooldown_s: float = 172800.0  # no cooldown (upstream Retry-After, snapshot) lasts longer
    pacing: bool = True  # keep each key under its known quota limits (docs/pacing.md)


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 4  # upstream attempts per request, across keys and targets
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 5.0  # longest wait honoured inside one request
    deadline_s: float = 120.0  # overall per request, streams until the first chunk
    retry_on: tuple[str, ...] = ("quota", "transient", "auth")


@dataclass(frozen=True)
class TimeoutConfig:
    connect: float = 5.0
    first_byte: float = 60.0
    idle: float = 60.0
    keepalive_expiry: float = 15.0  # an idle pooled connection older than this is closed, never reused


@dataclass(frozen=True)
class TlsConfig:
    verify: bool = True  # false: no certificate or host name check (warned at startup, shown in /admin)
    ca_file: str | None = None  # PEM bundle trusted instead of the system store


@dataclass(frozen=True)
class KeyConfig:
    key: str | None
    weight: float = 1.0
    label: str | None = None
    project: str | None = None  # keys of one project count and share quota limits together


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    keys: tuple[KeyConfig, ...] = ()
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    headers: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()  # upstream models advertised in /v1/models as "provider/model"
    passthrough: str | tuple[str, ...] = "listed"  # which "provider/<model>" names clients may ask for
    latency_ms: float = 0.0  # mock only: simulated latency before the answer
    chunk_delay_ms: float = 0.0  # mock only: pause between stream chunks
    proxy: str | None = None  # None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment; "": none
    tls: TlsConfig = field(default_factory=TlsConfig)
    catalog: str | None = None  # openrouter | models.dev:<provider id>; None: matched by type and base_url
    limits: dict[str, dict[str, int]] = field(default_factory=dict)  # model (glob, "*") → {rpm, tpm, ...}
    transforms: Transforms | None = field(default=None, hash=False, compare=False)  # proxy/transforms.py


@dataclass(frozen=True)
class TargetConfig:
    provider: str
    model: str
    weight: float = 1.0


@dataclass(frozen=True)
class FreePoolConfig:
    """A model alias whose targets are the catalog's free models of one provider (proxy.catalog)."""

    provider: str
    min_context: int = 0
    input: tuple[str, ...] = ("text",)
    max_models: int = 10


@dataclass(frozen=True)
class CacheConfig:
    """The response cache (``proxy/cache``, docs/cache.md): global, and per model (``models[].cache``
    overrides ``enabled``, ``ttl_s``, ``scope``, ``deterministic_only``)."""

    enabled: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 10000  # global only: the store-wide bounds of the least-recently-used eviction
    max_bytes: int = 268435456
    scope: str = "client"  # client: each client key's entries apart; shared: every client sees them
    models: tuple[str, ...] = ()  # globs of client-facing model names cached when enabled; empty = all
    deterministic_only: bool = False  # only requests with temperature 0 or a seed


@dataclass(frozen=True)
class ModelConfig:
    name: str
    targets: tuple[TargetConfig, ...]
    strategy: str = "fallback"  # fallback: in order; weighted: first pick by weight, rest in order
    free_pool: FreePoolConfig | None = None  # targets come from the catalog's free models
    cache: CacheConfig | None = None  # this model's own cache settings (merged over the global ones)
    transforms: Transforms | None = field(default=None, hash=False, compare=False)  # wins over the provider's


CATALOG_SOURCES = ("models.dev", "openrouter")
CATALOG_URLS = {"models.dev": "https://models.dev/api.json",
                "openrouter": "https://openrouter.ai/api/v1/models"}


@dataclass(frozen=True)
class CatalogConfig:
    sources: tuple[str, ...] = CATALOG_SOURCES
    refresh_s: float = 21600.0
    file: str | None = None  # a catalog document (either format) imported at start (air-gapped installs)
    urls: dict[str, str] = field(default_factory=lambda: dict(CATALOG_URLS), hash=False, compare=False)


TRACING_EXPORTERS = ("otlp", "console")


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry tracing (the optional ``keyrelay[otel]`` packages): off by default."""

    enabled: bool = False
    exporter: str = "otlp"  # otlp: OTLP over HTTP/protobuf to ``endpoint``; console: spans on stdout
    endpoint: str | None = None  # default: the exporter's (OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318)
    sample: float = 1.0  # the share of new traces kept; a client's sampled traceparent is always followed


@dataclass(frozen=True)
class AuthConfig:
    mode: str | None = None  # keys | open; unset: keys, except while only the built-in mock serves


@dataclass(frozen=True)
class AccountingConfig:
    timezone: str = "UTC"  # where day / week / month periods start
    retention_days: int = 90  # raw usage rows; daily rollups are kept


@dataclass(frozen=True)
class ClientConfig:
    """A client from the config (GitOps): the client as the store keeps it (``source: config``, an id
    derived from its name) and its key, which the store only ever sees hashed."""

    client: Client
    key: str = field(repr=False)

    @property
    def name(self) -> str:
        return self.client.name


@dataclass(frozen=True)
class PriceConfig:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: cached input costs as much as input


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    providers: tuple[ProviderConfig, ...]
    models: tuple[ModelConfig, ...]
    key_manager: KeyManagerConfig = field(default_factory=KeyManagerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    source: str = "<memory>"
    notices: tuple[str, ...] = ()  # what the loader decided (e.g. which upstream is active), said at startup
    auth: AuthConfig = field(default_factory=AuthConfig)
    accounting: AccountingConfig = field(default_factory=AccountingConfig)
    clients: tuple[ClientConfig, ...] = ()
    prices: dict[str, PriceConfig] = field(default_factory=dict, hash=False, compare=False)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    inspector: InspectorConfig = field(default_factory=lambda: _inspect().InspectorConfig(), compare=False)
    logging: LoggingConfig = field(default_factory=lambda: _inspect().LoggingConfig(), compare=False)

    @property
    def open_access(self) -> bool:
        """No client key needed: ``auth.mode: open``, or mode unset while only the built-in mock serves."""
        if self.auth.mode is not None:
            return self.auth.mode == "open"
        return all(p.type == "mock" for p in self.providers)

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def secrets(self) -> tuple[str, ...]:
        """Every upstream key and the admin token: what logs, errors and responses must never show."""
        out = [k.key for p in self.providers for k in p.keys if k.key]
        out += [c.key for c in self.clients]
        out += [pw for p in self.providers if p.proxy and (pw := urlsplit(p.proxy).password)]
        if self.server.admin_token:
            out.append(self.server.admin_token)
        out += [k for k in (self.server.secret_key, *self.server.secret_keys_previous) if k]
        return tuple(out)


# ---------------------------------------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of parsed YAML (comments are never touched,
    and a substituted value cannot change the document's structure). An unset ${VAR} is an error."""
    if isinstance(value, dict):
        return {k: substitute(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        found = env.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set "
                                  f"(write ${{{name}:-}} to allow an empty value)")
            return default
        return found

    return _VAR.sub(repl, value)


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read, substitute and validate a config file (default: config/keyrelay.yaml)."""
    path = Path(path) if path else DEFAULT_CONFIG
    env = dict(os.environ if env is None else env)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    config = parse_config(secret_keys_from_env(substitute(data, env), env), source=str(path))
    return _resolve_paths(config, path.resolve().parent)


def _resolve_paths(config: Config, base: Path) -> Config:
    """A relative ``server.database`` or ``server.pidfile`` in a config file means relative to that file's
    directory, wherever the command runs (from another directory it used to create a second, empty
    database)."""
    def resolve(value: str) -> str:
        return value if Path(value).is_absolute() or ":" in value.split("/")[0] else str(base / value)

    pidfile = config.server.pidfile
    server = replace(config.server, database=resolve(config.server.database),
                     pidfile=resolve(pidfile) if pidfile else None)
    return replace(config, server=server)


SECRET_KEY_ENV, PREVIOUS_KEYS_ENV = "KEYRELAY_SECRET_KEY", "KEYRELAY_SECRET_KEYS_PREVIOUS"
DATABASE_ENV = "KEYRELAY_DATABASE"


def secret_keys_from_env(data: Any, env: dict[str, str]) -> Any:
    """``server.secret_key`` / ``server.secret_keys_previous`` from KEYRELAY_SECRET_KEY /
    KEYRELAY_SECRET_KEYS_PREVIOUS (comma-separated) when the file does not set them."""
    if not isinstance(data, dict) or not isinstance(data.get("server", {}), dict):
        return data  # parse_config names the problem
    server = dict(data.get("server") or {})
    if server.get("secret_key") in (None, "") and env.get(SECRET_KEY_ENV, "").strip():
        server["secret_key"] = env[SECRET_KEY_ENV]
    if server.get("secret_keys_previous") in (None, "", []) and env.get(PREVIOUS_KEYS_ENV, "").strip():
        server["secret_keys_previous"] = env[PREVIOUS_KEYS_ENV]
    if env.get(DATABASE_ENV, "").strip():  # wins over the file: a deployment's own database (and password)
        server["database"] = env[DATABASE_ENV].strip()
    return {**data, "server": server} if server else data


def parse_config(data: Any, source: str = "<memory>") -> Config:
    if data is None:
        data = {}
    obj = _Obj(data, "")
    server = _server(obj.sub("server", {}))
    key_manager = _key_manager(obj.sub("key_manager", {}))
    retry = _retry(obj.sub("retry", {}))
    providers, skipped, notices = _providers(obj.list("providers", []))
    cache = _cache(obj.sub("cache", {}))
    models = _models(obj.list("models", []), providers, skipped, cache)
    auth = _auth(obj.sub("auth", {}))
    accounting = _accounting(obj.sub("accounting", {}))
    clients = _clients(obj.list("clients", []))
    prices = _prices(obj.sub("prices", {}))
    catalog = _catalog(obj.sub("catalog", {}))
    tracing = _tracing(obj.sub("tracing", {}))
    inspector = _inspect().parse_inspector(obj.sub("inspector", {}))
    logging = _inspect().parse_logging(obj.sub("logging", {}))
    obj.done()
    if not providers:
        raise ConfigError("providers: at least one provider is required")
    notices += _auth_notices(auth, clients, providers)
    return Config(server, tuple(providers), tuple(models), key_manager, retry, source, tuple(notices),
                  auth, accounting, clients, prices, catalog, tracing, cache, inspector, logging)


def _inspect() -> Any:
    """proxy.inspect.settings, imported late (it imports this module for ConfigError and _Obj)."""
    from proxy.inspect import settings

    return settings


def _transforms(o: _Obj) -> Transforms | None:
    from proxy.transforms import parse_transforms

    return parse_transforms(o.sub("transforms", {}))


class _Obj:
    """A mapping being validated; remembers its path and which keys were read (unknown keys are errors)."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or '<root>'}: expected a mapping, got {_kind(data)}")
        self.data, self.path = data, path
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.data.get(key, default)

    def sub(self, key: str, default: Any) -> _Obj:
        value = self.get(key, default)
        return _Obj({} if value is None else value, self.at(key))

    def list(self, key: str, default: list) -> list[tuple[Any, str]]:
        value = self.get(key, default)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{self.at(key)}: expected a list, got {_kind(value)}")
        return [(v, f"{self.at(key)}[{i}]") for i, v in enumerate(value)]

    def str(self, key: str, default: Any = ..., *, choices: tuple[str, ...] | None = None) -> Any:
        value = self.get(key, default)
        if value is ...:
            raise ConfigError(f"{self.at(key)}: required")
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.at(key)}: expected a non-empty string, got {_kind(value)}")
        if choices and value not in choices:
            raise ConfigError(f"{self.at(key)}: must be one of {', '.join(choices)}, got {_quote(value)}")
        return value

    # below here ``str`` in an annotation would name the method above: the builtin is spelled out
    def num(self, key: builtins.str, default: float, *, minimum: float = 0, integer: bool = False,
            maximum: float | None = None) -> Any:
        value = self.get(key, default)
        if isinstance(value, str):  # values substituted from the environment arrive as strings
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                pass
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{self.at(key)}: expected {'an integer' if integer else 'a number'}, "
                              f"got {_kind(value)}")
        if value < minimum or (maximum is not None and value > maximum):
            rng = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigError(f"{self.at(key)}: must be {rng}, got {value}")
        return value

    def bool(self, key: builtins.str, default: bool) -> bool:
        value = self.get(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{self.at(key)}: expected true or false, got {_kind(value)}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen, key=str)
        if unknown:
            raise ConfigError(f"{self.at(str(unknown[0]))}: unknown option")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, str):  # never quoted: a secret may sit where a number was expected
        return "a string"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _admin_token(o: _Obj) -> str | None:
    """Stripped on both sides, as the presented token is; empty means the admin API is off."""
    token = o.get("admin_token")
    if token is not None and not isinstance(token, str):
        raise ConfigError(f"{o.at('admin_token')}: expected a string")
    token = (token or "").strip()
    if token and len(token) < MIN_ADMIN_TOKEN:
        raise ConfigError(f"{o.at('admin_token')}: must be at least {MIN_ADMIN_TOKEN} characters after "
                          f"trimming spaces (got {len(token)}); a short token can be guessed")
    return token or None


def _fernet_key(value: Any, at: str) -> str:
    """A Fernet key: 32 bytes in url-safe base64 (44 characters); the value itself is never quoted."""
    if not isinstance(value, str):
        raise ConfigError(f"{at}: expected a string (a Fernet key)")
    value = value.strip()
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii")) if len(value) == 44 else b""
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{at}: not a Fernet key (32 bytes in url-safe base64, 44 characters); "
                          "generate one with `keyrelay keys generate-secret`")
    return value


def _secret_keys(o: _Obj) -> tuple[str | None, tuple[str, ...]]:
    raw = o.get("secret_key")
    current = None if raw in (None, "") else _fernet_key(raw, o.at("secret_key"))
    prev = o.get("secret_keys_previous", [])
    if isinstance(prev, str):
        prev = [p for p in prev.split(",") if p.strip()]
    if not isinstance(prev, list):
        raise ConfigError(f"{o.at('secret_keys_previous')}: expected a list of Fernet keys "
                          "(or a comma-separated string)")
    previous = tuple(_fernet_key(p, f"{o.at('secret_keys_previous')}[{i}]") for i, p in enumerate(prev))
    if previous and current is None:
        raise ConfigError(f"{o.at('secret_keys_previous')}: needs server.secret_key (the current key) too")
    return current, previous


def _allowed_hosts(o: _Obj) -> tuple[str, ...]:
    hosts = o.get("allowed_hosts", [])
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError(f"{o.at('allowed_hosts')}: expected a list of host names (or \"*\")")
    return tuple(h.strip().lower() for h in hosts)


def _database(o: _Obj, default: str) -> str:
    """A SQLite path (``sqlite:///path`` too) or a PostgreSQL URL, checked here (never echoing a password)."""
    from proxy.store.pg_conn import is_postgres_url, parse_url

    value = o.str("database", default)
    if not value.strip():
        raise ConfigError(f"{o.at('database')}: expected a file path or a postgresql:// URL")
    if is_postgres_url(value):
        try:
            parse_url(value)
        except ValueError as exc:
            raise ConfigError(f"{o.at('database')}: {exc}") from None
    elif "://" in value and not value.startswith("sqlite://"):
        raise ConfigError(f"{o.at('database')}: unsupported database URL scheme (use a SQLite path, "
                          "sqlite:///path or postgresql://user:password@host:port/db)")
    elif value.startswith("sqlite:"):
        from proxy.store.backend import sqlite_path

        return sqlite_path(value)
    return value


def _server(o: _Obj) -> ServerConfig:
    d = ServerConfig()
    token = _admin_token(o)
    secret_key, previous_keys = _secret_keys(o)
    cfg = ServerConfig(
        host=o.str("host", d.host),
        port=o.num("port", d.port, minimum=0, maximum=65535, integer=True),
        database=_database(o, d.database),
        database_pool_size=o.num("database_pool_size", d.database_pool_size, minimum=1, maximum=64,
                                 integer=True),
        admin_token=token,
        workers=o.num("workers", d.workers, minimum=1, maximum=64, integer=True),
        max_body_bytes=o.num("max_body_bytes", d.max_body_bytes, minimum=1024, integer=True),
        graceful_timeout=o.num("graceful_timeout", d.graceful_timeout),
        log_level=o.str("log_level", d.log_level, choices=LOG_LEVELS),
        access_log=o.bool("access_log", d.access_log),
        trusted_proxies=o.num("trusted_proxies", d.trusted_proxies, integer=True, maximum=10),
        allowed_hosts=_allowed_hosts(o),
        pidfile=o.str("pidfile", None),
        secret_key=secret_key,
        secret_keys_previous=previous_keys,
    )
    o.done()
    return cfg


def _key_manager(o: _Obj) -> KeyManagerConfig:
    d = KeyManagerConfig()
    tz = o.str("daily_reset_tz", d.daily_reset_tz)
    _check_tz(tz, o.at("daily_reset_tz"))
    cfg = KeyManagerConfig(
        default_cooldown_s=o.num("default_cooldown_s", d.default_cooldown_s),
        daily_reset_tz=tz,
        breaker_failures=o.num("breaker_failures", d.breaker_failures, minimum=1, integer=True),
        breaker_open_s=o.num("breaker_open_s", d.breaker_open_s),
        revalidate_interval_s=o.num("revalidate_interval_s", d.revalidate_interval_s, minimum=1),
        max_cooldown_s=o.num("max_cooldown_s", d.max_cooldown_s, minimum=60, maximum=30 * 86400),
        pacing=o.bool("pacing", d.pacing),
    )
    if cfg.default_cooldown_s > cfg.max_cooldown_s:
        raise ConfigError(f"{o.at('default_cooldown_s')}: must not exceed max_cooldown_s "
                          f"({cfg.max_cooldown_s:g}), got {cfg.default_cooldown_s:g}")
    o.done()
    return cfg


def _check_tz(tz: str, path: str) -> None:
    try:
        ZoneInfo(tz)
    except Exception:
        raise ConfigError(f"{path}: unknown time zone {_quote(tz)}") from None


def _retry(o: _Obj) -> RetryConfig:
    d = RetryConfig()
    retry_on = o.get("retry_on", list(d.retry_on))
    if not isinstance(retry_on, list) or any(v not in ("quota", "transient", "auth") for v in retry_on):
        raise ConfigError(f"{o.at('retry_on')}: expected a list of quota, transient, auth")
    cfg = RetryConfig(
        attempts=o.num("attempts", d.attempts, minimum=1, maximum=50, integer=True),
        backoff_base_s=o.num("backoff_base_s", d.backoff_base_s),
        backoff_cap_s=o.num("backoff_cap_s", d.backoff_cap_s),
        retry_after_cap_s=o.num("retry_after_cap_s", d.retry_after_cap_s),
        deadline_s=o.num("deadline_s", d.deadline_s, minimum=0.1),
        retry_on=tuple(retry_on),
    )
    o.done()
    return cfg


def _timeouts(o: _Obj) -> TimeoutConfig:
    d = TimeoutConfig()
    cfg = TimeoutConfig(
        connect=o.num("connect", d.connect, minimum=0.01),
        first_byte=o.num("first_byte", d.first_byte, minimum=0.01),
        idle=o.num("idle", d.idle, minimum=0.01),
        keepalive_expiry=o.num("keepalive_expiry", d.keepalive_expiry),
    )
    o.done()
    return cfg


def _tls(o: _Obj) -> TlsConfig:
    ca_file = o.str("ca_file", None)
    if ca_file is not None:
        try:
            with open(ca_file, "rb") as f:
                pem = f.read()
        except OSError as exc:
            raise ConfigError(f"{o.at('ca_file')}: cannot read {ca_file}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"{o.at('ca_file')}: {ca_file} holds no PEM certificate")
    cfg = TlsConfig(verify=o.bool("verify", True), ca_file=ca_file)
    o.done()
    return cfg


def _proxy(o: _Obj) -> str | None:
    """``proxy``: absent = from the environment, "" or none = no proxy, else an http:// proxy URL."""
    value = o.get("proxy")
    if value is None or value == "" or (isinstance(value, str) and value.strip().lower() == "none"):
        return None if value is None else ""
    if not isinstance(value, str):
        raise ConfigError(f"{o.at('proxy')}: expected a proxy URL, \"\" or none, got {_kind(value)}")
    try:
        u = urlsplit(value.strip())
        u.port  # noqa: B018 - validates the port
    except ValueError:
        u = None
    if u is None or u.scheme.lower() != "http" or not u.hostname or u.path not in ("", "/"):
        raise ConfigError(f"{o.at('proxy')}: expected http://[user:password@]host[:port]")  # no secret echoed
    return value.strip()


def _quota_limits(o: _Obj) -> dict[str, dict[str, int]]:
    """``limits: {"<model or glob>": {rpm, tpm, rpd, tpd}}``: the upstream's quota per key (or project)."""
    out = {}
    for model in list(o.data):
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{o.at(str(model))}: expected a model name, a glob or \"*\"")
        w = o.sub(model, {})
        out[model] = {kind: w.num(kind, 0, minimum=1, integer=True) for kind in ("rpm", "tpm", "rpd", "tpd")
                      if w.get(kind) is not None}
        w.done()
    o.done()
    return out


def _keys(raw: Any, path: str) -> list[KeyConfig]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):  # "${GEMINI_API_KEYS}" → comma-separated keys
        return [KeyConfig(k.strip()) for k in raw.split(",") if k.strip()]
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected a list of keys or a comma-separated string")
    keys = []
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        if isinstance(item, str):
            if not item.strip():
                raise ConfigError(f"{at}: empty key")
            keys.append(KeyConfig(item.strip()))
            continue
        o = _Obj(item, at)
        secret = o.str("key")
        keys.append(KeyConfig(secret.strip(), o.num("weight", 1.0, minimum=0.0), o.str("label", None),
                              o.str("project", None)))
        o.done()
    return keys


def _providers(items: list[tuple[Any, str]]) -> tuple[list[ProviderConfig], set[str], list[str]]:
    """Providers in config order. ``optional: true`` skips a provider with no key; ``standby: true``
    (the built-in mock in the default config) is used only when no other provider is active."""
    providers: list[ProviderConfig] = []
    standby: list[ProviderConfig] = []
    notices: list[str] = []
    names: set[str] = set()
    skipped: set[str] = set()
    for raw, path in items:
        o = _Obj(raw, path)
        name = o.str("name")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
            raise ConfigError(f"{o.at('name')}: use letters, digits, '.', '_' or '-' (got {_quote(name)})")
        if name in names:
            raise ConfigError(f"{o.at('name')}: duplicate provider name {name!r}")
        names.add(name)
        ptype = o.str("type", choices=PROVIDER_TYPES)
        base_url = (o.str("base_url", None) or DEFAULT_BASE_URLS[ptype]).rstrip("/")
        if not re.match(r"^(https?|mock)://", base_url):
            raise ConfigError(f"{o.at('base_url')}: expected an http(s) URL, got {_safe_url(base_url)!r}")
        keys = _keys(o.get("keys"), o.at("keys"))
        seen: dict[str | None, int] = {}
        for i, k in enumerate(keys):
            if k.key in seen:  # name the positions, never the secret
                raise ConfigError(f"{o.at('keys')}[{i}]: the same key as {o.at('keys')}[{seen[k.key]}]")
            seen[k.key] = i
        models = o.get("models", [])
        if not isinstance(models, list):
            raise ConfigError(f"{o.at('models')}: expected a list of model names")
        for i, m in enumerate(models):
            _model_name(m, f"{o.at('models')}[{i}]")
        headers = o.get("headers", {}) or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError(f"{o.at('headers')}: expected a mapping of header name to string")
        optional = o.bool("optional", False)
        is_standby = o.bool("standby", False)
        provider = ProviderConfig(
            name=name,
            type=ptype,
            base_url=base_url,
            keys=tuple(keys) if ptype not in KEYLESS_TYPES else (),
            timeouts=_timeouts(o.sub("timeouts", {})),
            headers={str(k): v for k, v in headers.items()},
            models=tuple(models),
            passthrough=_passthrough(o),
            latency_ms=o.num("latency_ms", 0.0),
            chunk_delay_ms=o.num("chunk_delay_ms", 0.0),
            proxy=_proxy(o),
            tls=_tls(o.sub("tls", {})),
            catalog=_catalog_ref(o),
            limits=_quota_limits(o.sub("limits", {})),
            transforms=_transforms(o),
        )
        o.done()
        if ptype not in KEYLESS_TYPES and not keys:
            if optional:
                notices.append(f"provider {name}: skipped, no key configured")
                skipped.add(name)
                continue
            raise ConfigError(f"{o.at('keys')}: provider type {ptype} needs at least one key")
        if not provider.tls.verify and ptype != "mock":
            notices.append(f"provider {name}: TLS certificate verification is disabled (tls.verify: false)")
        (standby if is_standby else providers).append(provider)
    if standby and not providers:
        notices.append("no upstream key configured: serving the built-in mock provider")
        providers = standby
    elif providers:
        skipped.update(p.name for p in standby)
        active = ", ".join(f"{p.name} ({p.type}, {len(p.keys) or 'no'} key{'s' * (len(p.keys) != 1)})"
                           for p in providers)
        notices.append(f"upstream providers: {active}")
    return providers, skipped, notices


def _models(
    items: list[tuple[Any, str]], providers: list[ProviderConfig], skipped: set[str],
    cache: CacheConfig | None = None,
) -> list[ModelConfig]:
    """Models; targets naming a provider that was skipped (optional/standby) are dropped."""
    active = {p.name for p in providers}
    models, names = [], set()
    for raw, path in items:
        o = _Obj(raw, path)
        name = _model_name(o.str("name"), o.at("name"))
        if name in names:
            raise ConfigError(f"{o.at('name')}: duplicate model name {name!r}")
        names.add(name)
        strategy = o.str("strategy", "fallback", choices=("fallback", "weighted"))
        targets = []
        pool = None if o.get("free_pool") is None else _free_pool(o.sub("free_pool", {}), active, skipped)
        raw_targets = o.list("targets", [])
        if o.get("free_pool") is not None:
            if raw_targets:
                raise ConfigError(f"{o.at('targets')}: a free_pool model takes its targets from the catalog")
            o.done()
            if pool is not None:
                models.append(ModelConfig(name, (), strategy, pool))
            continue
        if not raw_targets:
            raise ConfigError(f"{o.at('targets')}: at least one target is required")
        for traw, tpath in raw_targets:
            t = _Obj(traw, tpath)
            target = TargetConfig(t.str("provider"), _model_name(t.str("model"), t.at("model")),
                                  t.num("weight", 1.0))
            t.done()
            if target.provider in active:
                targets.append(target)
            elif target.provider not in skipped:
                raise ConfigError(f"{t.at('provider')}: unknown provider {_quote(target.provider)}")
        model_cache = None if o.get("cache") is None else _cache(o.sub("cache", {}), cache, name)
        transforms = _transforms(o)
        o.done()
        if targets:
            models.append(ModelConfig(name, tuple(targets), strategy, cache=model_cache,
                                      transforms=transforms))
    return models


def _free_pool(o: _Obj, active: set[str], skipped: set[str]) -> FreePoolConfig | None:
    """``free_pool: {provider, min_context, input, max_models}``; None when its provider was skipped."""
    provider = o.str("provider")
    inputs = o.get("input", ["text"])
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) and i for i in inputs):
        raise ConfigError(f"{o.at('input')}: expected a list of input modalities (text, image, audio, ...)")
    pool = FreePoolConfig(provider, o.num("min_context", 0, integer=True),
                          tuple(inputs), o.num("max_models", 10, minimum=1, maximum=100, integer=True))
    o.done()
    if provider in active:
        return pool
    if provider in skipped:
        return None
    raise ConfigError(f"{o.at('provider')}: unknown provider {_quote(provider)}")


def _catalog_ref(o: _Obj) -> str | None:
    """``providers[].catalog``: ``openrouter`` or ``models.dev:<provider id>``."""
    value = o.str("catalog", None)
    if value is None or value == "openrouter" or re.fullmatch(r"models\.dev:[\w.-]+", value):
        return value
    raise ConfigError(f"{o.at('catalog')}: expected openrouter or models.dev:<provider id>")


def _catalog(o: _Obj) -> CatalogConfig:
    d = CatalogConfig()
    sources = o.get("sources", list(d.sources))
    if not isinstance(sources, list) or any(s not in CATALOG_SOURCES for s in sources):
        raise ConfigError(f"{o.at('sources')}: expected a list of {', '.join(CATALOG_SOURCES)}")
    urls = dict(CATALOG_URLS)
    u = o.sub("urls", {})
    for source in list(u.data):
        if source not in CATALOG_SOURCES:
            raise ConfigError(f"{u.at(str(source))}: unknown catalog source "
                              f"(use {', '.join(CATALOG_SOURCES)})")
        url = u.str(source, None)
        if not url or not re.match(r"^https?://", url):
            raise ConfigError(f"{u.at(source)}: expected an http(s) URL")
        urls[source] = url
    u.done()
    cfg = CatalogConfig(tuple(dict.fromkeys(sources)), o.num("refresh_s", d.refresh_s, minimum=1),
                        o.str("file", None), urls)
    o.done()
    return cfg


def _tracing(o: _Obj) -> TracingConfig:
    d = TracingConfig()
    endpoint = o.str("endpoint", None)
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        raise ConfigError(f"{o.at('endpoint')}: expected an http(s) URL")
    cfg = TracingConfig(o.bool("enabled", d.enabled),
                        o.str("exporter", d.exporter, choices=TRACING_EXPORTERS), endpoint,
                        o.num("sample", d.sample, maximum=1.0))
    o.done()
    return cfg


def _cache(o: _Obj, base: CacheConfig | None = None, model: str | None = None) -> CacheConfig:
    """The global ``cache`` (``base`` None), or a model's ``models[].cache`` merged over ``base``: a model
    that does not set ``enabled`` is cached when the global cache is enabled and its globs match it."""
    d = base or CacheConfig()
    if base is not None:
        for key in ("max_entries", "max_bytes", "models"):
            if o.get(key) is not None:
                raise ConfigError(f"{o.at(key)}: set in the global cache only")
    models = o.get("models", list(d.models)) if base is None else []
    if not isinstance(models, list) or not all(isinstance(m, str) and m.strip() for m in models):
        raise ConfigError(f"{o.at('models')}: expected a list of model names or globs")
    default_enabled = d.enabled if base is None else (
        d.enabled and (not d.models or model_names.matches(model or "", d.models)))
    cfg = CacheConfig(
        enabled=o.bool("enabled", default_enabled),
        ttl_s=o.num("ttl_s", d.ttl_s, minimum=0.001),
        max_entries=o.num("max_entries", d.max_entries, minimum=1, integer=True),
        max_bytes=o.num("max_bytes", d.max_bytes, minimum=1, integer=True),
        scope=o.str("scope", d.scope, choices=("client", "shared")),
        models=tuple(m.strip() for m in models),
        deterministic_only=o.bool("deterministic_only", d.deterministic_only),
    )
    o.done()
    return cfg


def _model_name(name: Any, path: str) -> str:
    why = model_names.problem(name)
    if why:
        raise ConfigError(f"{path}: {why}")
    return name


def _passthrough(o: _Obj) -> str | tuple[str, ...]:
    """``listed`` (default: the provider's models and the models targets name for it), ``any``, or a
    list of globs."""
    value = o.get("passthrough", "listed")
    if value in ("listed", "any"):
        return value
    if isinstance(value, list) and all(isinstance(g, str) and g.strip() for g in value):
        return tuple(g.strip() for g in value)
    raise ConfigError(f"{o.at('passthrough')}: expected listed, any, or a list of model globs")


def _quote(value: str) -> str:
    """A config value for an error message, quoted only when it cannot be a secret (a word, a time zone:
    letters and ``_ . / -``, no digits); anything else is not shown, whatever field it sits in."""
    if re.fullmatch(r"[A-Za-z][A-Za-z_./-]{0,39}", value):
        return repr(value)
    return "a value not shown here (it may be a secret)"


def _safe_url(url: str) -> str:
    """A URL fit for an error message: credentials (``user:secret@``) replaced by ``***@``, no query."""
    return re.sub(r"^([A-Za-z][\w+.-]*://)[^/@]*@", r"\1***@", url.split("?", 1)[0].split("#", 1)[0])


# ---------------------------------------------------------------------------------------------- clients


def _auth_notices(auth: AuthConfig, clients: tuple[ClientConfig, ...],
                  providers: list[ProviderConfig]) -> list[str]:
    """What the startup log says about who may call."""
    if auth.mode == "open":  # proxy.clients.auth.startup_notice warns about it (gunicorn on_starting)
        return []
    if auth.mode is None and all(p.type == "mock" for p in providers):
        return ["only the built-in mock serves: no client key is needed until a real upstream is configured"]
    return []  # keys: whether any client exists (config or runtime) is said at start-up from the database


def _auth(o: _Obj) -> AuthConfig:
    mode = o.str("mode", None, choices=AUTH_MODES)
    o.done()
    return AuthConfig(mode)


def _accounting(o: _Obj) -> AccountingConfig:
    d = AccountingConfig()
    tz = o.str("timezone", d.timezone)
    _check_tz(tz, o.at("timezone"))
    days = o.num("retention_days", d.retention_days, minimum=1, maximum=3650, integer=True)
    cfg = AccountingConfig(tz, days)
    o.done()
    return cfg


def _optional_int(o: _Obj, key: str, minimum: int = 1) -> int | None:
    return None if o.get(key) is None else o.num(key, 0, minimum=minimum, integer=True)


def _model_limits(o: _Obj) -> tuple[ModelLimit, ...]:
    out = []
    for pattern in list(o.data):
        sub = o.sub(pattern, {})
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"{o.at(str(pattern))}: expected a model glob")
        out.append(ModelLimit(pattern, _optional_int(sub, "rpm"), _optional_int(sub, "tpm")))
        sub.done()
    o.done()
    return tuple(out)


def _expires(o: _Obj) -> float | None:
    value = o.get("expires_at")
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:  # YAML gives dates and datetimes as such; strings as ISO-8601
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        pass
    raise ConfigError(f"{o.at('expires_at')}: expected an ISO-8601 date or time (e.g. 2027-01-31)")


def _client(o: _Obj) -> ClientConfig:
    name = o.str("name")
    if not re.fullmatch(r"[A-Za-z0-9][\w.@-]{0,63}", name):
        raise ConfigError(f"{o.at('name')}: use letters, digits, '.', '_', '@' or '-' (at most 64)")
    key = o.str("key")
    if not CLIENT_KEY.fullmatch(key):
        raise ConfigError(f"{o.at('key')}: a client key is 'kr-' and 43 url-safe characters "
                          "(`keyrelay clients create` makes one)")
    models = o.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{o.at('models')}: expected a list of model names or globs")
    metadata = o.get("metadata", {}) or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{o.at('metadata')}: expected a mapping")
    budget = o.get("budget_usd")
    client = Client(
        id=config_client_id(name), name=name, team=o.str("team", None), models=tuple(models),
        rpm=_optional_int(o, "rpm"), tpm=_optional_int(o, "tpm"),
        max_concurrent=_optional_int(o, "max_concurrent"),
        model_limits=_model_limits(o.sub("model_limits", {})),
        budget_usd=None if budget is None else float(o.num("budget_usd", 0.0)),
        budget_period=o.str("budget_period", "month", choices=PERIODS),
        token_quota=_optional_int(o, "token_quota"),
        quota_period=o.str("quota_period", "month", choices=PERIODS),
        expires_at=_expires(o), enabled=o.bool("enabled", True), metadata=dict(metadata),
        source="config", key_hint=key_hint(key),
    )
    o.done()
    return ClientConfig(client, key)


def _clients(items: list[tuple[Any, str]]) -> tuple[ClientConfig, ...]:
    out: list[ClientConfig] = []
    names: dict[str, str] = {}
    keys: dict[str, str] = {}
    for raw, path in items:
        c = _client(_Obj(raw, path))
        if c.name in names:
            raise ConfigError(f"{path}.name: the same name as {names[c.name]}")
        if c.key in keys:  # name the position, never the secret
            raise ConfigError(f"{path}.key: the same key as {keys[c.key]}")
        names[c.name], keys[c.key] = path, path
        out.append(c)
    return tuple(out)


def _prices(o: _Obj) -> dict[str, PriceConfig]:
    out = {}
    for model in list(o.data):
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{o.at(str(model))}: expected a model name or glob")
        p = o.sub(model, {})
        cached = p.get("cached_input")
        out[model] = PriceConfig(float(p.num("input", 0.0)), float(p.num("output", 0.0)),
                                 None if cached is None else float(p.num("cached_input", 0.0)))
        p.done()
    o.done()
    return out
