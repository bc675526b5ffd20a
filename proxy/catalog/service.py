"""``Catalog``: one per worker (``Gateway.catalog``). It keeps the merged view of the stored catalog
(reloaded when another worker's refresh bumped the version, checked at most every ``RELOAD_CHECK_S``),
answers the relay (free pools, pre-checks), usage (prices) and ``/v1/models``, and runs the background
refresh that ``Gateway.start_background`` starts (never ``create_app``; never needed to serve)."""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import orjson

from proxy.catalog import capabilities, refresh
from proxy.catalog import view as cview
from proxy.catalog.parse import Entry
from proxy.config import Config, FreePoolConfig, PriceConfig, TargetConfig
from proxy.errors import BadRequest, GatewayError
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.catalog import CatalogTx

if TYPE_CHECKING:
    from proxy.relay import Trace

log = logging.getLogger("keyrelay")

RELOAD_CHECK_S = 1.0  # how stale a worker's view may be after another worker's refresh
RETRY_FAILED_S = 300.0  # after a failed refresh, the next attempt comes this soon (or at refresh_s)


class NoFreeModel(GatewayError):
    status = 503
    code = "no_free_model"


def catalog_detail(gw: Any) -> dict:
    """``/readyz``'s catalog details: per source, the last success and the last error (never unready)."""
    try:
        return {"sources": {name: {k: s[k] for k in ("entries", "ok_at", "error")}
                            for name, s in gw.catalog.status().items()}}
    except Exception as exc:
        return {"error": type(exc).__name__}


def free_pool_targets(catalog: Catalog | None, name: str, pool: FreePoolConfig) -> list[TargetConfig]:
    if catalog is None:
        raise NoFreeModel(f"The model '{name}' is a pool of free models and this gateway has no catalog.")
    return catalog.free_targets(name, pool)


