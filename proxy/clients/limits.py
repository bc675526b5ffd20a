"""Per-client limits that hold across every worker: rpm, tpm, max_concurrent, budgets and token quotas.

All state is in the store, never in a process, so every worker and every process sharing the database
sees the same counts. Each admission checks every applicable limit and charges them only if all pass (a
refused request charges nothing), inside one write transaction; each settlement is one more. The
transactions go through ``proxy.store.group.GroupCommit``: the admissions and settlements a worker
reaches in the same turn of its event loop share one transaction, each seeing the ones before it, so
counts stay exact while the cost of taking the lock and committing is paid once per batch.

Scopes: the client (``c_…``) and, for every ``model_limits`` glob the requested (client-facing) model
name matches, the pair (``c_…|<glob>``). ``rpm`` / ``tpm`` apply per scope, ``max_concurrent`` per
client, budgets / quotas per client and period (``day`` / ``week`` (Monday) / ``month`` in
``accounting.timezone``).

Algorithms, and why:

* **rpm — sliding-window log** (``limit_hits``: one row per admitted request of the last 60 s). Exact:
  at most ``rpm`` requests in ANY 60 s interval, with no boundary burst (a fixed window lets 2×rpm
  through around a minute's edge) and no approximation (a sliding-window counter estimates). Rows are
  bounded by ``rpm`` per scope; the expired ones are deleted by the admission that looks at them.
  Every admitted request counts, whatever its answer.
* **tpm — token bucket with reservation and settlement** (``limit_buckets``: one row per scope). The
  bucket holds up to ``tpm`` tokens and refills at ``tpm/60`` a second; O(1) per request whatever the
  rate. Admission needs ``level >= min(reservation, tpm)`` (so a request larger than the whole budget
  can still run when the bucket is full) and takes the whole reservation (the level may go negative:
  that debt delays the next requests). Settlement gives back ``reservation - used`` (or takes the
  excess when the request used more). Guarantee: the tokens used over any T seconds are at most
  ``tpm + tpm·T/60`` (burst of one minute's worth, then the rate); the long-run rate is exactly tpm.
  Columns ``charged`` (tokens settled so far) and ``reserved`` (reservations still open) make the
  settlement checkable.
* **max_concurrent — leases with an expiry** (``limit_leases``): admission counts the live leases and
  adds one, settlement deletes it. A lease expires by itself after ``lease_ttl_s``
  (``retry.deadline_s`` + 120 s: 240 s by default), so the slots of a ``kill -9``'ed worker come
  back alone. A stream that outlives the ttl stops holding its slot (a soft edge, documented).
* **budget_usd / token_quota — a spend row per (client, period kind, period start)** (``client_spend``),
  added to at settlement in the same transaction as the bucket, so a budget is judged on the spend of
  every request that has finished, never on a stale copy. A request is admitted while the period's
  spend is below the line: the request that crosses it completes, the next one gets 429
  ``budget_exceeded`` / ``quota_exceeded`` with ``Retry-After`` = the time until the period resets.
  (Requests admitted concurrently before the crossing one settled may complete as well: a budget is a
  spend line, not a reservation.) A client with a budget or a quota keeps spend for day, week and
  month, so a budget changed mid-period is judged on that period's real spend; a client without either
  keeps none (given its first budget mid-period, it is judged on what it spends from then on; the usage
  report has the history), and a client with only rpm limits has nothing to settle at all.
* **Unpriced requests** (``cost_usd`` None: the model has no price): never counted as $0. They are
  counted in ``client_spend.unpriced``; the budget is judged on the priced spend (their price is only
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
each admission settled before the next (so leases stay few, as in life), rpm windows of 2 000–4 000 rows::

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m tests.unit.bench_limits

    every limit  admit  ~150 µs, settle ~120 µs per call  (2 rpm + 2 tpm scopes, lease, budget: one
                 BEGIN IMMEDIATE … COMMIT each; 150–270 µs / 120–200 µs with colleagues' load on the
                 2 shared cores)
    rpm only     admit   ~53 µs, settle  ~57 µs per call

The window count is kept in ``limit_windows`` so an admission never counts rows: its cost does not grow
with rpm (measured flat from 200 to 10 000 rows a window). The write lock is held for the admission's
statements only (no network, no JSON): at 100 requests a second, admission + settlement hold it
~27 ms a second (~3 %), whatever the number of workers.
"""
from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from proxy import model_names
from proxy.clients.model import PERIODS, Admission, Client, Finished, period_bounds
from proxy.config import Config
from proxy.errors import GatewayError
from proxy.observability.metrics import CLIENT_LIMITED
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.group import GroupCommit
from proxy.store.limits import LimitTx

