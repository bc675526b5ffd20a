"""``Periodic``: one function run every few seconds in a daemon thread (a greenlet under gevent's monkey
patching) until stopped; a round that raises is logged and the next one retries. The batched writers
(usage records, inspector captures, cache uses) flush with it."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.store.base import KeyStore

log = logging.getLogger("keyrelay")


class Periodic:
    def __init__(self, name: str, interval_s: float, fn: Callable[[], object], what: str) -> None:
        self.name, self.interval_s, self.fn, self.what = name, interval_s, fn, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, join_s: float = 5.0) -> None:
        """No more rounds; waits for the one in progress (unless called from it)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=join_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.fn()
            except Exception:  # keep going; the next round retries
                log.exception(f"{self.what} failed")


OWNER = f"{socket.gethostname()}:{os.getpid()}"


def claim(store: KeyStore, job: str, lease_s: float) -> bool:
    """True when this process may run ``job`` now: one worker of one instance at a time holds it for
    ``lease_s`` (a dead holder's claim lapses). Raises StoreUnavailable like any write."""
    with store.transaction() as tx:
        return tx.claim_job(job, OWNER, time.time(), lease_s)
