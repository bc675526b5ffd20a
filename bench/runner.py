"""``bench/run``: start the bench mock and keyrelay, measure direct-to-mock and through-keyrelay
alternately, print added latency and ratios for every issue-7 target.

Everything listens on 127.0.0.1 free ports; keyrelay runs as ``keyrelay serve`` (gunicorn + gevent,
config/gunicorn.conf.py) on a temporary SQLite database. Every load run has a request count and a
time cap, the whole run a watchdog (``--max-seconds``), and every process started here is stopped on
exit (by its own pid / process group).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")
MODEL = "gemini-2.5-flash"
GEMINI_BODY = json.dumps(
    {
        "contents": [{"role": "user", "parts": [{"text": "Say hello to the benchmark."}]}],
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 64},
    }
)
OPENAI_BODY = json.dumps(
    {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "temperature": 0.2,
        "max_tokens": 64,
    }
)
OPENAI_STREAM_BODY = json.dumps({**json.loads(OPENAI_BODY), "stream": True})
KEYS = ["bench-key-a", "bench-key-b", "bench-key-c", "bench-key-d"]
BENCH_CLIENT_KEY = "kr-bench00000000000000000000000000000000000000"  # local-only, not a secret

_procs: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], **kw) -> subprocess.Popen:  # noqa: ANN003
    kw.setdefault("cwd", REPO)
    p = subprocess.Popen(args, start_new_session=True, **kw)
    _procs.append(p)
    return p


def stop(p: subprocess.Popen, timeout: float = 10) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the group we created for it (gunicorn master + workers)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    if p in _procs:
        _procs.remove(p)


def stop_all() -> None:
    for p in list(_procs):
        stop(p)


# ----------------------------------------------------------------------------------- processes


def wait_healthy(name: str, proc: subprocess.Popen, url: str, log: Path, timeout: float, interval: float,
                 ready: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url`` until it answers 200 and ``ready()``; fail fast with the log tail if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310
                if r.status == 200 and ready():
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{name} did not become healthy")


class Mock:
    def __init__(self, chunks: int, gap_ms: float, latency_ms: float = 0.0) -> None:
        self.proc = spawn(
            [
                PY,
                "-m",
                "bench.mock",
                "--port",
                "0",
                "--chunks",
                str(chunks),
                "--chunk-gap-ms",
                str(gap_ms),
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"bench mock did not start: {line!r}")
        self.url = line.rsplit("listening on ", 1)[1].strip()
        self.pid = self.proc.pid


class Keyrelay:
    def __init__(self, tmp: Path, mock_url: str, workers: int, log_level: str, name: str,
                 extra: dict | None = None, limits: dict | None = None) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        config = {
            "server": {
                "database": str(self.dir / "keyrelay.db"),
                "log_level": log_level,
                "graceful_timeout": 2,
                "workers": workers,
            },
            "providers": [
                {
                    "name": "gemini",
                    "type": "gemini",
                    "base_url": mock_url + "/v1beta",
                    "keys": KEYS,
                    "models": [MODEL],
                    **({"limits": limits} if limits else {}),
                },
                {"name": "oai", "type": "openai", "base_url": mock_url + "/v1", "keys": KEYS},
            ],
            "models": [
                {"name": "bench", "targets": [{"provider": "gemini", "model": MODEL}]},
                {"name": "bench-openai", "targets": [{"provider": "oai", "model": "gpt-bench"}]},
            ],
            "auth": {"mode": "open"},  # the bench drives keyrelay without client keys
            "catalog": {"sources": []},  # no internet: no background catalog fetches in a measurement
            **(extra or {}),
        }
        cfg = self.dir / "keyrelay.yaml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "keyrelay.log", "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
        self.proc = spawn(
            [
                PY,
                "-m",
                "proxy.cli",
                "serve",
                "--config",
                str(cfg),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.workers = workers
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        wait_healthy("keyrelay", self.proc, self.url + "/healthz", self.dir / "keyrelay.log", timeout, 0.1,
                     ready=lambda: len(self.worker_pids()) == self.workers)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


LITELLM_MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # a local-only bench key, not a secret
# Everything LiteLLM would fetch or report on its own is switched off; any client that still honours the
# proxy variables is pointed at a closed local port, so nothing can leave 127.0.0.1.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no model-price download from GitHub at start
    "LITELLM_TELEMETRY": "False",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "LITELLM_LOG": "ERROR",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


class LiteLLM:
    """The LiteLLM proxy from a separate venv (``--litellm VENV``): one uvicorn worker, no database,
    OpenAI-compatible upstream = the bench mock's /v1, on a free 127.0.0.1 port."""

    def __init__(self, tmp: Path, venv: Path, mock_url: str) -> None:
        self.dir = tmp / "litellm"
        self.dir.mkdir()
        config = {
            "model_list": [
                {
                    "model_name": "bench-openai",
                    "litellm_params": {
                        "model": "openai/gpt-bench",
                        "api_base": mock_url + "/v1",
                        "api_key": "bench-key-a",
                    },
                }
            ],
            "litellm_settings": {"telemetry": False, "set_verbose": False},
            "general_settings": {"master_key": LITELLM_MASTER_KEY},
        }
        cfg = self.dir / "config.yaml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.version = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "litellm.log", "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        env.update(LITELLM_ENV, HOME=str(self.dir))
        started = time.monotonic()
        self.proc = spawn(
            [
                str(venv / "bin" / "litellm"),
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._wait_ready()
        self.startup_s = round(time.monotonic() - started, 1)

    def _wait_ready(self, timeout: float = 90) -> None:
        wait_healthy("litellm", self.proc, self.url + "/health/liveliness", self.dir / "litellm.log",
                     timeout, 0.2)

    def pids(self) -> list[int]:
        """The proxy process and any descendants (with one uvicorn worker it is a single process)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
            todo += [int(k) for k in kids.split()]
        return out

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    return total / TICK


MOCK_PIDS: list[int] = []


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ----------------------------------------------------------------------------------- load runs


@dataclass
class Target:
    name: str
    url: str
    body: str
    headers: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()  # processes whose CPU we account (keyrelay workers)
    unique: str = ""  # a marker in the body made unique per request (bench.load --unique)


def load(
    t: Target,
    *,
    c: int,
    n: int,
    d: float,
    stream: bool = False,
    chunks: int = 0,
    timeout: float = 30,
    ramp: float = 0.0,
) -> dict:
    args = [
        PY,
        "-m",
        "bench.load",
        "--url",
        t.url,
        "--body",
        t.body,
        "-c",
        str(c),
        "-n",
        str(n),
        "-d",
        str(d),
        "--timeout",
        str(timeout),
        "--ramp",
        str(ramp),
    ]
    for h in t.headers:
        args += ["--header", h]
    if t.unique:
        args += ["--unique", t.unique]
    if stream:
        args += ["--stream", "--expect-chunks", str(chunks)]
    cpu0 = cpu_seconds(list(t.pids))
    mock0 = cpu_seconds(MOCK_PIDS)
    busy0 = machine_busy()
    p = spawn(args, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = p.communicate(timeout=d + timeout + 30)
    finally:
        stop(p)
    cpu1 = cpu_seconds(list(t.pids))
    mock1 = cpu_seconds(MOCK_PIDS)
    busy1 = machine_busy()
    res = json.loads(out)
    res["target"] = t.name
    ok = max(1, res["ok"])
    res["mock_cpu_ms_per_req"] = round((mock1 - mock0) * 1000 / ok, 3)
    res["driver_cpu_ms_per_req"] = round(res["driver_cpu_s"] * 1000 / ok, 3)
    # share of the machine's CPU time busy during the run (all processes: ours and anyone else's)
    res["machine_busy"] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3)
    if t.pids:
        res["server_cpu_s"] = round(cpu1 - cpu0, 3)
        res["cpu_ms_per_req"] = round((cpu1 - cpu0) * 1000 / res["ok"], 3) if res["ok"] else None
    return res


def alternate(direct: Target, relay: Target, rounds: int, **kw) -> tuple[list[dict], list[dict]]:  # noqa: ANN003
    """direct, keyrelay, direct, keyrelay, ... so drift in machine load hits both sides alike."""
    ds, rs = [], []
    for _ in range(rounds):
        ds.append(load(direct, **kw))
        rs.append(load(relay, **kw))
    return ds, rs


def median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def med(results: list[dict], *path: str) -> float | None:
    vals = []
    for r in results:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        vals.append(v)
    return median(vals)


def total(results: list[dict], key: str) -> int:
    return sum(r.get(key, 0) for r in results)


def sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


# ----------------------------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.quick = args.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="keyrelay-bench-"))
        self.results: dict = {
            "mode": "quick" if self.quick else "full",
            "load_before": os.getloadavg(),
            "cores": os.cpu_count(),
        }
        self.rows: list[tuple[str, str, str, str]] = []
        self.litellm_rows: list[tuple] = []

    def targets(self, kr: Keyrelay) -> tuple[Target, Target]:
        direct = Target(
            "direct",
            f"{self.mock.url}/v1beta/models/{MODEL}:generateContent",
            GEMINI_BODY,
            ("x-goog-api-key: bench-key-a",),
        )
        relay = Target(
            "keyrelay",
            kr.url + "/v1/chat/completions",
            OPENAI_BODY,
            ("Authorization: Bearer unused",),
            tuple(kr.worker_pids()),
        )
        return direct, relay

    def row(self, target: str, measured: str, goal: str, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
        self.rows.append((target, measured, goal, verdict))
        print(f"  -> {target}: {measured}  [target {goal}: {verdict}]", flush=True)

    def run(self) -> dict:
        q = self.quick
        self.mock = Mock(chunks=10, gap_ms=200)
        MOCK_PIDS[:] = [self.mock.pid]
        if self.a.only:  # one phase alone, with its own gateways
            self.phases()[self.a.only]()
            self.results["load_after"] = os.getloadavg()
            self.results["rows"] = self.rows
            return self.results
        kr = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "w1")
        direct, relay = self.targets(kr)
        print(
            f"mock {self.mock.url} (pid {self.mock.pid}); keyrelay {kr.url} worker {kr.worker_pids()}; "
            f"load {os.getloadavg()}",
            flush=True,
        )
        # warm up both paths (connection pools, imports, code paths)
        load(direct, c=8, n=500, d=5)
        load(relay, c=8, n=1000 if q else 3000, d=10)

        self.latency_c1(direct, relay, rounds=2 if q else 4, n=300 if q else 2000)
        self.throughput(
            direct,
            relay,
            conc=(16, 64) if q else (16, 32, 64),
            rounds=1 if q else 2,
            n=2000 if q else 15000,
            d=3 if q else 8,
        )
        self.openai_dialect(kr, n=1000 if q else 8000, d=3 if q else 8)
        self.streams(direct, relay, c=self.a.streams or (200 if q else 1000), rounds=1 if q else 2)
        if not q:
            self.stream_capacity(direct, relay, 400, "1 worker", "streams_400")
        self.memory(relay, kr, n=self.a.requests or (10_000 if q else 100_000), d=60 if q else 300)
        kr.close()
        self.two_workers(direct, n=2000 if q else 15000, d=3 if q else 8, rounds=1 if q else 2)
        for name, phase in self.phases().items():
            if name != "floor":  # "streams" runs the floor's non-stream part first
                phase()
        if self.a.litellm:
            self.litellm(Path(self.a.litellm), rounds=2 if q else 3)
        self.results["load_after"] = os.getloadavg()
        self.results["rows"] = self.rows
        return self.results

    def phases(self) -> dict[str, Callable[[], None]]:
        """The phases that start their own gateways, in order (``--only NAME`` runs one alone)."""
        from bench import yardstick  # imports this module

        q = self.quick
        return {
            # 5 rounds: keyed / open is a ~10 % difference and one round's throughput moves by more
            "client_keys": lambda: self.client_keys(n=2000 if q else 15000, d=3 if q else 8,
                                                    rounds=2 if q else 5),
            "pacing": lambda: self.pacing(n=2000 if q else 15000, d=3 if q else 8, rounds=2 if q else 3),
            "cache": lambda: self.cache_hits(n=1000 if q else 5000, d=3 if q else 8, rounds=2 if q else 3),
            "floor": lambda: yardstick.Yardstick(self).plain(),
            "streams": lambda: yardstick.Yardstick(self).streams(),
        }

    def latency_c1(self, direct: Target, relay: Target, rounds: int, n: int) -> None:
        print(
            f"\n[1] concurrency 1, non-streaming Gemini: {rounds} rounds x {n} requests per side", flush=True
        )
        ds, rs = alternate(direct, relay, rounds, c=1, n=n, d=30)
        out = {}
        for p in ("p50", "p90", "p99"):
            out[p] = {"direct": med(ds, "latency_ms", p), "keyrelay": med(rs, "latency_ms", p)}
            out[p]["added"] = sub(out[p]["keyrelay"], out[p]["direct"])
            print(
                f"  latency {p}: direct {out[p]['direct']} ms, keyrelay {out[p]['keyrelay']} ms, "
                f"added {out[p]['added']} ms",
                flush=True,
            )
        out["errors"] = total(ds, "errors") + total(rs, "errors")
        out["cpu_ms_per_req"] = med(rs, "cpu_ms_per_req")
        self.results["c1"] = {"summary": out, "direct": ds, "keyrelay": rs}
        self.row(
            "added latency p50, c=1, Gemini",
            f"{out['p50']['added']} ms",
            "<= 1 ms",
            out["p50"]["added"] is not None and out["p50"]["added"] <= 1,
        )
        self.row(
            "added latency p99, c=1, Gemini",
            f"{out['p99']['added']} ms",
            "<= 3 ms",
            out["p99"]["added"] is not None and out["p99"]["added"] <= 3,
        )
        self.row(
            "worker CPU per request, c=1",
            f"{out['cpu_ms_per_req']} ms",
            "<= 1 ms",
            out["cpu_ms_per_req"] is not None and out["cpu_ms_per_req"] <= 1,
        )

    def throughput(
        self, direct: Target, relay: Target, conc: tuple[int, ...], rounds: int, n: int, d: float
    ) -> None:
        print(f"\n[2] throughput through one worker, concurrency {conc}", flush=True)
        out = {}
        for c in conc:
            ds, rs = alternate(direct, relay, rounds, c=c, n=n, d=d)
            o = {
                "direct_rps": med(ds, "rps"),
                "keyrelay_rps": med(rs, "rps"),
                "keyrelay_p50_ms": med(rs, "latency_ms", "p50"),
                "keyrelay_p99_ms": med(rs, "latency_ms", "p99"),
                "direct_p50_ms": med(ds, "latency_ms", "p50"),
                "cpu_ms_per_req": med(rs, "cpu_ms_per_req"),
                "errors": total(rs, "errors") + total(ds, "errors"),
                "driver_cpu_ms_per_req": med(rs, "driver_cpu_ms_per_req"),
                "mock_cpu_ms_per_req": med(rs, "mock_cpu_ms_per_req"),
                "machine_busy": med(rs, "machine_busy"),
            }
            o["ratio_keyrelay_over_direct"] = ratio(o["keyrelay_rps"], o["direct_rps"])
            out[c] = {"summary": o, "direct": ds, "keyrelay": rs}
            print(
                f"  c={c}: keyrelay {o['keyrelay_rps']} req/s (p50 {o['keyrelay_p50_ms']} ms, "
                f"p99 {o['keyrelay_p99_ms']} ms, worker CPU {o['cpu_ms_per_req']} ms/req), direct "
                f"{o['direct_rps']} req/s, errors {o['errors']}; driver {o['driver_cpu_ms_per_req']} ms/req, "
                f"mock {o['mock_cpu_ms_per_req']} ms/req, machine busy {o['machine_busy']}",
                flush=True,
            )
        self.results["throughput"] = out
        worst = min(out[c]["summary"]["keyrelay_rps"] or 0 for c in conc)
        cpu = max(out[c]["summary"]["cpu_ms_per_req"] or 99 for c in conc)
        self.row(
            f"throughput, 1 worker, c={min(conc)}..{max(conc)} (lowest)",
            f"{worst} req/s",
            ">= 1000 req/s",
            worst >= 1000,
        )
        self.row("worker CPU per request under load (highest)", f"{cpu} ms", "<= 1 ms", cpu <= 1)

    def openai_dialect(self, kr: Keyrelay, n: int, d: float) -> None:
        print("\n[2b] OpenAI-dialect upstream (pass-through adapter), c=16", flush=True)
        direct = Target(
            "direct-openai",
            f"{self.mock.url}/v1/chat/completions",
            json.dumps({**json.loads(OPENAI_BODY), "model": "gpt-bench"}),
            ("Authorization: Bearer bench-key-a",),
        )
        relay = Target(
            "keyrelay-openai",
            kr.url + "/v1/chat/completions",
            json.dumps({**json.loads(OPENAI_BODY), "model": "bench-openai"}),
            (),
            tuple(kr.worker_pids()),
        )
        ds, rs = alternate(direct, relay, 1, c=16, n=n, d=d)
        o = {
            "direct_rps": med(ds, "rps"),
            "keyrelay_rps": med(rs, "rps"),
            "cpu_ms_per_req": med(rs, "cpu_ms_per_req"),
            "errors": total(rs, "errors"),
        }
        self.results["openai_c16"] = o
        print(
            f"  keyrelay {o['keyrelay_rps']} req/s, worker CPU {o['cpu_ms_per_req']} ms/req, "
            f"direct {o['direct_rps']} req/s",
            flush=True,
        )
        self.row(
            "throughput, OpenAI-dialect upstream, c=16 (info)", f"{o['keyrelay_rps']} req/s", "(none)", None
        )

    def streams(self, direct: Target, relay: Target, c: int, rounds: int) -> None:
        """c streams open at once in steady state: stream starts spread over ~one stream's length (2 s),
        each connection running 2 streams back to back; then, for information, all c at the same instant."""
        print(f"\n[3] {c} concurrent streams, 10 chunks 200 ms apart: {rounds} rounds per side", flush=True)
        d_stream = Target(
            "direct-stream",
            f"{self.mock.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            GEMINI_BODY,
            direct.headers,
        )
        r_stream = Target("keyrelay-stream", relay.url, OPENAI_STREAM_BODY, relay.headers, relay.pids)
        load(r_stream, c=min(c, 200), n=min(c, 200), d=20, stream=True, chunks=10)  # warm-up
        kw = {"c": c, "d": 40, "stream": True, "chunks": 10, "timeout": 30}
        ds, rs = alternate(d_stream, r_stream, rounds, n=2 * c, ramp=2.0, **kw)
        o = self._stream_summary(ds, rs)
        self.results["streams"] = {"summary": o, "direct": ds, "keyrelay": rs}
        self._print_streams("steady", o)
        self.row(f"{c} concurrent streams (steady state): errors", str(o["errors"]), "0", o["errors"] == 0)
        added = o["first_chunk_p99"]["added"]
        self.row(
            f"{c} streams: added time-to-first-chunk p99",
            f"{added} ms",
            "<= 50 ms",
            added is not None and added <= 50,
        )
        gap = o["gap_ms_keyrelay"]["p1"]
        self.row(
            f"{c} streams: chunk inter-arrival p1 / p50 (no batching)",
            f"{gap} / {o['gap_ms_keyrelay']['p50']} ms",
            "~200 ms, none near 0",
            gap is not None and gap >= 150,
        )
        bd, br = alternate(d_stream, r_stream, 1, n=c, **kw)
        b = self._stream_summary(bd, br)
        self.results["streams_burst"] = {"summary": b, "direct": bd, "keyrelay": br}
        self._print_streams("burst", b)
        self.row(
            f"{c} streams all started at the same instant (info): errors; added first-chunk p50 / p99",
            f"{b['errors']}; {b['first_chunk_p50']['added']} / {b['first_chunk_p99']['added']} ms",
            "(none)",
            None,
        )

    def stream_capacity(self, direct: Target, relay: Target, c: int, label: str, key: str) -> None:
        """One more steady-state stream measurement (1 round per side), reported for information."""
        d_stream = Target(
            "direct-stream",
            f"{self.mock.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            GEMINI_BODY,
            direct.headers,
        )
        r_stream = Target("keyrelay-stream", relay.url, OPENAI_STREAM_BODY, relay.headers, relay.pids)
        print(f"\n[3+] {label}: {c} concurrent streams (steady state)", flush=True)
        ds, rs = alternate(
            d_stream, r_stream, 1, c=c, n=2 * c, d=40, stream=True, chunks=10, timeout=30, ramp=2.0
        )
        o = self._stream_summary(ds, rs)
        self.results[key] = {"summary": o, "direct": ds, "keyrelay": rs}
        self._print_streams(label, o)
        self.row(
            f"{label}: {c} concurrent streams: errors; added first-chunk p99; chunk gap p1 (info)",
            f"{o['errors']}; {o['first_chunk_p99']['added']} ms; {o['gap_ms_keyrelay']['p1']} ms",
            "(none)",
            None,
        )

    @staticmethod
    def _stream_summary(ds: list[dict], rs: list[dict]) -> dict:
        o = {
            "errors": total(rs, "errors"),
            "direct_errors": total(ds, "errors"),
            "error_kinds": [r["error_kinds"] for r in rs],
            "max_inflight": max((r.get("max_inflight", 0) for r in rs), default=0),
        }
        for p in ("p50", "p99"):
            fc = {
                "direct": med(ds, "stream", "first_chunk_ms", p),
                "keyrelay": med(rs, "stream", "first_chunk_ms", p),
            }
            fc["added"] = sub(fc["keyrelay"], fc["direct"])
            o[f"first_chunk_{p}"] = fc
        o["gap_ms_keyrelay"] = {p: med(rs, "stream", "gap_ms", p) for p in ("min", "p1", "p50", "p99", "max")}
        o["gap_ms_direct"] = {p: med(ds, "stream", "gap_ms", p) for p in ("min", "p1", "p50", "p99", "max")}
        o["chunks_min"] = min((r.get("stream", {}).get("chunks_min", 0) for r in rs), default=0)
        o["cpu_ms_per_stream"] = med(rs, "cpu_ms_per_req")
        return o

    @staticmethod
    def _print_streams(kind: str, o: dict) -> None:
        print(
            f"  {kind}: errors {o['errors']} (direct {o['direct_errors']}), "
            f"max in flight {o['max_inflight']}, first chunk added p50 {o['first_chunk_p50']['added']} ms, "
            f"p99 {o['first_chunk_p99']['added']} ms, "
            f"worker CPU {o['cpu_ms_per_stream']} ms/stream; chunk gaps keyrelay {o['gap_ms_keyrelay']} "
            f"direct {o['gap_ms_direct']}",
            flush=True,
        )

    def memory(self, relay: Target, kr: Keyrelay, n: int, d: float) -> None:
        pid = kr.worker_pids()[0]
        print(f"\n[4] memory: {n} requests at c=32 through one worker (pid {pid}), RSS sampled", flush=True)
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sampler() -> None:
            t0 = time.monotonic()
            while not done.is_set():
                try:
                    samples.append((time.monotonic() - t0, rss_mb(pid)))
                except OSError:
                    return
                done.wait(0.25)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        res = load(relay, c=32, n=n, d=d)
        done.set()
        th.join()
        half = res["elapsed_s"] / 2
        first = [m for t, m in samples if t <= half]
        second = [m for t, m in samples if t > half]
        o = {
            "requests_ok": res["ok"],
            "errors": res["errors"],
            "rps": res["rps"],
            "elapsed_s": res["elapsed_s"],
            "rss_start_mb": round(samples[0][1], 1) if samples else None,
            "rss_max_mb": round(max(m for _, m in samples), 1) if samples else None,
            "second_half_min_mb": round(min(second), 1) if second else None,
            "second_half_max_mb": round(max(second), 1) if second else None,
            "first_half_max_mb": round(max(first), 1) if first else None,
            "cpu_ms_per_req": res.get("cpu_ms_per_req"),
            "samples": [(round(t, 2), round(m, 2)) for t, m in samples[:: max(1, len(samples) // 60)]],
        }
        if second:
            o["second_half_growth_mb"] = round(second[-1] - second[0], 2)
        self.results["memory"] = o
        print(
            f"  {res['ok']} ok / {res['errors']} errors in {res['elapsed_s']} s ({res['rps']} req/s); "
            "RSS start "
            f"{o['rss_start_mb']} MB, max {o['rss_max_mb']} MB, second half {o['second_half_min_mb']}.."
            f"{o['second_half_max_mb']} MB",
            flush=True,
        )
        self.row(
            "RSS per worker (max over the run)",
            f"{o['rss_max_mb']} MB",
            "<= 80 MB",
            o["rss_max_mb"] is not None and o["rss_max_mb"] <= 80,
        )
        growth = o.get("second_half_growth_mb")
        self.row(
            f"RSS growth over the second half of {res['ok']} requests",
            f"{growth} MB ({o['second_half_min_mb']}..{o['second_half_max_mb']})",
            "flat (< 2 MB)",
            growth is not None and abs(growth) < 2 and res["ok"] >= n * 0.99,
        )

    def two_workers(self, direct: Target, n: int, d: float, rounds: int) -> None:
        print("\n[5] 2 workers vs 1 worker, c=64 (both instances up, measured alternately)", flush=True)
        one = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "x1")
        two = Keyrelay(self.tmp, self.mock.url, 2, self.a.log_level, "x2")
        try:
            t1 = Target(
                "keyrelay-1w", one.url + "/v1/chat/completions", OPENAI_BODY, (), tuple(one.worker_pids())
            )
            t2 = Target(
                "keyrelay-2w", two.url + "/v1/chat/completions", OPENAI_BODY, (), tuple(two.worker_pids())
            )
            load(t1, c=16, n=1000, d=5)
            load(t2, c=16, n=2000, d=5)
            r1, r2 = alternate(t1, t2, rounds, c=64, n=n, d=d)
            if not self.quick:
                self.stream_capacity(direct, t2, self.a.streams or 1000, "2 workers", "streams_2w")
        finally:
            one.close()
            two.close()
        o = {
            "one_worker_rps": med(r1, "rps"),
            "two_workers_rps": med(r2, "rps"),
            "errors": total(r1, "errors") + total(r2, "errors"),
            "driver_cpu_ms_per_req": med(r2, "driver_cpu_ms_per_req"),
            "mock_cpu_ms_per_req": med(r2, "mock_cpu_ms_per_req"),
            "machine_busy_1w": med(r1, "machine_busy"),
            "machine_busy_2w": med(r2, "machine_busy"),
            "one_worker_cpu_ms_per_req": med(r1, "cpu_ms_per_req"),
            "two_workers_cpu_ms_per_req": med(r2, "cpu_ms_per_req"),
        }
        o["ratio"] = ratio(o["two_workers_rps"], o["one_worker_rps"])
        self.results["two_workers"] = {"summary": o, "one": r1, "two": r2}
        print(
            f"  1 worker {o['one_worker_rps']} req/s, 2 workers {o['two_workers_rps']} req/s: "
            f"ratio {o['ratio']}; worker CPU {o['one_worker_cpu_ms_per_req']} / "
            f"{o['two_workers_cpu_ms_per_req']} "
            f"ms/req, machine busy {o['machine_busy_1w']} / {o['machine_busy_2w']}, driver "
            f"{o['driver_cpu_ms_per_req']} ms/req, mock {o['mock_cpu_ms_per_req']} ms/req",
            flush=True,
        )
        self.row(
            "2 workers / 1 worker throughput, c=64",
            f"{o['ratio']}x ({o['two_workers_rps']} / {o['one_worker_rps']} req/s)",
            ">= 1.6x",
            o["ratio"] is not None and o["ratio"] >= 1.6,
        )

    def client_keys(self, n: int, d: float, rounds: int) -> None:
        """Issue 13: a client key with limits, a budget and usage recording vs ``auth.mode: open``."""
        print("\n[6] client key + limits + budget + usage vs open, 1 worker, c=16 and c=64", flush=True)
        keyed = {"auth": {"mode": "keys"}, "prices": {MODEL: {"input": 0.3, "output": 2.5}},
                 "clients": [{"name": "bench", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000, "tpm": 10**12,
                              "max_concurrent": 10_000, "budget_usd": 1_000_000, "budget_period": "month"}]}
        kopen = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "open")
        kkeys = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "keys", keyed)
        try:
            t_open = Target("open", kopen.url + "/v1/chat/completions", OPENAI_BODY, (),
                            tuple(kopen.worker_pids()))
            t_keys = Target("keyed", kkeys.url + "/v1/chat/completions", OPENAI_BODY,
                            (f"Authorization: Bearer {BENCH_CLIENT_KEY}",), tuple(kkeys.worker_pids()))
            for t_ in (t_open, t_keys):
                warm = load(t_, c=16, n=1000, d=5)
                if warm["errors"]:
                    raise RuntimeError(f"{t_.name}: {warm['errors']} errors while warming up")
            out: dict = {}
            for c in (16, 64):
                r_open, r_keys = alternate(t_open, t_keys, rounds, c=c, n=n, d=d)
                o = {"open_rps": med(r_open, "rps"), "keyed_rps": med(r_keys, "rps"),
                     "open_cpu_ms_per_req": med(r_open, "cpu_ms_per_req"),
                     "keyed_cpu_ms_per_req": med(r_keys, "cpu_ms_per_req"),
                     "errors": total(r_open, "errors") + total(r_keys, "errors")}
                o["ratio"] = ratio(o["keyed_rps"], o["open_rps"])
                out[f"c{c}"] = o
                print(f"  c={c}: open {o['open_rps']} req/s ({o['open_cpu_ms_per_req']} ms CPU/req), keyed "
                      f"{o['keyed_rps']} req/s ({o['keyed_cpu_ms_per_req']} ms CPU/req): ratio {o['ratio']}, "
                      f"errors {o['errors']}", flush=True)
                self.row(f"client key + limits + usage / open throughput, c={c}",
                         f"{o['ratio']} ({o['keyed_rps']} / {o['open_rps']} req/s)", ">= 0.9",
                         o["ratio"] is not None and o["ratio"] >= 0.9 and not o["errors"])
            self.results["client_keys"] = out
        finally:
            kopen.close()
            kkeys.close()

    def pacing(self, n: int, d: float, rounds: int) -> None:
        """Issue 15: quota pacing with limits known (every request admitted from a slice leased in the
        store) vs ``key_manager.pacing: false``, alternated; the limits are never reached."""
        print("\n[7] quota pacing on (limits known) vs off, 1 worker, c=16", flush=True)
        high = {MODEL: {"rpm": 10**9, "tpm": 10**12, "rpd": 10**12}}
        koff = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "pacing-off",
                        {"key_manager": {"pacing": False}})
        kon = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "pacing-on", limits=high)
        try:
            url = "/v1/chat/completions"
            t_off = Target("off", koff.url + url, OPENAI_BODY, (), tuple(koff.worker_pids()))
            t_on = Target("on", kon.url + url, OPENAI_BODY, (), tuple(kon.worker_pids()))
            for t_ in (t_off, t_on):
                load(t_, c=16, n=1000, d=5)
            r_off, r_on = alternate(t_off, t_on, rounds, c=16, n=n, d=d)
            o = {"off_rps": med(r_off, "rps"), "on_rps": med(r_on, "rps"),
                 "off_cpu_ms_per_req": med(r_off, "cpu_ms_per_req"),
                 "on_cpu_ms_per_req": med(r_on, "cpu_ms_per_req"),
                 "errors": total(r_off, "errors") + total(r_on, "errors")}
            o["ratio"] = ratio(o["on_rps"], o["off_rps"])
            print(f"  off {o['off_rps']} req/s ({o['off_cpu_ms_per_req']} ms CPU/req), on {o['on_rps']} "
                  f"req/s ({o['on_cpu_ms_per_req']} ms CPU/req): ratio {o['ratio']}, errors {o['errors']}",
                  flush=True)
            self.row("quota pacing on / off throughput, c=16",
                     f"{o['ratio']} ({o['on_rps']} / {o['off_rps']} req/s)", ">= 0.95",
                     o["ratio"] is not None and o["ratio"] >= 0.95 and not o["errors"])
            self.results["pacing"] = o
        finally:
            koff.close()
            kon.close()
    def cache_hits(self, n: int, d: float, rounds: int) -> None:
        """Issue 17: the response cache through the same gateway (1 worker): a HIT (the same request
        again), a MISS (every request unique: lookup, upstream call, store) and no cache at all
        (``Cache-Control: no-store``), measured in turn, at c=1 (latency) and c=16 (throughput). The
        mock upstream answers at once: a real upstream's latency would only widen the gap."""
        print("\n[8] response cache: HIT vs MISS vs no-store through one gateway, 1 worker", flush=True)
        cached = {"cache": {"enabled": True, "max_entries": 1_000_000, "max_bytes": 2**31}}
        kr = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "cache", cached)
        marker = "U" * 16
        unique_body = json.dumps({**json.loads(OPENAI_BODY),
                                  "messages": [{"role": "user", "content": f"Say hello {marker}."}]})
        try:
            url, pids = kr.url + "/v1/chat/completions", tuple(kr.worker_pids())
            targets = [Target("hit", url, OPENAI_BODY, (), pids),
                       Target("miss", url, unique_body, (), pids, unique=marker),
                       Target("no-store", url, OPENAI_BODY, ("Cache-Control: no-store",), pids)]
            for t_ in targets:
                warm = load(t_, c=8, n=500, d=5)
                if warm["errors"]:
                    raise RuntimeError(f"{t_.name}: {warm['errors']} errors while warming up")
            out: dict = {}
            for c, reqs in ((1, max(200, n // 4)), (16, n)):
                runs: dict[str, list[dict]] = {t_.name: [] for t_ in targets}
                for _ in range(rounds):
                    for t_ in targets:
                        runs[t_.name].append(load(t_, c=c, n=reqs, d=d))
                o = {name: {"p50_ms": med(rs, "latency_ms", "p50"), "p99_ms": med(rs, "latency_ms", "p99"),
                            "rps": med(rs, "rps"), "cpu_ms_per_req": med(rs, "cpu_ms_per_req"),
                            "errors": total(rs, "errors")} for name, rs in runs.items()}
                out[f"c{c}"] = o
                print(f"  c={c}: " + "; ".join(
                    f"{name} p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms, {v['rps']} req/s, "
                    f"{v['cpu_ms_per_req']} ms CPU/req, errors {v['errors']}" for name, v in o.items()),
                    flush=True)
            self.results["cache"] = out
            c1, c16 = out["c1"], out["c16"]
            hit_ms, miss_ms = c1["hit"]["p50_ms"], c1["miss"]["p50_ms"]
            self.row("cache HIT vs MISS latency p50, c=1", f"{hit_ms} / {miss_ms} ms", "hit < miss",
                     bool(hit_ms and miss_ms and hit_ms < miss_ms))
            hit_rps, miss_rps = c16["hit"]["rps"], c16["miss"]["rps"]
            self.row("cache HIT vs MISS throughput, c=16", f"{hit_rps} / {miss_rps} req/s", "hit > miss",
                     bool(hit_rps and miss_rps and hit_rps > miss_rps))
        finally:
            kr.close()

    def litellm(self, venv: Path, rounds: int) -> None:
        """keyrelay vs LiteLLM, both one worker in front of the same mock's OpenAI dialect, measured in
        turn with direct-to-mock (direct, keyrelay, LiteLLM, direct, ...)."""
        q = self.quick
        print(f"\n[6] LiteLLM ({venv}) vs keyrelay, OpenAI-dialect upstream, one worker each", flush=True)
        kr = Keyrelay(self.tmp, self.mock.url, 1, self.a.log_level, "vs-litellm")
        lt = LiteLLM(self.tmp, venv, self.mock.url)
        try:
            body = json.dumps({**json.loads(OPENAI_BODY), "model": "bench-openai"})
            sbody = json.dumps({**json.loads(OPENAI_STREAM_BODY), "model": "bench-openai"})
            mock = f"{self.mock.url}/v1/chat/completions"
            auth = ("Authorization: Bearer bench-key-a",)
            lauth = (f"Authorization: Bearer {LITELLM_MASTER_KEY}",)
            kpids, lpids = tuple(kr.worker_pids()), tuple(lt.pids())
            plain = [
                Target("direct", mock, body.replace("bench-openai", "gpt-bench"), auth),
                Target("keyrelay", kr.url + "/v1/chat/completions", body, (), kpids),
                Target("litellm", lt.url + "/v1/chat/completions", body, lauth, lpids),
            ]
            stream = [
                Target("direct", mock, sbody.replace("bench-openai", "gpt-bench"), auth),
                Target("keyrelay", kr.url + "/v1/chat/completions", sbody, (), kpids),
                Target("litellm", lt.url + "/v1/chat/completions", sbody, lauth, lpids),
            ]
            print(
                f"  LiteLLM {lt.version} at {lt.url} (pids {list(lpids)}, ready in {lt.startup_s} s); "
                f"keyrelay {kr.url} worker {list(kpids)}; load {os.getloadavg()}",
                flush=True,
            )
            rss: dict[str, float] = {"keyrelay": 0.0, "litellm": 0.0}

            def sample_rss() -> None:
                rss["keyrelay"] = max(rss["keyrelay"], sum(rss_mb(p) for p in kpids))
                rss["litellm"] = max(rss["litellm"], sum(rss_mb(p) for p in lpids))

            for t in plain:  # warm-up
                load(t, c=8, n=500, d=5)
            load(stream[2], c=16, n=16, d=10, stream=True, chunks=10)
            sample_rss()

            def turns(ts: list[Target], **kw) -> dict[str, list[dict]]:  # noqa: ANN003
                got: dict[str, list[dict]] = {t.name: [] for t in ts}
                for _ in range(rounds):
                    for t in ts:
                        got[t.name].append(load(t, **kw))
                    sample_rss()
                return got

            c1 = turns(plain, c=1, n=300 if q else 1000, d=10 if q else 20)
            c16 = turns(plain, c=16, n=20000, d=4 if q else 8)
            st = turns(stream, c=16, n=32, d=30, ramp=2.0, stream=True, chunks=10, timeout=30)
        finally:
            lt.close()
            kr.close()
        o: dict = {"litellm_version": lt.version, "litellm_startup_s": lt.startup_s, "rounds": rounds}
        names = ("direct", "keyrelay", "litellm")
        for p in ("p50", "p99"):
            o[f"c1_{p}"] = {n: med(c1[n], "latency_ms", p) for n in names}
        o["c16_rps"] = {n: med(c16[n], "rps") for n in names}
        o["c16_cpu_ms_per_req"] = {n: med(c16[n], "cpu_ms_per_req") for n in names[1:]}
        o["stream_first_chunk_p50"] = {n: med(st[n], "stream", "first_chunk_ms", "p50") for n in names}
        o["rss_mb"] = {n: round(v, 1) for n, v in rss.items()}
        o["errors"] = {
            n: total(c1[n], "errors") + total(c16[n], "errors") + total(st[n], "errors") for n in names
        }
        o["error_kinds"] = {
            n: [r["error_kinds"] for r in c1[n] + c16[n] + st[n] if r["errors"]] for n in names
        }
        o["machine_busy_c16"] = {n: med(c16[n], "machine_busy") for n in names}
        self.results["litellm"] = {"summary": o, "c1": c1, "c16": c16, "streams16": st}

        def added(key: str) -> tuple[float | None, float | None]:
            d = o[key]
            return sub(d["keyrelay"], d["direct"]), sub(d["litellm"], d["direct"])

        table = [
            ("added latency p50, c=1 (ms)", *added("c1_p50")),
            ("added latency p99, c=1 (ms)", *added("c1_p99")),
            ("throughput, c=16 (req/s)", o["c16_rps"]["keyrelay"], o["c16_rps"]["litellm"]),
            ("worker CPU per request, c=16 (ms)", *(o["c16_cpu_ms_per_req"][n] for n in names[1:])),
            ("added time-to-first-chunk p50, 16 streams (ms)", *added("stream_first_chunk_p50")),
            ("RSS per worker, max (MB)", o["rss_mb"]["keyrelay"], o["rss_mb"]["litellm"]),
            ("errors", o["errors"]["keyrelay"], o["errors"]["litellm"]),
        ]
        o["table"] = [(label, k, v, ratio(v, k)) for label, k, v in table]
        self.litellm_rows = o["table"]
        print(
            f"  direct: c=1 p50 {o['c1_p50']['direct']} ms, c=16 {o['c16_rps']['direct']} req/s, "
            f"first chunk p50 {o['stream_first_chunk_p50']['direct']} ms; errors {o['errors']}; "
            f"machine busy at c=16 {o['machine_busy_c16']}",
            flush=True,
        )
        for label, k, v, r in o["table"]:
            print(f"  -> {label}: keyrelay {k}, LiteLLM {v}, LiteLLM / keyrelay {r}", flush=True)

    def close(self) -> None:
        stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small version for a smoke check (< 60 s)")
    ap.add_argument(
        "--requests", type=int, default=0, help="requests in the memory run (default 100000, quick 10000)"
    )
    ap.add_argument("--streams", type=int, default=0, help="concurrent streams (default 1000, quick 200)")
    ap.add_argument("--log-level", default="info", help="keyrelay log level (default info, as shipped)")
    ap.add_argument("--json", help="also write every raw result to this file")
    ap.add_argument("--only", choices=("client_keys", "pacing", "cache", "floor", "streams", "postgres"),
                    help="run one phase alone: client_keys [6] keyed vs open, pacing [7] quota pacing "
                         "on / off, cache [8] HIT vs MISS, floor [9] keyrelay / the floor (bench/floor.py) "
                         "non-stream at c=16, streams [9]+[10] the floor phase, then 1,000 streams through "
                         "1 worker and 2,000 through 2, as ratios to the floor; postgres: bench/pg_scale.py "
                         "(1 instance on SQLite vs 2 on PostgreSQL behind nginx)")
    ap.add_argument("--stream-auth", choices=("keys", "open"), default="keys",
                    help="keyrelay in phase [10] (streams): a client key with every limit and usage "
                         "recording (default, as in production) or auth.mode: open")
    ap.add_argument(
        "--litellm",
        metavar="VENV",
        help="also measure the LiteLLM proxy in this venv (pip install 'litellm[proxy]'), same mock",
    )
    ap.add_argument(
        "--max-seconds", type=float, default=0, help="watchdog (default 1500, quick 300; +240 with --litellm)"
    )
    args = ap.parse_args(argv)
    if args.only == "postgres":  # its own servers (PostgreSQL, nginx, two instances) and watchdog
        from bench import pg_scale

        return pg_scale.main(["--json", args.json] if args.json else [])
    limit = args.max_seconds or (300 if args.quick else 1500) + (240 if args.litellm else 0)

    def watchdog(*_: object) -> None:
        stop_all()
        sys.stderr.write(f"bench/run: stopped by the {limit:.0f} s watchdog\n")
        os._exit(3)

    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: watchdog())
    bench = Bench(args)
    started = time.monotonic()
    try:
        results = bench.run()
    except KeyboardInterrupt:
        return 130
    finally:
        bench.close()
        timer.cancel()
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(
        f"\n== keyrelay bench ({results['mode']}), {results['cores']} cores, load average before "
        f"{tuple(round(x, 2) for x in results['load_before'])}, after "
        f"{tuple(round(x, 2) for x in results['load_after'])}, {results['wall_s']} s =="
    )
    print("| target | measured | goal | verdict |\n|---|---|---|---|")
    for r in bench.rows:
        print("| " + " | ".join(r) + " |")
    if bench.litellm_rows:
        s = results["litellm"]["summary"]
        print(f"\nLiteLLM {s['litellm_version']} vs keyrelay, same mock (OpenAI dialect), one worker each:")
        print("| measure | keyrelay | LiteLLM | LiteLLM ÷ keyrelay |\n|---|---|---|---|")
        for r in bench.litellm_rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from bench import runner  # the module under its own name: bench.yardstick shares its state

    sys.exit(runner.main())