log = logging.getLogger("keyrelay.limits")

WINDOW_S = 60.0  # rpm and tpm are per minute
DEFAULT_COMPLETION_RESERVE = 1024  # tokens reserved for the answer when the request names no maximum
MEDIA_PART_TOKENS = 256  # an image / audio / file part of a message
PER_MESSAGE_TOKENS = 4
ADMIT_WAIT_S = 1.0  # longest wait for the store's write lock at admission (cooperative)
SETTLE_WAIT_S = 5.0
LEASE_MARGIN_S = 120.0  # a lease lives the request deadline + this
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
    def __init__(self, config: Config, store: KeyStore, clock: Callable[[], float]) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.tz = config.accounting.timezone
        self.lease_ttl_s = config.retry.deadline_s + LEASE_MARGIN_S
        self.group = GroupCommit(store)  # admissions and settlements arriving together share a transaction
        self._bounds: dict[str, tuple[float, float]] = {}  # period -> the current one's [start, end)

    def period(self, period: str, at: float) -> tuple[float, float]:
        """``period_bounds`` in the accounting time zone, cached until the period ends (datetime
        arithmetic with zoneinfo costs ~10 µs; a settlement needs three)."""
        bounds = self._bounds.get(period)
        if bounds is None or not bounds[0] <= at < bounds[1]:
            bounds = period_bounds(period, at, self.tz)
            if bounds[0] <= self.clock() < bounds[1]:  # keep only the current period
                self._bounds[period] = bounds
        return bounds

    # -- scopes ------------------------------------------------------------------------------------
    @staticmethod
    def scopes(client: Client, model: str) -> list[Scope]:
        out = []
        if client.rpm or client.tpm:
            out.append(Scope(client.id, "", client.rpm, client.tpm))
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
        if all pass. RateLimited (429) otherwise, LimitsUnavailable (503) when the store is locked."""
        if not self.has_limits(client):
            return Admission(client, model)
        scopes = self.scopes(client, model)
        prompt = estimate_prompt(body)
        reserve = prompt + completion_reserve(body)
        token_scopes = tuple(s for s in scopes if s.tpm)
        try:
            refusals, req_view, tok_view, lease = self.group.run(
                lambda raw: self._admit_in(cast(LimitTx, raw), client, scopes, token_scopes, reserve),
                ADMIT_WAIT_S)
        except StoreUnavailable as exc:
            log.warning("limits store unavailable", extra={"event": "limits_unavailable", "error": str(exc)})
            raise LimitsUnavailable("The gateway cannot check this client's limits right now; retry "
                                    "shortly.") from None
        headers = _headers(req_view, tok_view)
        if refusals:
            raise self._refusal(client, refusals, headers)
        return Admission(client, model, reserved_tokens=reserve if token_scopes else 0, lease=lease,
                         scopes=(Booking(token_scopes, prompt, reserve),) if token_scopes else (),
                         headers=headers)

    def _admit_in(self, tx: LimitTx, client: Client, scopes: list[Scope], token_scopes: tuple[Scope, ...],
                  reserve: int) -> tuple[list[Refusal], View | None, View | None, str | None]:
        """Inside the transaction: (refusals, the tightest request and token views, the lease); charges
        every limit only when nothing refused."""
        now = self.clock()
        refusals = self._check_spend(tx, client, now)
        req_view: View | None = None
        tok_view: View | None = None
        hits: list[Scope] = []
        for s in scopes:
            if not s.rpm:
                continue
            n, oldest = tx.window(s.key, now - WINDOW_S)
            ok = n < s.rpm
            after = n + 1 if ok else n
            first = oldest if oldest is not None else now
            reset = max(0.0, first + WINDOW_S - now)
            if not ok:
                name = "rpm" + (f":{s.label}" if s.label else "")
                refusals.append((name, f"{name} limit of {s.rpm} requests per minute for this "
                                 f"client key{_for(s)} reached", reset, "rate_limit_exceeded"))
            else:
                hits.append(s)
            view = (s.rpm, s.rpm - after, reset)
            if req_view is None or view[1] < req_view[1]:
                req_view = view
        levels: list[tuple[Scope, float, int, int]] = []
        for s in token_scopes:
            assert s.tpm
            level, charged, reserved = self._refill(tx, s, now)
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
            levels.append((s, after_level, charged, reserved))
            view = (s.tpm, max(0, math.floor(after_level)), (s.tpm - after_level) / rate)
            if tok_view is None or view[1] < tok_view[1]:
                tok_view = view
        if client.max_concurrent:
            live = tx.leases(client.id, now)
            if live >= client.max_concurrent:
                refusals.append(("concurrency", f"max_concurrent limit of {client.max_concurrent} "
                                 "requests in flight for this client key reached",
                                 CONCURRENCY_RETRY_S, "rate_limit_exceeded"))
        lease = None
        if not refusals:  # charge everything, in the same transaction
            for s in hits:
                tx.add_hit(s.key, now)
            for s, after_level, charged, reserved in levels:
                tx.put_bucket(s.key, after_level, now, charged, reserved + reserve)
            if client.max_concurrent:
                lease = "l_" + secrets.token_hex(8)
                tx.add_lease(lease, client.id, now + self.lease_ttl_s)
        return refusals, req_view, tok_view, lease

    def _check_spend(self, tx: LimitTx, client: Client, now: float) -> list[Refusal]:
        out = []
        if client.budget_usd is not None:
            start, end = self.period(client.budget_period, now)
            spent = tx.spend(client.id, client.budget_period, start)["cost_usd"]
            if spent >= client.budget_usd:
                out.append(("budget", f"budget of ${client.budget_usd:g} per {client.budget_period} for this "
                            f"client key spent (${spent:.6g})", end - now, "budget_exceeded"))
        if client.token_quota is not None:
            start, end = self.period(client.quota_period, now)
            used = tx.spend(client.id, client.quota_period, start)["tokens"]
            if used >= client.token_quota:
                out.append(("quota", f"token quota of {client.token_quota} per {client.quota_period} for "
                            f"this client key used ({used})", end - now, "quota_exceeded"))
        return out

    @staticmethod
    def _refill(tx: LimitTx, s: Scope, now: float) -> tuple[float, int, int]:
        assert s.tpm
        row = tx.bucket(s.key)
        if row is None:
            return float(s.tpm), 0, 0
        level, at, charged, reserved = row
        return min(float(s.tpm), level + max(0.0, now - at) * s.tpm / WINDOW_S), charged, reserved

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
    def settle(self, admission: Admission, done: Finished, cost_usd: float | None) -> None:
        """Give back what the request did not use; add its cost and tokens to the period's spend."""
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
        self.group.run(lambda raw: self._settle_in(cast(LimitTx, raw), admission, booking, used, spends,
                                                   cost_usd, at), SETTLE_WAIT_S)

    def _settle_in(self, tx: LimitTx, admission: Admission, booking: Booking | None, used: int,
                   spends: bool, cost_usd: float | None, at: float) -> None:
        now = self.clock()
        if booking is not None:
            for s in booking.token_scopes:
                level, charged, reserved = self._refill(tx, s, now)
                assert s.tpm  # a refund never fills the bucket past its capacity
                tx.put_bucket(s.key, min(float(s.tpm), level + booking.reserved - used), now,
                              charged + used, max(0, reserved - booking.reserved))
        if admission.lease is not None:
            tx.drop_lease(admission.lease, admission.client.id, now)
        if spends:
            unpriced = 1 if cost_usd is None and used > 0 else 0
            periods = [(period, *self.period(period, at)) for period in PERIODS]
            tx.add_spend(admission.client.id, periods, 1, used, cost_usd or 0.0, unpriced)

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
