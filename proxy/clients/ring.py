"""Counts per whole time unit, oldest first, as kept in a ``limiter_state`` row: the rpm admissions per
second, the requests in flight per lease generation. Pure; text form ``"3,0,5"`` (the counts of units
``base``, ``base+1``, ``base+2``), leading and trailing zeros dropped when written."""
from __future__ import annotations


class Ring:
    __slots__ = ("base", "counts")

    def __init__(self, base: int, text: str) -> None:
        self.base = base
        self.counts = [int(x) for x in text.split(",")] if text else []

    def forget(self, before: int) -> None:
        """Drop the units below ``before``."""
        drop = before - self.base
        if drop > 0:
            del self.counts[:drop]
            self.base = before

    def total(self) -> int:
        return sum(self.counts)

    def oldest(self) -> int | None:
        """The first unit with a count, or None."""
        for i, n in enumerate(self.counts):
            if n:
                return self.base + i
        return None

    def add(self, unit: int, n: int = 1) -> None:
        counts = self.counts
        if not counts:
            self.base, self.counts = unit, [n]
            return
        i = unit - self.base
        if i < 0:  # another worker's clock is a little ahead: it wrote later units already
            counts[0:0] = [0] * -i
            self.base, i = unit, 0
        elif i >= len(counts):
            counts.extend([0] * (i - len(counts) + 1))
        counts[i] += n

    def take(self, unit: int, n: int = 1) -> bool:
        """Take ``n`` from ``unit`` (as many as it still has; False: it was forgotten already)."""
        i = unit - self.base
        if 0 <= i < len(self.counts) and self.counts[i] > 0:
            self.counts[i] -= min(n, self.counts[i])
            return True
        return False

    def dump(self) -> tuple[int, str]:
        """(base, text) to store."""
        counts = self.counts
        lo, hi = 0, len(counts)
        while lo < hi and not counts[lo]:
            lo += 1
        while hi > lo and not counts[hi - 1]:
            hi -= 1
        if lo == hi:
            return 0, ""
        return self.base + lo, ",".join(map(str, counts[lo:hi]))


def expire_seconds(text: str, n: int, since: float) -> tuple[str, int, float | None]:
    """The rpm window's per-second counts (``"<last>:<count>,…"``, oldest first; ``last`` the latest
    admission time of that second) without the seconds whose last admission is at or before ``since``;
    (text, the count left, the oldest second's last admission time or None). Only the expired front is
    parsed: O(1) a call, amortized."""
    while text:
        cut = text.find(",")
        head = text if cut < 0 else text[:cut]
        colon = head.index(":")
        last = float(head[:colon])
        if last > since:
            return text, n, last
        n -= int(head[colon + 1:])
        text = "" if cut < 0 else text[cut + 1:]
    return "", 0, None


def add_second(text: str, at: float, n: int = 1) -> str:
    """Count ``n`` admissions at ``at``: in the newest second when ``at`` falls in it (or before it:
    another worker's clock ran ahead; its ``last`` stays the later time, so the count is kept longer,
    never shorter), else in a new second. Only the newest entry is parsed."""
    if not text:
        return f"{at!r}:{n}"
    cut = text.rfind(",")
    tail = text[cut + 1:]
    colon = tail.index(":")
    last = float(tail[:colon])
    if int(at) <= int(last):
        return f"{text[:cut + 1]}{max(at, last)!r}:{int(tail[colon + 1:]) + n}"
    return f"{text},{at!r}:{n}"


def newest_second(text: str) -> int:
    """The whole second of the newest entry (where ``add_second`` just counted)."""
    tail = text[text.rfind(",") + 1:]
    return int(float(tail[:tail.index(":")]))


def remove_from_second(text: str, n_total: int, second: int, n: int) -> tuple[str, int]:
    """Take back up to ``n`` admissions counted in the entry of ``second`` (none if it left the window
    already): (text, the count left)."""
    parts = text.split(",") if text else []
    for i, part in enumerate(parts):
        last, count = part.split(":")
        if int(float(last)) == second:
            back = min(n, int(count))
            if int(count) > back:
                parts[i] = f"{last}:{int(count) - back}"
            else:
                del parts[i]
            return ",".join(parts), n_total - back
    return text, n_total
