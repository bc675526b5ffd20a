"""Per-client limits that hold across every worker: rpm, tpm, max_concurrent, budgets and token quotas.

All state is in the store, never in a process, so every worker and every process sharing the database
sees the same counts. Each admission checks every applicable limit and charges them only if all pass (a
refused request charges nothing), inside one write transaction; each settlement is one more. The
transactions go through ``proxy.store.group.GroupCommit``: the admissions and settlements a worker
reaches in the same turn of its event loop share one transaction, each seeing the ones before it, so
counts stay exact while the cost of taking the lock and committing is paid once per batch; within it
``proxy.store.limits.LimitBatch`` reads each row once and writes each changed row once, however many
of the batch's operations touch it. A settlement that finds a transaction being prepared joins it and
returns without waiting (``GroupCommit.run_detached``): it still comes before every admission
queued after it, so the next request of the worker sees it; another worker sees it once that
transaction commits (microseconds later: a request in flight at the same moment, as concurrent ones
always are for a budget).

A busy client far from all of its limits is admitted from this worker's *slice* of its capacity
(``proxy.clients.slices``): one admission's transaction also reserves up to 63 more admissions (their
rpm counts, token reservations, slots and a budget hold, charged as those admissions would be), which
are then handed out in memory, with no store operation each, for at most ``SLICE_S``; what was not
used goes back. Settlements are unchanged. No worker can use what another holds, so all of them
together never pass a limit; near a limit, and for limits under 128, there are no slices.

Scopes: the client (``c_…``) and, for every ``model_limits`` glob the requested (client-facing) model
name matches, the pair (``c_…|<glob>``). ``rpm`` / ``tpm`` apply per scope, ``max_concurrent`` per
client, budgets / quotas per client and period (``day`` / ``week`` (Monday) / ``month`` in
``accounting.timezone``). Each scope has ONE row in ``limiter_state`` (migration 0013) holding all of
its state: an admission reads its scopes' rows in one statement and writes each back once; a settlement
the same (for the client scope: refund, slot and spend in one UPDATE). Before 0013 a fully limited
request cost ~10 statements at admission and 4 at settlement, on five tables and their indexes.

Algorithms, and why:

* **rpm — a sliding window of admissions counted per whole second** (``hits``: for each second of the
  last minute with admissions, their count and the time of its LAST one; ``hits_n`` the sum: at most
  61 entries however high the rpm). A second counts while its last admission is inside the window
  (``last > now - 60``). Exact in the sense that matters: at most ``rpm`` admissions in ANY 60 s
  interval (every admission of ``(now-60, now]`` is in a second whose last admission is at least as
  late, so none is missed), with no boundary burst (a fixed window lets 2×rpm through around a
  minute's edge) and no estimate (a sliding-window counter guesses the previous window's spread; GCRA
  allows ``rpm`` at once and ``rpm`` more over the next minute: 2×rpm in 60 s). The one rounding: the
  slots of one second come back together, when the last of them is 60 s old: 60 to 61 s after an
  admission (exactly 60 s for the last one of its second, and for admissions more than a second
  apart). ``Retry-After`` / ``x-ratelimit-reset-requests`` say exactly that time (never more than
  60 s). O(1) per request: an admission parses only the expired front and the newest entry (0004's
  log cost an insert and a delete in a table and its index per request). Every admitted request
  counts, whatever its answer.
* **tpm — token bucket with reservation and settlement** (``level``, ``at``). The bucket holds up to
  ``tpm`` tokens and refills at ``tpm/60`` a second; O(1) per request whatever the rate. Admission
  needs ``level >= min(reservation, tpm)`` (so a request larger than the whole budget can still run
  when the bucket is full) and takes the whole reservation (the level may go negative: that debt
  delays the next requests). Settlement gives back ``reservation - used`` (or takes the excess when
  the request used more). Guarantee: the tokens used over any T seconds are at most ``tpm + tpm·T/60``
  (burst of one minute's worth, then the rate); the long-run rate is exactly tpm. Columns ``charged``
  (tokens settled so far) and ``reserved`` (reservations still open) make the settlement checkable.
* **max_concurrent — in-flight counts per lease generation** (``flight_at`` / ``flight``). Time is cut
  into generations of ``lease_ttl_s / FLIGHT_GENERATIONS`` (8); an admission adds one to its
  generation's count and its lease names that generation; the settlement takes it back. Only the last
  8 generations count, so the slot of a request whose worker was ``kill -9``'ed (or that was never
  settled for any reason) comes back by itself 7/8 to 8/8 of ``lease_ttl_s`` (``retry.deadline_s`` +
  120 s: 240 s by default) after its admission — no heartbeat, no per-worker row, nothing to clean
  up, and exact across workers like the rest. A request that outlives that stops holding its slot
  (a soft edge, documented; its late settlement gives nothing back).
* **budget_usd / token_quota — the spend of the current day, week and month** (``spend``, the
  client's row), added to at settlement in the same UPDATE as the bucket and the slot, so a budget is
  judged on the spend of every request that has finished, never on a stale copy. A request is
  admitted while the period's spend is below the line: the request that crosses it completes, the
  next one gets 429 ``budget_exceeded`` / ``quota_exceeded`` with ``Retry-After`` = the time until the
  period resets (a stored period whose start is not the current one's counts as nothing spent).
  (Requests admitted concurrently before the crossing one settled may complete as well: a budget is a
  spend line, not a reservation.) A client with a budget or a quota keeps spend for day, week and
  month, so a budget changed mid-period is judged on that period's real spend; a client without either
  keeps none (given its first budget mid-period, it is judged on what it spends from then on; the usage
  report has the history), and a client with only rpm limits has nothing to settle at all. The spend
  of past periods is in the usage rollups (``/admin/api/usage``); 0004's ``client_spend`` keeps the
  rows written before 0013 (whose current periods 0013 carried over) and is no longer written.
* **Unpriced requests** (``cost_usd`` None: the model has no price): never counted as $0. They are
  counted in the spend's ``unpriced``; the budget is judged on the priced spend (their price is only
  known after the route answered), and ``Limiter.spend()`` (``GET /v1/key``) says ``cost_complete:
  false`` with the number of unpriced requests; ``keyrelay_usage_unpriced_total`` counts them.

Token reservation (``estimate_prompt`` / ``reservation``): the prompt is ``ceil(chars / 4)`` of the
messages' text (string contents, text parts, tool-call names and arguments), + 4 per message, + 256 per
image / audio / file part, + ``chars / 4`` of the ``tools`` JSON; for embeddings ``chars / 4`` of the
input strings (token-id lists count their length). The completion is ``max_completion_tokens`` or
``max_tokens`` (Anthropic requests arrive translated to the OpenAI shape) or ``DEFAULT_COMPLETION_RESERVE``
(1024) when absent (0 for embeddings). Settlement uses the upstream's usage (``done.usage``); a request
without a usage report that answered 2xx (a stream cut short) settles to the prompt estimate +
``ceil(streamed_chars / 4)``; a non-2xx answer without usage settles to 0 (no prompt tokens either: an
upstream that refused did not bill, and the client is not charged for the gateway's own refusals).

Headers: for the scopes with ``rpm`` (``-requests``) and with ``tpm`` (``-tokens``) the tightest one
(least remaining) is reported: ``limit``, ``remaining`` (after this request's charge), ``reset`` in
OpenAI's duration format (``"17ms"``, ``"1s"``, ``"6m0s"``): for requests the time until the oldest
request in the window leaves it (when ``remaining`` grows again), for tokens the time until the bucket
is full again. A refusal carries the same headers (state before it, nothing charged) and
``Retry-After`` (whole seconds, rounded up): the time until every refused limit would admit it.

If the store stays locked past ``ADMIT_WAIT_S`` the request is refused with 503 ``limits_unavailable``
(fail closed: a limit that cannot be checked is not skipped).

Cost, measured on a real SQLite file (WAL, synchronous=NORMAL as ``db.connect`` sets it), one process,
each admission settled before the next (bench/RESULTS.md, issue 13, has the figures before and after
0013)::

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m tests.unit.bench_limits

The write lock is held for the admission's statements only (no network, no JSON).
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from proxy import model_names
from proxy.clients.model import PERIODS, Admission, Client, Finished, period_bounds
from proxy.clients.ring import Ring, add_second, expire_seconds, newest_second, remove_from_second
from proxy.clients.slices import ROOM, SLICE_S, Slice, room
from proxy.config import Config
from proxy.errors import GatewayError
from proxy.observability import metrics, quiet
from proxy.observability.metrics import CLIENT_LIMITED
from proxy.store.base import KeyStore, KeyTx, StoreUnavailable, StoreUnreachable
from proxy.store.group import GroupCommit
from proxy.store.limits import LimitBatch, LimitRow, LimitTx

log = logging.getLogger("keyrelay.limits")

WINDOW_S = 60.0  # rpm and tpm are per minute
DEFAULT_COMPLETION_RESERVE = 1024  # tokens reserved for the answer when the request names no maximum
MEDIA_PART_TOKENS = 256  # an image / audio / file part of a message
PER_MESSAGE_TOKENS = 4
ADMIT_WAIT_S = 1.0  # longest wait for the store's write lock at admission (cooperative)
SETTLE_WAIT_S = 5.0
LEASE_MARGIN_S = 120.0  # a lease lives the request deadline + this
FLIGHT_GENERATIONS = 8  # a lease ttl is this many generations: a lost slot comes back after 7/8 to 8/8 ttl
CONCURRENCY_RETRY_S = 1.0  # a slot's release time is unknown: suggest a second

Refusal = tuple[str, str, float, str]  # (limit label, message, retry_after, code)
View = tuple[int, int, float]  # (limit, remaining, reset) of the tightest scope


class RateLimited(GatewayError):
    """429: a client limit refused the request. ``limit`` names it (rpm, tpm, concurrency, budget,
    quota, rpm:<glob>, tpm:<glob>)."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: float, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code, headers=headers)
        self.limit = limit
        self.retry_after = max(1.0, math.ceil(retry_after))


