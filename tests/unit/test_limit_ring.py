"""The counts a limiter_state row keeps: the rpm window per second (each second's last admission
decides when its slots come back) and the in-flight counts per lease generation."""
from __future__ import annotations

import random

from proxy.clients.ring import Ring, add_second, expire_seconds


def test_seconds_expire_when_their_last_admission_leaves_the_window() -> None:
    text = ""
    for at in (100.2, 100.9, 101.5, 130.0):
        text = add_second(text, at)
    assert text == "100.9:2,101.5:1,130.0:1"
    assert expire_seconds(text, 4, 100.5) == (text, 4, 100.9)  # 100.2 is out, but its second is not
    assert expire_seconds(text, 4, 100.9) == ("101.5:1,130.0:1", 2, 101.5)
    assert expire_seconds(text, 4, 200.0) == ("", 0, None)
    assert add_second("105.5:3", 105.1) == "105.5:4"  # an earlier clock: the later last is kept


def test_never_more_than_rpm_in_any_window_and_slots_back_within_61_s() -> None:
    """Random admissions at a limit of 5 per 60 s: every 60 s window holds at most 5, every refusal
    said when it would pass (never more than 60 s ahead), and an admission is counted at most 61 s."""
    rng = random.Random(7)
    rpm, text, n, t, admitted = 5, "", 0, 1000.0, []
    for _ in range(1200):
        t += rng.choice((0.01, 0.3, 0.7, 2.0, 9.0))
        text, n, oldest = expire_seconds(text, n, t - 60)
        assert n == sum(1 for a in admitted if a > t - 61 and not _gone(a, admitted, t))
        if n < rpm:
            text, n = add_second(text, t), n + 1
            admitted.append(t)
        else:
            assert oldest is not None and 0 < oldest + 60 - t <= 60
        window = [a for a in admitted if t - 60 < a <= t]
        assert len(window) <= rpm


def _gone(a: float, admitted: list[float], t: float) -> bool:
    """``a``'s second has ended for the window: its last admission is 60 s old."""
    last = max(x for x in admitted if int(x) == int(a) or x == a)
    return last <= t - 60


def test_generations_forget_and_give_back() -> None:
    r = Ring(0, "")
    r.add(10)
    r.add(10)
    r.add(12)
    assert r.dump() == (10, "2,0,1") and r.total() == 3
    assert r.take(10) and not r.take(11)
    r.forget(11)
    assert r.dump() == (12, "1") and not r.take(10)  # forgotten: nothing to give back
    r2 = Ring(*r.dump())
    r2.add(11)  # an earlier generation (another worker's clock): kept, in order
    assert r2.dump() == (11, "1,1")