class Catalog:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float] = time.time) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._view = cview.View()
        self._pools: dict[FreePoolConfig, list[TargetConfig]] = {}  # per view: free pool -> its targets
        self._checked = -math.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the view -------------------------------------------------------------------------------

    def view(self) -> cview.View:
        """The current view; at most every RELOAD_CHECK_S one caller looks at the stored version (and
        reloads when it moved) while the others go on with the view they have."""
        if time.monotonic() - self._checked < RELOAD_CHECK_S or not self._lock.acquire(blocking=False):
            return self._view
        try:
            self._checked = time.monotonic()
            self._reload()
        except StoreUnavailable as exc:  # never fail a request for the catalog: keep the old view
            log.warning("catalog view not reloaded: %s", exc, extra={"event": "catalog_error"})
        except Exception:
            log.exception("catalog view not reloaded", extra={"event": "catalog_error"})
        finally:
            self._lock.release()
        return self._view

    def reload(self) -> cview.View:
        with self._lock:
            self._checked = time.monotonic()
            self._reload()
        return self._view

    def _reload(self) -> None:
        with self.store.snapshot() as raw:
            tx = cast(CatalogTx, raw)
            version = tx.catalog_version()
            if version == self._view.version:
                return
            stored = tx.catalog_rows()
        self._view = cview.View.of((Entry.from_json(orjson.loads(data)) for _, data in stored), version)
        self._pools = {}

    def entry(self, target: TargetConfig) -> Entry | None:
        return self.view().entry(self.config.provider(target.provider), target.model)

    # --- the relay's hooks ----------------------------------------------------------------------

    def free_targets(self, name: str, pool: FreePoolConfig) -> list[TargetConfig]:
        """The free pool's targets now (503 ``no_free_model`` when none is left)."""
        targets = self._pool(pool)
        if not targets:
            raise NoFreeModel(f"The model '{name}' is a pool of free models and the catalog has no free "
                              f"model of provider '{pool.provider}' that fits it right now.")
        return targets

    def _pool(self, pool: FreePoolConfig) -> list[TargetConfig]:
        view = self.view()  # a reload empties the cache
        targets = self._pools.get(pool)
        if targets is None:
            targets = self._pools[pool] = cview.free_models(view, self.config.provider(pool.provider), pool)
        return list(targets)

    def precheck(self, req: dict, targets: list[TargetConfig], trace: Trace) -> list[TargetConfig]:
        """The targets whose catalog entry can take ``req``; the skipped ones go to the trace and the log.
        When none is left: 400 ``context_length_exceeded`` or ``unsupported_modality``."""
        if not self.view().entries:
            return targets
        need = capabilities.needs(req)
        keep: list[TargetConfig] = []
        skipped: list[capabilities.Skip] = []
        for t in targets:
            skip = capabilities.problem(self.entry(t), need, f"{t.provider}/{t.model}")
            if skip:
                skipped.append(skip)
            else:
                keep.append(t)
        if not skipped:
            return targets
        trace.skipped = [s.__dict__ for s in skipped]
        log.info("targets skipped by the catalog pre-check", extra={
            "event": "targets_skipped", "model": req.get("model"), "skipped": trace.skipped})
        if keep:
            return keep
        why = "; ".join(f"{s.target}: {s.detail}" for s in skipped)
        context = any(s.reason == "context" for s in skipped)
        raise BadRequest(
            f"No target of '{req.get('model')}' can take this request ({why}).",
            code="context_length_exceeded" if context else "unsupported_modality",
            param="messages", details={"skipped": [s.__dict__ for s in skipped]})

    def price(self, provider: str | None, model: str | None) -> PriceConfig | None:
        """The catalog's price for the upstream model a configured provider served (usage cost)."""
        if not provider or not model:
            return None
        return cview.price(self.view().entry(self.config.provider(provider), model))

    def model_fields(self, model_id: str) -> dict:
        """What ``/v1/models`` adds to a model when the catalog knows it (``context_length``, ``pricing``,
        ``architecture.input_modalities``): an alias is described by its first target (a free pool by
        its first free model), ``provider/model`` by itself."""
        model = self.config.model(model_id)
        if model and model.free_pool:
            pool = self._pool(model.free_pool)
            target = pool[0] if pool else None
        elif model:
            target = model.targets[0] if model.targets else None
        else:
            provider, _, upstream = model_id.partition("/")
            target = TargetConfig(provider, upstream) if upstream else None
        e = self.entry(target) if target else None
        return cview.model_fields(e) if e else {}

    # --- refresh --------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> dict[str, str] | None:
        """Refresh every configured source if this worker gets the claim (and the refresh is due, or
        ``force``): ``{source: ok | not_modified | error}``, or None when another refresher holds it."""
        cfg = self.config.catalog
        if not cfg.sources or not refresh.claim(self.store, self.owner, self.clock(), force):
            return None
        from proxy.observability import metrics

        results: dict[str, str] = {}
        try:
            for source in cfg.sources:
                results[source] = refresh.refresh_source(self.store, source, cfg.urls[source], self.clock)
                metrics.CATALOG_REFRESH.labels(source, results[source]).inc()
        finally:  # a failed source is tried again sooner than the next regular refresh
            wait = cfg.refresh_s if "error" not in results.values() else min(cfg.refresh_s, RETRY_FAILED_S)
            refresh.release(self.store, self.owner, self.clock() + wait)
        self._checked = -math.inf
        return results

    def import_configured_file(self) -> None:
        path = self.config.catalog.file
        if not path or not refresh.claim(self.store, self.owner, self.clock(), True):
            return
        try:
            done = refresh.import_file_if_newer(self.store, path, self.clock())
            if done:
                log.info("catalog.file %s imported: %d %s entries", path, done[1], done[0],
                         extra={"event": "catalog_imported", "source": done[0], "entries": done[1]})
        finally:
            refresh.release(self.store, self.owner, None)

    def status(self) -> dict[str, Any]:
        """Per source: where the copy came from, how many entries, the last success and the last error."""
        return {s.pop("source"): s for s in refresh.sources(self.store).values()}

    def start(self) -> None:
        if self._thread is None and (self.config.catalog.sources or self.config.catalog.file):
            self._thread = threading.Thread(target=self._run, name="keyrelay-catalog", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        tick = max(0.5, min(30.0, self.config.catalog.refresh_s / 2))
        try:
            self.import_configured_file()
        except StoreUnavailable as exc:
            log.warning("catalog.file not imported: %s", exc, extra={"event": "catalog_error"})
        except Exception:
            log.exception("catalog.file import failed", extra={"event": "catalog_error"})
        while not self._stop.is_set():
            try:
                self.refresh()
            except StoreUnavailable as exc:  # the database is locked: the next tick tries again
                log.warning("catalog refresh skipped: %s", exc, extra={"event": "catalog_error"})
            except Exception:  # a bug: logged, and serving goes on
                log.exception("catalog refresh failed", extra={"event": "catalog_error"})
            self._stop.wait(tick)