class LimitsUnavailable(GatewayError):
    status = 503
    code = "limits_unavailable"


@dataclass(frozen=True)
class Scope:
    key: str  # store scope: "c_…" or "c_…|<glob>"
    label: str  # "" for the client, else the glob (for messages and metric labels)
    rpm: int | None
    tpm: int | None
    concurrent: int | None = None  # max_concurrent: the client's scope only
    spends: bool = False  # a budget or a token quota: the client's scope only


@dataclass(frozen=True)
class Booking:
    """What one admission charged (``Admission.scopes`` holds one): settlement undoes what was unused."""

    token_scopes: tuple[Scope, ...]
    prompt_estimate: int
    reserved: int


def go_duration(seconds: float) -> str:
    """OpenAI's reset format (Go's duration): ``17ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    seconds = round(seconds, 3)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{sec}"
    if m:
        return f"{int(m)}m{sec}"
    return sec


def _chars(value: object) -> int:
    return len(value) if isinstance(value, str) else 0


def estimate_prompt(body: dict) -> int:
    """Tokens the prompt of an OpenAI-shaped request probably has (see the module docstring)."""
    chars, tokens = 0, 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in messages:
            if not isinstance(msg, dict):
                continue
            tokens += PER_MESSAGE_TOKENS
            content = msg.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, str):
                        chars += len(part)
                    elif isinstance(part, dict):
                        if isinstance(part.get("text"), str):
                            chars += len(part["text"])
                        elif part.get("type") not in (None, "text"):
                            tokens += MEDIA_PART_TOKENS
            for call in msg.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    chars += _chars(fn.get("name")) + _chars(fn.get("arguments"))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":"), default=str))
    inp = body.get("input")  # embeddings
    if isinstance(inp, str):
        chars += len(inp)
    elif isinstance(inp, list):
        for item in inp:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, list):
                tokens += len(item)
            elif isinstance(item, int):
                tokens += 1
    return tokens + math.ceil(chars / 4)


def completion_reserve(body: dict) -> int:
    if "messages" not in body:
        return 0  # embeddings: no completion
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_COMPLETION_RESERVE


def used_tokens(done: Finished, prompt_estimate: int) -> int:
    """Tokens to settle ``done`` to (see the module docstring); none for an answer from the cache."""
    if done.cached:
        return 0
    if done.usage is not None and done.usage.total > 0:
        return done.usage.total
    if 200 <= done.status < 300:
        return prompt_estimate + math.ceil(done.streamed_chars / 4)
    return 0


class Limiter:
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float], *,
                 slices: bool = True) -> None:
        """``slices=False``: every admission is its own store operation (tests/unit/bench_limits)."""
        self.config, self.store, self.clock = config, store, clock
        self.slices = slices
        self.tz = config.accounting.timezone
        self.lease_ttl_s = config.retry.deadline_s + LEASE_MARGIN_S
        # admissions and settlements arriving together share a transaction, and each row is read and
        # written once per transaction
        self.group = GroupCommit(store, batch=LimitBatch)
        self._bounds: dict[str, tuple[float, float]] = {}  # period -> the current one's [start, end)
        # slices (proxy/clients/slices.py), per client id: this worker's, the next one's size, the
        # latest admission, the most one request cost; a client being granted one is in _granting
        self._slices: dict[str, Slice] = {}
        self._sizes: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._cost_max: dict[str, float] = {}
        self._granting: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def period(self, period: str, at: float) -> tuple[float, float]:
        """``period_bounds`` in the accounting time zone, cached until the period ends (datetime
        arithmetic with zoneinfo costs ~10 µs; a settlement needs three)."""
        bounds = self._bounds.get(period)
        if bounds is None or not bounds[0] <= at < bounds[1]:
            bounds = period_bounds(period, at, self.tz)
            if bounds[0] <= self.clock() < bounds[1]:  # keep only the current period
                self._bounds[period] = bounds
        return bounds

    def _starts(self, at: float) -> tuple[float, ...]:
        """The start of the day, week and month holding ``at``."""
        return tuple(self.period(p, at)[0] for p in PERIODS)

    # -- scopes ------------------------------------------------------------------------------------
    @staticmethod
    def scopes(client: Client, model: str) -> list[Scope]:
        """The client's own scope first (when it has any limit), then its matching model globs'."""
        out = []
        spends = client.budget_usd is not None or client.token_quota is not None
        if client.rpm or client.tpm or client.max_concurrent or spends:
            out.append(Scope(client.id, "", client.rpm, client.tpm, client.max_concurrent, spends))
        for ml in client.model_limits:
            if (ml.rpm or ml.tpm) and model_names.matches(model, (ml.pattern,)):
                out.append(Scope(f"{client.id}|{ml.pattern}", ml.pattern, ml.rpm, ml.tpm))
        return out

    @staticmethod
    def has_limits(client: Client) -> bool:
        return bool(client.rpm or client.tpm or client.max_concurrent or client.model_limits
                    or client.budget_usd is not None or client.token_quota is not None)

    # -- admission ---------------------------------------------------------------------------------
    def admit(self, client: Client, model: str, body: dict) -> Admission | None:
        """One write transaction: check every limit of ``client`` for ``model``; charge them all only
        if all pass. RateLimited (429) otherwise, LimitsUnavailable (503) when the store is locked.
        A busy client is admitted from this worker's slice of its capacity when it has one."""
        if not self.has_limits(client):
            return Admission(client, model)
        scopes = self.scopes(client, model)
        prompt = estimate_prompt(body)
        reserve = prompt + completion_reserve(body)
        token_scopes = tuple(s for s in scopes if s.tpm)
        booking = (Booking(token_scopes, prompt, reserve),) if token_scopes else ()
        sliceable = self.slices and len(scopes) == 1 and client.token_quota is None
        if sliceable:
            got = self._from_slice(client, model, scopes[0], reserve, booking)
            if got is not None:
                return got
        more, old = self._slice_wanted(client) if sliceable else (0, None)
        try:
            refusals, req_view, tok_view, lease, granted = self.group.run(
                lambda raw: self._admit_in(cast(LimitTx, raw), client, scopes, reserve, more, old),
                ADMIT_WAIT_S)
        except StoreUnreachable as exc:  # PostgreSQL down: serve, charge the spend once it is back
            quiet.warn(log, "limits_degraded", "limits not checked, the database is unreachable: %s", exc)
            metrics.LIMITS_DEGRADED.inc()
            return Admission(client, model)
        except StoreUnavailable as exc:  # locked past the wait: a moment's refusal keeps limits exact
            log.warning("limits store unavailable", extra={"event": "limits_unavailable", "error": str(exc)})
            raise LimitsUnavailable("The gateway cannot check this client's limits right now; retry "
                                    "shortly.") from None
        finally:
            if more:
                with self._lock:
                    self._granting.discard(client.id)
        headers = _headers(req_view, tok_view)
        if refusals:
            raise self._refusal(client, refusals, headers)
        if granted is not None:
            with self._lock:
                self._slices[client.id] = granted
        return Admission(client, model, reserved_tokens=reserve if token_scopes else 0, lease=lease,
                         scopes=booking, headers=headers)

    def _from_slice(self, client: Client, model: str, scope: Scope, reserve: int,
                    booking: tuple) -> Admission | None:
        """An admission from this worker's slice, in memory; None when there is none to give."""
        now = self.clock()
        with self._lock:
            sl = self._slices.get(client.id)
            if sl is None or not sl.take(now, reserve, bool(scope.tpm), bool(scope.concurrent),
                                         client.budget_usd is not None):
                return None
        req = tok = None
        if sl.req is not None:
            limit, left, reset_at = sl.req
            req = (limit, left - sl.used, max(0.0, reset_at - now))
        if sl.tok is not None:
            limit, level, rate = sl.tok
            level -= sl.tokens_total - sl.tokens  # what the slice handed out, this one included
            tok = (limit, max(0, math.floor(level)), (limit - level) / rate)
        return Admission(client, model, reserved_tokens=reserve if booking else 0,
                         lease=str(sl.gen) if scope.concurrent else None, scopes=(*booking, sl),
                         headers=_headers(req, tok))

    def _slice_wanted(self, client: Client) -> tuple[int, Slice | None]:
        """(how many admissions beyond this one to reserve as a slice, the ended slice to give back)."""
        now = self.clock()
        with self._lock:
            if client.id in self._granting:
                return 0, None
            old = self._slices.pop(client.id, None)
            if old is not None:
                old.live = False
            last = self._last.get(client.id)
            if old is not None:
                size = self._sizes[client.id] = old.next_size(now)
            elif last is not None and now - last < SLICE_S:  # busy again: the last size, at least 2
                size = max(2, self._sizes.get(client.id, 2))
            else:
                size = 1
            self._last[client.id] = now
            more = size - 1
            if more:
                self._granting.add(client.id)
            return more, old

    def _admit_in(self, tx: LimitTx, client: Client, scopes: list[Scope], reserve: int, more: int = 0,
                  old: Slice | None = None,
                  ) -> tuple[list[Refusal], View | None, View | None, str | None, Slice | None]:
        """Inside the transaction: (refusals, the tightest request and token views, the lease, a new
        slice); gives back what ``old`` did not use first; charges every limit only when nothing
        refused, then up to ``more`` admissions as a slice. One read of the scopes' rows, one write of
        each."""
        now = self.clock()
        rows = tx.limit_rows([s.key for s in scopes]) if scopes else {}
        if old is not None and client.id in rows:
            self._give_back(rows[client.id], old, now)
            tx.put_limit_row(rows[client.id])
        refusals: list[Refusal] = []
        req_view: View | None = None
        tok_view: View | None = None
        gen = self._generation(now)
        charges: list[tuple[Scope, LimitRow, tuple[str, int] | None, float | None, Ring | None]] = []
        for s in scopes:
            row = rows.get(s.key) or LimitRow(s.key)
            hits = flight = None
            after_level: float | None = None
            if s.spends:
                refusals += self._check_spend(row, client, now)
            if s.rpm:
                # a second counts while its last admission is in the window: every admission of
                # (now-60, now] is counted; a slot comes back 60 to 61 s after it was taken
                hits_text, n, oldest = expire_seconds(row.hits, row.hits_n, now - WINDOW_S)
                hits = (hits_text, n)
                ok = n < s.rpm
                reset = max(0.0, (oldest if oldest is not None else now) + WINDOW_S - now)
                if not ok:
                    name = "rpm" + (f":{s.label}" if s.label else "")
                    refusals.append((name, f"{name} limit of {s.rpm} requests per minute for this "
                                     f"client key{_for(s)} reached", reset, "rate_limit_exceeded"))
                view = (s.rpm, s.rpm - (n + 1 if ok else n), reset)
                if req_view is None or view[1] < req_view[1]:
                    req_view = view
            if s.tpm:
                level = _refill(row, s.tpm, now)
                need = min(reserve, s.tpm)
                rate = s.tpm / WINDOW_S
                if level < need:
                    name = "tpm" + (f":{s.label}" if s.label else "")
                    refusals.append((name, f"{name} limit of {s.tpm} tokens per minute for this client "
                                     f"key{_for(s)} reached (this request reserves {reserve})",
                                     (need - level) / rate, "rate_limit_exceeded"))
                    after_level = level
                else:
                    after_level = level - reserve
                view = (s.tpm, max(0, math.floor(after_level)), (s.tpm - after_level) / rate)
                if tok_view is None or view[1] < tok_view[1]:
                    tok_view = view
            if s.concurrent:
                flight = Ring(row.flight_at, row.flight)
                flight.forget(gen - FLIGHT_GENERATIONS + 1)
                if flight.total() >= s.concurrent:
                    refusals.append(("concurrency", f"max_concurrent limit of {s.concurrent} "
                                     "requests in flight for this client key reached",
                                     CONCURRENCY_RETRY_S, "rate_limit_exceeded"))
            charges.append((s, row, hits, after_level, flight))
        lease = None
        if not refusals:  # charge everything, in the same transaction
            for _s, row, hits, after_level, flight in charges:
                changed = False
                if hits is not None:
                    row.hits, row.hits_n = add_second(hits[0], now), hits[1] + 1
                    changed = True
                if after_level is not None:
                    row.level, row.at, row.reserved = after_level, now, row.reserved + reserve
                    changed = True
                if flight is not None:
                    flight.add(gen)
                    row.flight_at, row.flight = flight.dump()
                    lease = str(gen)
                    changed = True
                if changed:  # a budget-only row is written at settlement
                    tx.put_limit_row(row)
        granted = None
        if more and not refusals:
            granted = self._grant(tx, client, charges[0], reserve, more, now, gen, req_view, tok_view)
        return refusals, req_view, tok_view, lease, granted

    def _grant(self, tx: LimitTx, client: Client,
               charge: tuple[Scope, LimitRow, tuple[str, int] | None, float | None, Ring | None],
               reserve: int, more: int, now: float, gen: int, req_view: View | None,
               tok_view: View | None) -> Slice | None:
        """Reserve up to ``more`` admissions of the client's scope as this worker's slice (at most
        1/ROOM of what is left of each limit: proxy/clients/slices.py); None when there is no room."""
        s, row, _, after_level, flight = charge
        n = more
        if s.rpm:
            n = min(n, room(s.rpm - row.hits_n, 1))
        if s.tpm and after_level is not None:
            n = min(n, room(after_level, reserve))
        if s.concurrent and flight is not None:
            n = min(n, room(s.concurrent - flight.total(), 1))
        usd = 0.0
        if client.budget_usd is not None:
            cost = self._cost_max.get(client.id, 0.0)
            start, _ = self.period(client.budget_period, now)
            left = client.budget_usd - row.spent(client.budget_period).at(start).cost - row.held(now)
            n = min(n, room(left, cost) if cost > 0 else 0)
            usd = left / ROOM
        if n < 1:
            return None
        until = now + SLICE_S
        second = hold = None
        if s.rpm:  # counted at the slice's end: never earlier than its requests are admitted
            row.hits, row.hits_n = add_second(row.hits, until, n), row.hits_n + n
            second = newest_second(row.hits)
        if s.tpm and after_level is not None:
            row.level, row.at, row.reserved = after_level - n * reserve, now, row.reserved + n * reserve
        if s.concurrent and flight is not None:
            flight.add(gen, n)
            row.flight_at, row.flight = flight.dump()
        if client.budget_usd is not None:
            hold = row.hold(until, usd)
        tx.put_limit_row(row)
        req = (req_view[0], req_view[1], now + req_view[2]) if req_view is not None else None
        tok = (tok_view[0], float(after_level), s.tpm / WINDOW_S) \
            if tok_view is not None and after_level is not None and s.tpm else None
        tokens = n * reserve if s.tpm else 0
        return Slice(requests=n, tokens=tokens, tokens_total=tokens, slots=n if s.concurrent else 0,
                     gen=gen, second=second, hold=hold, usd=usd, until=until, size=n + 1, req=req, tok=tok)

    def _give_back(self, row: LimitRow, sl: Slice, now: float) -> None:
        """What an ended slice did not use goes back to the client's row."""
        if sl.second is not None and sl.requests:
            row.hits, row.hits_n = remove_from_second(row.hits, row.hits_n, sl.second, sl.requests)
        if sl.tokens_total and sl.tok is not None:
            tpm = sl.tok[0]
            row.level, row.at = min(float(tpm), _refill(row, tpm, now) + sl.tokens), now
            # its reservations are closed but those of its requests still in flight (settled alone)
            row.reserved = max(0, row.reserved - (sl.tokens_total - sl.inflight_tokens))
            row.charged += sl.charged
        if sl.slots:
            flight = Ring(row.flight_at, row.flight)
            flight.forget(self._generation(now) - FLIGHT_GENERATIONS + 1)
            flight.take(sl.gen, sl.slots)
            row.flight_at, row.flight = flight.dump()
        if sl.hold is not None:
            row.release(sl.hold)
        for starts, (requests, tokens, cost, unpriced) in sl.spend.items():
            _add_spend(row, starts, requests, tokens, cost, unpriced)

    def _generation(self, at: float) -> int:
        """The lease generation of time ``at``: FLIGHT_GENERATIONS of them make one lease ttl."""
        return math.floor(at * FLIGHT_GENERATIONS / self.lease_ttl_s)

    def _check_spend(self, row: LimitRow, client: Client, now: float) -> list[Refusal]:
        out = []
        if client.budget_usd is not None:
            start, end = self.period(client.budget_period, now)
            spent, held = row.spent(client.budget_period).at(start).cost, row.held(now)
            if spent + held >= client.budget_usd:
                out.append(("budget", f"budget of ${client.budget_usd:g} per {client.budget_period} for this "
                            f"client key spent (${spent:.6g}" + (f", ${held:.6g} more held for requests "
                            "being admitted" if held else "") + ")", end - now, "budget_exceeded"))
        if client.token_quota is not None:
            start, end = self.period(client.quota_period, now)
            used = row.spent(client.quota_period).at(start).tokens
            if used >= client.token_quota:
                out.append(("quota", f"token quota of {client.token_quota} per {client.quota_period} for "
                            f"this client key used ({used})", end - now, "quota_exceeded"))
        return out

    def _refusal(self, client: Client, refusals: list[Refusal],
                 headers: dict[str, str]) -> RateLimited:
        # the limit that keeps the client out longest decides Retry-After and the code
        name, message, retry, code = max(refusals, key=lambda r: r[2])
        retry = max(1.0, math.ceil(retry))
        others = [r[0] for r in refusals if r[0] != name]
        text = f"{message}; retry in {int(retry)}s" + (f" (also over: {', '.join(others)})" if others else "")
        CLIENT_LIMITED.labels(client.id, name).inc()
        return RateLimited(text, limit=name, retry_after=retry, code=code,
                           headers=headers)

    # -- settlement --------------------------------------------------------------------------------
    def settle(self, admission: Admission, done: Finished, cost_usd: float | None,
               failed: Callable[[BaseException], None] | None = None) -> None:
        """Give back what the request did not use; add its cost and tokens to the period's spend.
        With ``failed``, nothing waits for a transaction already being prepared: the settlement joins
        it and returns (``GroupCommit.run_detached``), and an error it meets goes to ``failed``."""
        client = admission.client
        if not self.has_limits(client):
            return
        booking = next((b for b in admission.scopes if isinstance(b, Booking)), None)
        used = used_tokens(done, booking.prompt_estimate if booking else 0)
        if booking is None and done.usage is None and not (200 <= done.status < 300):
            used = 0
        spends = client.budget_usd is not None or client.token_quota is not None
        if booking is None and admission.lease is None and not spends:
            return  # rpm only: the admission charged everything there is (no transaction, ~40 µs saved)
        at = done.at or self.clock()
        sl = next((b for b in admission.scopes if isinstance(b, Slice)), None)
        with self._lock:
            if client.budget_usd is not None and cost_usd and cost_usd > self._cost_max.get(client.id, 0.0):
                self._cost_max[client.id] = cost_usd
            if sl is not None and sl.live:  # its slice takes it back; written when the slice ends
                sl.settle(used, booking.reserved if booking else 0, admission.lease is not None,
                          cost_usd, self._starts(at) if spends else None)
                return
        def fn(raw: KeyTx) -> None:
            self._settle_in(cast(LimitTx, raw), admission, booking, used, spends, cost_usd, at)
        if failed is None:
            self.group.run(fn, SETTLE_WAIT_S)
        else:
            self.group.run_detached(fn, SETTLE_WAIT_S, failed)

    def _settle_in(self, tx: LimitTx, admission: Admission, booking: Booking | None, used: int,
                   spends: bool, cost_usd: float | None, at: float) -> None:
        """One read of the rows concerned, one write of each: the buckets refunded, the lease's slot
        given back and the spend added (these three share the client's row)."""
        now = self.clock()
        client_id = admission.client.id
        token_scopes = {s.key: s for s in booking.token_scopes} if booking is not None else {}
        keys = list(token_scopes)
        if (admission.lease is not None or spends) and client_id not in token_scopes:
            keys.append(client_id)
        rows = tx.limit_rows(keys) if keys else {}
        for key in keys:
            row = rows.get(key) or LimitRow(key)
            s = token_scopes.get(key)
            if s is not None and booking is not None:
                assert s.tpm  # a refund never fills the bucket past its capacity
                level = _refill(row, s.tpm, now)
                row.level, row.at = min(float(s.tpm), level + booking.reserved - used), now
                row.charged, row.reserved = row.charged + used, max(0, row.reserved - booking.reserved)
            if key == client_id:
                if admission.lease is not None:
                    flight = Ring(row.flight_at, row.flight)
                    flight.forget(self._generation(now) - FLIGHT_GENERATIONS + 1)
                    flight.take(int(admission.lease))  # False: its generation expired, nothing to give back
                    row.flight_at, row.flight = flight.dump()
                if spends:
                    _add_spend(row, self._starts(at), 1, used, cost_usd or 0.0,
                               1 if cost_usd is None and used > 0 else 0)
            tx.put_limit_row(row)

    # -- slices ending ------------------------------------------------------------------------------
    def start(self) -> None:
        """The background sweep: a slice that ended gives back what it did not use even when its client
        sends nothing more to this worker."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="keyrelay-limit-slices",
                                             daemon=True)
            self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SLICE_S):
            try:
                self.sweep()
            except StoreUnavailable as exc:  # the next sweep, or the lapse in the store, takes them
                quiet.warn(log, "slice_sweep_failed", "limit slices not given back yet: %s", exc)
            except Exception:
                log.exception("limit slice sweep failed")

    def sweep(self, every: bool = False) -> None:
        """Give back what the ended slices (``every``: all of them) did not use, in one transaction."""
        now = self.clock()
        with self._lock:
            ended = [(cid, sl) for cid, sl in self._slices.items()
                     if (every or now >= sl.until) and cid not in self._granting]
            for cid, sl in ended:
                sl.live = False
                del self._slices[cid]
        if not ended:
            return

        def fn(raw: KeyTx) -> None:
            tx = cast(LimitTx, raw)
            rows = tx.limit_rows([cid for cid, _ in ended])
            for cid, sl in ended:
                if cid in rows:
                    self._give_back(rows[cid], sl, now)
                    tx.put_limit_row(rows[cid])
        self.group.run(fn, SETTLE_WAIT_S)

    def close(self) -> None:
        """Stop the sweep and give every slice back (a worker that stops holds nothing)."""
        self._stop.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=5)
        try:
            self.sweep(every=True)
        except StoreUnavailable as exc:
            log.warning("limit slices not given back at shutdown (they lapse by themselves): %s", exc)

    # -- views -------------------------------------------------------------------------------------
    def spend(self, client: Client, period: str | None = None) -> dict:
        """The current period's spend of ``client`` (for ``GET /v1/key``): requests, tokens, cost_usd,
        unpriced, cost_complete, the period's bounds and what is left of the budget / quota."""
        period = period or (client.budget_period if client.budget_usd is not None else client.quota_period)
        now = self.clock()
        start, end = self.period(period, now)
        with self.store.snapshot() as raw:
            row = cast(LimitTx, raw).spend(client.id, period, start)
        out = {"period": period, "period_start": start, "period_end": end, **row,
               "cost_complete": row["unpriced"] == 0}
        if client.budget_usd is not None and period == client.budget_period:
            out["budget_remaining_usd"] = max(0.0, client.budget_usd - row["cost_usd"])
        if client.token_quota is not None and period == client.quota_period:
            out["quota_remaining_tokens"] = max(0, client.token_quota - row["tokens"])
        return out


