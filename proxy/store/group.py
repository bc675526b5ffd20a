"""Group commit: the write transactions of callers that arrive together become one.

A limit admission or settlement is a few short statements; the transaction around them (taking the
write lock, committing) costs as much again. Under load several requests of a worker reach admission
in the same turn of the event loop, so the first caller (the leader) yields once (under gevent), takes
every operation queued meanwhile and runs them, in arrival order, in ONE transaction. Each operation sees
the effects of those before it, so limits stay exact; a refused admission is a return value, not an
exception, and charges nothing.

If an operation raises, the whole batch is rolled back and each operation is run again in a
transaction of its own, so one failure is only its own caller's. A store failure (lock wait past the
timeout) is every caller's of that batch. No SQL here: any ``KeyStore`` works.

``run_detached`` is for work nobody waits for (a settlement): queued behind a leader at work, it
returns at once; ``batch`` gives the operations of one transaction a shared view (``LimitBatch``:
each row read and written once).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from .base import KeyStore, KeyTx, StoreUnavailable

T = TypeVar("T")
_UNSET: Any = object()


class _Op(Generic[T]):
    __slots__ = ("fn", "timeout", "done", "value", "error", "failed")

    def __init__(self, fn: Callable[[KeyTx], T], timeout: float,
                 failed: Callable[[BaseException], None] | None) -> None:
        self.fn, self.timeout, self.failed = fn, timeout, failed
        self.done = threading.Event()
        self.value: Any = _UNSET
        self.error: BaseException | None = None

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        if self.value is _UNSET:  # the leader was interrupted before this ran
            raise StoreUnavailable("the transaction was interrupted")
        return self.value


class Batch(Protocol):
    """What the operations of one transaction see instead of the bare transaction (``GroupCommit``'s
    ``batch``): e.g. rows read once and written once at the end (``flush``) for the whole batch."""

    def flush(self) -> None: ...


class GroupCommit:
    def __init__(self, store: KeyStore, batch: Callable[[KeyTx], Batch] | None = None) -> None:
        self.store = store
        self.batch = batch
        self._lock = threading.Lock()
        self._pending: list[_Op] = []
        self._leading = False
        self._yield = _cooperative_yield()
        self.batches = 0  # transactions run, and operations in them (bench/RESULTS.md reports the ratio)
        self.ops = 0

    def run(self, fn: Callable[[KeyTx], T], timeout: float) -> T:
        """``fn(tx)`` inside a write transaction shared with the callers queued at the same moment;
        StoreUnavailable when the store's write lock cannot be had within ``timeout``."""
        return cast(T, self._run(_Op(fn, timeout, None)))

    def run_detached(self, fn: Callable[[KeyTx], Any], timeout: float,
                     failed: Callable[[BaseException], None]) -> None:
        """``run`` for work whose result nobody waits for (a settlement): a caller that finds a leader
        at work queues ``fn`` behind it and returns at once, saving the wait and the wake-up. The leader
        runs it before it stops leading, so it still comes before every operation queued later, and
        hands its exception, if any, to ``failed`` (which must not raise). A caller that leads runs
        and raises as ``run`` does."""
        self._run(_Op(fn, timeout, failed))

    def _run(self, op: _Op) -> Any:
        with self._lock:
            self._pending.append(op)
            lead = not self._leading
            self._leading = True
            if lead:
                op.failed = None
        if not lead:
            if op.failed is not None:
                return None
            op.done.wait()
            return op.result()
        try:
            if self._yield is not None:  # the requests ready to run now queue behind us
                self._yield()
            while True:
                with self._lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        self._leading = False
                        break
                self._commit(batch)
        except BaseException:  # killed while leading: hand the queue back, never leave it stuck
            with self._lock:
                batch, self._pending, self._leading = self._pending, [], False
            for o in batch:
                o.done.set()
                if o.failed is not None:
                    o.failed(StoreUnavailable("the transaction was interrupted"))
            raise
        return op.result()

    def _commit(self, batch: list[_Op]) -> None:
        self.batches += 1
        self.ops += len(batch)
        try:
            try:
                with self.store.transaction(timeout=min(op.timeout for op in batch)) as tx:
                    values = self._apply(tx, batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:  # whoever failed, fail alone
                    for op in batch:
                        self._alone(op)
                return
            for op, value in zip(batch, values, strict=True):
                op.value = value
        finally:
            for op in batch:
                op.done.set()
                if op.failed is not None and op.error is not None:
                    op.failed(op.error)

    def _alone(self, op: _Op) -> None:
        try:
            with self.store.transaction(timeout=op.timeout) as tx:
                op.value = self._apply(tx, [op])[0]
        except Exception as exc:
            op.error = exc

    def _apply(self, tx: KeyTx, ops: list[_Op]) -> list:
        if self.batch is None:
            return [op.fn(tx) for op in ops]
        view = self.batch(tx)
        values = [op.fn(view) for op in ops]  # type: ignore[arg-type]
        view.flush()
        return values


def _cooperative_yield() -> Callable[[], None] | None:
    """Under gevent's monkey patching (a gunicorn gevent worker), a switch to the other ready greenlets;
    else None: with OS threads the callers that arrive while a batch commits form the next one, and a
    ``sleep(0)`` would only hand the CPU to another process."""
    try:
        from gevent import monkey, sleep
    except ImportError:
        return None
    return (lambda: sleep(0)) if monkey.is_module_patched("time") else None
