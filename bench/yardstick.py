"""Issue 21: keyrelay as ratios to the stack's floor (``bench/floor.py``), measured in the same run.

The floor is a bare Flask + gevent + urllib3 relay served by gunicorn with keyrelay's worker settings
(gevent, ``worker_connections`` 2000, keep-alive 5 s). Every scenario runs direct-to-mock, floor and
keyrelay in turn (direct, floor, keyrelay, direct, ...); worker CPU comes from ``/proc/<pid>/stat``
(utime + stime) of each server's workers over the run, RSS from ``/proc/<pid>/status``.

Phases (``bench/run --only floor`` / ``--only streams``):

* ``floor``: non-stream throughput and worker CPU per request at c=16, keyrelay with a client key,
  every limit and usage recording on (phase [6]'s keyed config);
* ``streams``: the ``floor`` phase, then 1,000 concurrent streams through one worker (10 chunks 200 ms
  apart, starts spread over 2 s, every connection running 2 streams back to back): errors, added
  first-chunk p50 / p99, chunk-gap p1, CPU per streamed chunk, memory per open stream (peak RSS during
  the first round minus the idle RSS before it, / streams), then 2 workers with 2,000 streams.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from bench import runner as r

KEYED = {"auth": {"mode": "keys"}, "prices": {r.MODEL: {"input": 0.3, "output": 2.5}},
         "clients": [{"name": "bench", "key": r.BENCH_CLIENT_KEY, "rpm": 10_000_000, "tpm": 10**12,
                      "max_concurrent": 100_000, "budget_usd": 1_000_000, "budget_period": "month"}]}
AUTH = (f"Authorization: Bearer {r.BENCH_CLIENT_KEY}",)
CHUNKS = 10


class Floor:
    """``bench/floor.py`` under gunicorn with keyrelay's worker settings."""

    def __init__(self, tmp: Path, mock_url: str, workers: int, name: str) -> None:
        self.port = r.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        path = tmp / f"{name}.log"
        self.log = open(path, "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        env["KEYRELAY_FLOOR_UPSTREAM"] = mock_url + "/v1beta"
        self.proc = r.spawn(
            [r.PY, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "--worker-connections", "2000",
             "--keep-alive", "5", "--graceful-timeout", "2", "--timeout", "60", "-b",
             f"127.0.0.1:{self.port}", "bench.floor:app"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        r.wait_healthy("floor", self.proc, self.url + "/healthz", path, 30, 0.1,
                       ready=lambda: len(self.worker_pids()) == workers)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        r.stop(self.proc)
        self.log.close()


def _targets(mock_url: str, floor_url: str, kr_url: str, floor_pids: list[int], kr_pids: list[int],
             stream: bool, keyed: bool = True) -> list[r.Target]:
    if stream:
        direct_url = f"{mock_url}/v1beta/models/{r.MODEL}:streamGenerateContent?alt=sse"
        body = r.OPENAI_STREAM_BODY
    else:
        direct_url, body = f"{mock_url}/v1beta/models/{r.MODEL}:generateContent", r.OPENAI_BODY
    return [
        r.Target("direct", direct_url, r.GEMINI_BODY, ("x-goog-api-key: bench-key-a",)),
        r.Target("floor", floor_url + "/v1/chat/completions", body, (), tuple(floor_pids)),
        r.Target("keyrelay", kr_url + "/v1/chat/completions", body, AUTH if keyed else (), tuple(kr_pids)),
    ]


class _RssPeak:
    """The highest summed RSS of ``pids`` while it runs (sampled every 50 ms)."""

    def __init__(self, pids: tuple[int, ...]) -> None:
        self.pids, self.peak = pids, 0.0
        self._done = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return sum(r.rss_mb(p) for p in self.pids)

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self._rss())
            self._done.wait(0.05)

    def __enter__(self) -> _RssPeak:
        self.idle = self._rss()
        self._th.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._th.join()


def _turns(ts: list[r.Target], rounds: int, rss: bool = False, **kw) -> dict[str, list[dict]]:  # noqa: ANN003
    got: dict[str, list[dict]] = {t.name: [] for t in ts}
    for _ in range(rounds):
        for t in ts:
            if rss and t.pids:
                with _RssPeak(t.pids) as m:
                    res = r.load(t, **kw)
                res["rss_idle_mb"], res["rss_peak_mb"] = round(m.idle, 2), round(m.peak, 2)
            else:
                res = r.load(t, **kw)
            got[t.name].append(res)
    return got


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


class Yardstick:
    """The issue-21 phases, on the ``Bench``'s mock and temporary directory."""

    def __init__(self, bench: r.Bench) -> None:
        self.b = bench
        self.q = bench.quick
        self.out: dict = bench.results.setdefault("floor", {})

    def _servers(self, workers: int, name: str, keyed: bool = True) -> tuple[Floor, r.Keyrelay]:
        floor = Floor(self.b.tmp, self.b.mock.url, workers, f"floor-{name}")
        kr = r.Keyrelay(self.b.tmp, self.b.mock.url, workers, self.b.a.log_level, f"kr-{name}",
                        KEYED if keyed else None)
        return floor, kr

    # -------------------------------------------------------------------------- non-stream, c=16

    def plain(self) -> None:
        q = self.q
        rounds, n, d = (2, 2000, 3) if q else (3, 10000, 6)
        print(f"\n[9] floor: non-stream c=16, direct / floor / keyrelay (client key, limits, usage), "
              f"{rounds} rounds", flush=True)
        floor, kr = self._servers(1, "plain")
        try:
            ts = _targets(self.b.mock.url, floor.url, kr.url, floor.worker_pids(), kr.worker_pids(), False)
            for t in ts:
                warm = r.load(t, c=16, n=1000 if q else 3000, d=5)
                if warm["errors"]:
                    raise RuntimeError(f"{t.name}: {warm['errors']} errors while warming up")
            got = _turns(ts, rounds, c=16, n=n, d=d)
        finally:
            floor.close()
            kr.close()
        o = {name: {"rps": r.med(rs, "rps"), "cpu_ms_per_req": r.med(rs, "cpu_ms_per_req"),
                    "errors": r.total(rs, "errors"), "rps_runs": [x["rps"] for x in rs],
                    "cpu_runs": [x.get("cpu_ms_per_req") for x in rs]} for name, rs in got.items()}
        o["throughput_ratio"] = _ratio(o["keyrelay"]["rps"], o["floor"]["rps"])
        o["cpu_ratio"] = _ratio(o["keyrelay"]["cpu_ms_per_req"], o["floor"]["cpu_ms_per_req"])
        self.out["plain_c16"] = {"summary": o, "runs": got}
        for name in ("direct", "floor", "keyrelay"):
            v = o[name]
            print(f"  {name}: {v['rps']} req/s (runs {v['rps_runs']}), worker CPU {v['cpu_ms_per_req']} "
                  f"ms/req (runs {v['cpu_runs']}), errors {v['errors']}", flush=True)
        errors = o["keyrelay"]["errors"] + o["floor"]["errors"]
        self.b.row("floor: non-stream throughput c=16, keyrelay (keyed) / floor",
                   f"{o['throughput_ratio']}x ({o['keyrelay']['rps']} / {o['floor']['rps']} req/s)",
                   ">= 1.0x",
                   o["throughput_ratio"] is not None and o["throughput_ratio"] >= 1.0 and not errors)
        self.b.row("floor: worker CPU per request c=16, keyrelay (keyed) / floor",
                   f"{o['cpu_ratio']}x ({o['keyrelay']['cpu_ms_per_req']} / "
                   f"{o['floor']['cpu_ms_per_req']} ms)",
                   "<= 1.0x", o["cpu_ratio"] is not None and o["cpu_ratio"] <= 1.0)

    # -------------------------------------------------------------------------- streams

    def streams(self) -> None:
        self.plain()
        q, a = self.q, self.b.a
        c = a.streams or (200 if q else 1000)
        self._stream_case(1, c, 1 if q else 2, "1 worker", "streams_1w", memory=True)
        if not q:
            self._stream_case(2, 2 * c, 1, "2 workers", "streams_2w", memory=False)

    def _stream_case(self, workers: int, c: int, rounds: int, label: str, key: str, memory: bool) -> None:
        keyed = getattr(self.b.a, "stream_auth", "keys") == "keys"
        print(f"\n[10] floor: {label}, {c} concurrent streams ({CHUNKS} chunks 200 ms apart, starts over "
              f"2 s, 2 streams per connection), direct / floor / keyrelay "
              f"({'client key, limits, usage' if keyed else 'auth.mode: open'}), {rounds} rounds", flush=True)
        floor, kr = self._servers(workers, f"s{workers}", keyed)
        try:
            ts = _targets(self.b.mock.url, floor.url, kr.url, floor.worker_pids(), kr.worker_pids(), True,
                          keyed)
            for t in ts[1:]:  # warm-up: imports, pools, code paths (also grows the upstream pool)
                warm = r.load(t, c=min(c, 200), n=min(c, 200), d=20, stream=True, chunks=CHUNKS, ramp=0.5)
                if warm["errors"]:
                    raise RuntimeError(f"{t.name}: {warm['errors']} stream errors while warming up: "
                                       f"{warm['error_kinds']}")
            got = _turns(ts, rounds, rss=memory, c=c, n=2 * c, d=40, stream=True, chunks=CHUNKS,
                         timeout=30, ramp=2.0)
        finally:
            floor.close()
            kr.close()
        o: dict = {"streams": c, "workers": workers, "rounds": rounds, "keyed": keyed}
        for name, rs in got.items():
            v: dict = {"errors": r.total(rs, "errors"),
                       "error_kinds": [x["error_kinds"] for x in rs if x["errors"]],
                       "max_inflight": max(x.get("max_inflight", 0) for x in rs)}
            for p in ("p50", "p99"):
                v[f"first_chunk_{p}"] = r.med(rs, "stream", "first_chunk_ms", p)
                v[f"first_chunk_{p}_runs"] = [x.get("stream", {}).get("first_chunk_ms", {}).get(p)
                                              for x in rs]
            v["gap_p1"] = r.med(rs, "stream", "gap_ms", "p1")
            v["gap_p1_runs"] = [x.get("stream", {}).get("gap_ms", {}).get("p1") for x in rs]
            v["gap_p50"] = r.med(rs, "stream", "gap_ms", "p50")
            v["machine_busy_runs"] = [x.get("machine_busy") for x in rs]
            if name != "direct":
                per_chunk = [x["server_cpu_s"] * 1e6 / (x["ok"] * CHUNKS) if x.get("ok") else None
                             for x in rs]
                v["cpu_us_per_chunk_runs"] = [round(x, 1) if x is not None else None for x in per_chunk]
                v["cpu_us_per_chunk"] = r.median(per_chunk)
                if memory and rs:
                    first = rs[0]  # the first round grows the heap; later ones reuse it
                    v["rss_idle_mb"], v["rss_peak_mb"] = first["rss_idle_mb"], first["rss_peak_mb"]
                    v["kb_per_stream"] = round((first["rss_peak_mb"] - first["rss_idle_mb"]) * 1024 / c, 1)
                    v["kb_per_stream_runs"] = [round((x["rss_peak_mb"] - x["rss_idle_mb"]) * 1024 / c, 1)
                                               for x in rs]
            o[name] = v
        for name in ("floor", "keyrelay"):
            for p in ("p50", "p99"):
                o[name][f"added_{p}"] = r.sub(o[name][f"first_chunk_{p}"], o["direct"][f"first_chunk_{p}"])
        kv, fv = o["keyrelay"], o["floor"]
        o["cpu_per_chunk_ratio"] = _ratio(kv["cpu_us_per_chunk"], fv["cpu_us_per_chunk"])
        self.out[key] = {"summary": o, "runs": got}
        for name in ("direct", "floor", "keyrelay"):
            v = o[name]
            extra = ""
            if name != "direct":
                extra = (f", added first chunk p50 {v['added_p50']} / p99 {v['added_p99']} ms, "
                         f"CPU {v['cpu_us_per_chunk'] and round(v['cpu_us_per_chunk'], 1)} us/chunk "
                         f"(runs {v['cpu_us_per_chunk_runs']})")
                if "kb_per_stream" in v:
                    extra += (f", RSS idle {v['rss_idle_mb']} MB peak {v['rss_peak_mb']} MB = "
                              f"{v['kb_per_stream']} KB/stream (runs {v['kb_per_stream_runs']})")
            print(f"  {name}: errors {v['errors']} {v['error_kinds'] or ''}, "
                  f"max in flight {v['max_inflight']}, "
                  f"first chunk p50 {v['first_chunk_p50']} p99 {v['first_chunk_p99']} ms "
                  f"(p99 runs {v['first_chunk_p99_runs']}), gap p1 {v['gap_p1']} ms "
                  f"(runs {v['gap_p1_runs']}), "
                  f"p50 {v['gap_p50']} ms{extra}; machine busy {v['machine_busy_runs']}", flush=True)
        ok_lat = (kv["errors"] == 0 and kv["added_p99"] is not None and kv["added_p99"] <= 50
                  and kv["gap_p1"] is not None and kv["gap_p1"] >= 150)
        self.b.row(f"floor: {label}, {c} streams: keyrelay errors; added first chunk p50 / p99; gap p1",
                   f"{kv['errors']}; {kv['added_p50']} / {kv['added_p99']} ms; {kv['gap_p1']} ms "
                   f"(floor {fv['errors']}; {fv['added_p50']} / {fv['added_p99']} ms; {fv['gap_p1']} ms)",
                   "0; p99 <= 50 ms; p1 >= 150 ms", ok_lat)
        self.b.row(f"floor: {label}, {c} streams: CPU per streamed chunk, keyrelay / floor",
                   f"{o['cpu_per_chunk_ratio']}x "
                   f"({kv['cpu_us_per_chunk'] and round(kv['cpu_us_per_chunk'], 1)}"
                   f" / {fv['cpu_us_per_chunk'] and round(fv['cpu_us_per_chunk'], 1)} us)", "<= 1.2x",
                   o["cpu_per_chunk_ratio"] is not None and o["cpu_per_chunk_ratio"] <= 1.2)
        if memory:
            self.b.row(f"floor: {label}, memory per open stream (RSS at {c} open - idle, / {c})",
                       f"{kv['kb_per_stream']} KB (floor {fv['kb_per_stream']} KB; "
                       f"ratio {_ratio(kv['kb_per_stream'], fv['kb_per_stream'])}x)", "<= 30 KB",
                       kv["kb_per_stream"] <= 30)