def _refill(row: LimitRow, tpm: int, now: float) -> float:
    """The bucket's level at ``now``: refilled at tpm/60 a second since ``row.at``, capped at ``tpm``;
    a scope without a bucket yet has a full one."""
    if row.level is None:
        return float(tpm)
    return min(float(tpm), row.level + max(0.0, now - row.at) * tpm / WINDOW_S)


def _add_spend(row: LimitRow, starts: tuple[float, ...], requests: int, tokens: int, cost: float,
               unpriced: int) -> None:
    """Add to the spend of the day, week and month beginning at ``starts``; a period the row has moved
    past is not reopened (a request that began before midnight and ended after it counts in the usage
    rollups of its day, and leaves today's spend alone)."""
    by_period = row.spend()
    for period, start in zip(PERIODS, starts, strict=True):
        current = by_period[period]
        if current.start is not None and current.start > start:
            continue
        spend = current.at(start)
        spend.requests += requests
        spend.tokens += tokens
        spend.cost += cost
        spend.unpriced += unpriced
        by_period[period] = spend


def _for(s: Scope) -> str:
    return f" on models '{s.label}'" if s.label else ""


def _headers(req: View | None, tok: View | None) -> dict[str, str]:
    h = {}
    if req is not None:
        h["x-ratelimit-limit-requests"] = str(req[0])
        h["x-ratelimit-remaining-requests"] = str(max(0, req[1]))
        h["x-ratelimit-reset-requests"] = go_duration(req[2])
    if tok is not None:
        h["x-ratelimit-limit-tokens"] = str(tok[0])
        h["x-ratelimit-remaining-tokens"] = str(max(0, tok[1]))
        h["x-ratelimit-reset-tokens"] = go_duration(tok[2])
    return h
