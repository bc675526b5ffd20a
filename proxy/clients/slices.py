"""Slices: a worker's share of one client's capacity, reserved in the store in one transaction and
handed out in memory, so a busy client's admissions cost no store operation each.

A slice is taken by an ordinary admission (the same transaction, after the same checks) for ``n`` more
admissions than the one at hand, and charged at once as ``n`` admissions would be: ``n`` requests in
the rpm window (counted at the slice's expiry, so each stays in the window at least as long as if it
had been counted when it was admitted), ``n`` reservations of the request's size from the token bucket,
``n`` in-flight slots, and a budget hold (``holds``: headroom every admission counts as spent until it
lapses). Nothing a slice holds can be used by another worker, so all workers together never pass a
limit. A request admitted from a slice that ends while the slice lives settles into it (its unused
tokens and its slot come back to the slice, its spend is added up there); the slice writes all that
when it ends, with what it did not use: the requests leave the rpm window, the tokens return to the
bucket, the slots and the hold are released. It ends ``SLICE_S`` after it was taken or when it runs
out, and is given back by the worker's next admission of that client or by its background sweep. A
request still in flight then settles alone, as any other. The spend of a slice's requests reaches the
store up to ``SLICE_S`` late, always within the hold that every worker already counts as spent.

Exactness where it matters: a slice is at most ``1/ROOM`` of what is left of EVERY limit the client
has (a budget: of the headroom left, divided by the most one request of the client cost so far), and
at least ``MIN_SLICE``: near a limit, and for any limit under ``ROOM * MIN_SLICE`` (128 requests a
minute), there are no slices and every admission is its own transaction, as before ("30 of 60 with
rpm 30" is exact). Far from every limit a slice can only make another worker's admission wait for
it: a worker refused while another still holds an unused slice is refused too early, by at most that
slice, for at most ``SLICE_S`` plus one sweep. A worker killed with a slice leaves what it held: the
requests leave the window within the minute, the slots with their lease generation, the hold at its
``until``; the spend its slice's requests had settled is lost with it (as its unflushed usage records).

Size: 1 (no slice) while the client is slow; 2 once two admissions come within ``SLICE_S``; doubled
each time a slice runs out before it expires (at most ``MAX_SLICE``); what the last one served when it
expired unused. Clients with a token quota or with model-glob limits are not sliced (every admission
is a transaction).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SLICE_S = 0.5  # a slice is used within this long of its reservation, or what is left goes back
MAX_SLICE = 64
ROOM = 64  # a slice takes at most 1/ROOM of what is left of each limit
MIN_SLICE = 2  # smaller than this, no slice: a limit with less than ROOM * 2 left is never sliced


@dataclass(eq=False)
class Slice:
    """What is left of one slice (the client's scope): ``requests`` admissions, ``tokens`` of reservation,
    ``slots`` in lease generation ``gen``, ``usd`` of budget hold (``hold``: its entry in the store;
    ``spent``: what its requests cost so far), until ``until``. ``second`` is the rpm window's entry the
    requests were counted in; ``req`` / ``tok`` what the headers start from (the views without it)."""

    requests: int
    tokens: int
    tokens_total: int
    slots: int
    gen: int
    second: int | None
    hold: str | None
    usd: float
    until: float
    size: int
    req: tuple[int, int, float] | None = None  # (limit, remaining, reset at)
    tok: tuple[int, float, float] | None = None  # (limit, level, refill rate per second)
    spent: float = 0.0
    used: int = 0
    live: bool = True  # False once taken out to be given back: its requests then settle alone
    inflight_tokens: int = 0  # reservations of its requests not settled yet
    charged: int = 0  # tokens its settled requests used
    # what its settled requests spent, by (day, week, month) start: [requests, tokens, cost, unpriced]
    spend: dict[tuple[float, ...], list] = field(default_factory=dict)

    def take(self, now: float, reserve: int, tokens: bool, slot: bool, budget: bool) -> bool:
        """One admission from the slice, if it can still give one."""
        if now >= self.until or self.requests < 1 or (tokens and self.tokens < reserve) \
                or (slot and self.slots < 1) or (budget and self.spent >= self.usd):
            return False
        self.requests -= 1
        self.used += 1
        if tokens:
            self.tokens -= reserve
            self.inflight_tokens += reserve
        if slot:
            self.slots -= 1
        return True

    def settle(self, used: int, reserved: int, slot: bool, cost: float | None,
               starts: tuple[float, ...] | None) -> None:
        """One of its requests ended while the slice lives: its tokens, slot and spend come back to it
        (the store gets them when the slice ends)."""
        if reserved:
            self.tokens += reserved - used
            self.inflight_tokens -= reserved
            self.charged += used
        if slot:
            self.slots += 1
        if cost:
            self.spent += cost
        if starts is not None:
            acc = self.spend.setdefault(starts, [0, 0, 0.0, 0])
            acc[0] += 1
            acc[1] += used
            acc[2] += cost or 0.0
            acc[3] += 1 if cost is None and used > 0 else 0

    def next_size(self, now: float) -> int:
        """The size of the slice after this one: doubled when this one ran out in time, else what it
        served."""
        if now < self.until:
            return min(MAX_SLICE, 2 * self.size)
        return max(1, self.used)


def room(left: float, per_request: float) -> int:
    """Admissions a slice may hold of a limit with ``left`` remaining, ``per_request`` each (0: none)."""
    if per_request <= 0:
        return MAX_SLICE
    n = int(left / ROOM / per_request)
    return n if n >= MIN_SLICE else 0
