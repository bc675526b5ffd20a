"""Issue 20 bench: 1 keyrelay instance on SQLite vs 2 instances on one PostgreSQL behind nginx.

Starts a throwaway PostgreSQL (``tests/pg_server.PgServer``: its own data directory, a free 127.0.0.1
port, fsync off), the bench mock, and per auth mode (``keyed``: a client key with rpm / tpm /
concurrency limits, a budget, prices and usage recording, as ``bench/runner.py`` phase [6]; ``open``:
``auth.mode: open``) these setups, all up at once and measured alternately, round after round:

- ``sqlite-1``: one instance, ``--workers W``, on a SQLite file, addressed directly;
- ``pg-1``: instance A of the pair below, addressed directly (PostgreSQL's cost without nginx);
- ``pg-2+nginx``: instances A and B (W workers each) on one PostgreSQL database, behind nginx
  (round robin, keep-alive upstream connections, access log off);

and ``direct`` (the bench mock without keyrelay) for the added latency. Per round: concurrency 1
(latency; added = setup minus direct) and concurrency ``-c`` (throughput, closed loop). Prints every
run's figures and the medians, and writes the raw results with ``--json``.

Run: ``flock /tmp/bench.lock python -m bench.pg_scale [--workers 1] [--rounds 3] [-c 32]``.
Everything started here is stopped on exit (a watchdog too); nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.runner import (
    BENCH_CLIENT_KEY,
    GEMINI_BODY,
    MOCK_PIDS,
    MODEL,
    OPENAI_BODY,
    REPO,
    Keyrelay,
    Mock,
    Target,
    cpu_seconds,
    free_port,
    load,
    med,
    ratio,
    spawn,
    stop,
    stop_all,
    sub,
    wait_healthy,
)
from tests.pg_server import PgServer

# bench/runner.py phase [6]: a client key whose limits are never reached, prices, usage recording
KEYED = {"auth": {"mode": "keys"}, "prices": {MODEL: {"input": 0.3, "output": 2.5}},
         "clients": [{"name": "bench", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000, "tpm": 10**12,
                      "max_concurrent": 10_000, "budget_usd": 1_000_000, "budget_period": "month"}]}
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SETUPS = ("sqlite-1", "pg-1", "pg-2+nginx")


class Nginx:
    """nginx in the foreground with config/nginx.conf's site, its upstream rewritten to ``ports``."""

    def __init__(self, tmp: Path, name: str, ports: list[int]) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = (REPO / "config" / "nginx.conf").read_text()
        site = site.split("# BEGIN TLS EXAMPLE")[0] + site.split("# END TLS EXAMPLE")[1]
        site, n_listen = re.subn(r"^(\s*)listen\s+[^;]+;", rf"\1listen 127.0.0.1:{self.port};", site,
                                 flags=re.M)
        servers = "\n    ".join(f"server 127.0.0.1:{p};" for p in ports)
        site, n_up = re.subn(r"server\s+127\.0\.0\.1:\d+;[^\n]*", servers, site)
        if (n_listen, n_up) != (1, 1):
            raise RuntimeError("config/nginx.conf changed shape: update bench/pg_scale.py")
        temp = "\n".join(f"    {k}_temp_path {self.dir}/{k};" for k in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = self.dir / "nginx.conf"
        conf.write_text(("user root;\n" if os.geteuid() == 0 else "")
                        + f"daemon off;\npid {self.dir}/nginx.pid;\nerror_log {self.dir}/error.log warn;\n"
                        f"events {{ worker_connections 4096; }}\n"
                        f"http {{\n    access_log off;\n{temp}\n{site}\n}}\n")
        self.proc = spawn([NGINX, "-c", str(conf), "-p", str(self.dir)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.STDOUT)
        wait_healthy("nginx", self.proc, self.url + "/healthz", self.dir / "error.log", 15, 0.1)

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [self.proc.pid, *(int(p) for p in out.split())]

    def close(self) -> None:
        stop(self.proc)


def postgres_pids(pg: PgServer) -> list[int]:
    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [master, *(int(p) for p in out.split())]


class Scale:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.tmp = Path(tempfile.mkdtemp(prefix="keyrelay-pgscale-"))
        self.pg: PgServer | None = None
        self.results: dict = {"workers_per_instance": args.workers, "rounds": args.rounds,
                              "concurrency": args.concurrency, "cores": os.cpu_count(),
                              "load_before": os.getloadavg(), "modes": {}}

    def instance(self, name: str, mode: str, database: str) -> Keyrelay:
        extra = dict(KEYED) if mode == "keyed" else {}
        extra["server"] = {"database": database, "log_level": self.a.log_level, "graceful_timeout": 2,
                           "workers": self.a.workers}
        return Keyrelay(self.tmp, self.mock.url, self.a.workers, self.a.log_level, name, extra)

    def run(self) -> dict:
        self.mock = Mock(chunks=10, gap_ms=200)
        MOCK_PIDS[:] = [self.mock.pid]
        self.pg = PgServer().start()
        for mode in self.a.modes:
            self.mode(mode)
        self.results["load_after"] = os.getloadavg()
        return self.results

    def mode(self, mode: str) -> None:
        assert self.pg is not None
        print(f"\n[{mode}] {self.a.workers} worker(s) per instance; {self.a.rounds} rounds of c=1 "
              f"({self.a.n1} requests) and c={self.a.concurrency} ({self.a.n} requests, <= {self.a.d} s)",
              flush=True)
        url = self.pg.create_database(f"bench_{mode}")
        lite = self.instance(f"{mode}-sqlite", mode, str(self.tmp / f"{mode}-sqlite.db"))
        pg_a = self.instance(f"{mode}-pg-a", mode, url)
        pg_b = self.instance(f"{mode}-pg-b", mode, url)
        ngx = Nginx(self.tmp, f"{mode}-nginx", [pg_a.port, pg_b.port])
        auth = (f"Authorization: Bearer {BENCH_CLIENT_KEY}",) if mode == "keyed" else ()
        path = "/v1/chat/completions"
        targets = {
            "direct": Target("direct", f"{self.mock.url}/v1beta/models/{MODEL}:generateContent", GEMINI_BODY,
                             ("x-goog-api-key: bench-key-a",)),
            "sqlite-1": Target("sqlite-1", lite.url + path, OPENAI_BODY, auth, tuple(lite.worker_pids())),
            "pg-1": Target("pg-1", pg_a.url + path, OPENAI_BODY, auth, tuple(pg_a.worker_pids())),
            "pg-2+nginx": Target("pg-2+nginx", ngx.url + path, OPENAI_BODY, auth,
                                 tuple(pg_a.worker_pids() + pg_b.worker_pids())),
        }
        try:
            for t in targets.values():  # warm up: pools, imports, prepared statements on every worker
                warm = load(t, c=8, n=1500, d=5)
                if warm["errors"]:
                    raise RuntimeError(f"{t.name}: {warm['errors']} errors while warming up: "
                                       f"{warm['error_kinds']}")
            pg_pids = postgres_pids(self.pg)
            runs: dict[str, dict[str, list[dict]]] = {"c1": {k: [] for k in targets},
                                                      "cN": {k: [] for k in targets}}
            for r in range(self.a.rounds):
                for kind, c, n, d in (("c1", 1, self.a.n1, 10.0), ("cN", self.a.concurrency, self.a.n,
                                                                    self.a.d)):
                    order = list(targets) if r % 2 == 0 else [list(targets)[0], *reversed(list(targets)[1:])]
                    for name in order:
                        pg0 = cpu_seconds(pg_pids)
                        res = load(targets[name], c=c, n=n, d=d)
                        res["postgres_cpu_ms_per_req"] = round((cpu_seconds(pg_pids) - pg0) * 1000
                                                               / max(1, res["ok"]), 3)
                        runs[kind][name].append(res)
                line = ", ".join(f"{k} {runs['cN'][k][-1]['rps']}" for k in targets)
                print(f"  round {r + 1}: c={self.a.concurrency} req/s: {line}", flush=True)
            self.results["modes"][mode] = {"summary": summarize(runs), "runs": runs}
            print_summary(mode, self.results["modes"][mode]["summary"], self.a.concurrency)
            usage = sum(int(x or 0) for x in self.pg.psql(
                "SELECT COUNT(*) FROM usage_records", url.rsplit("/", 1)[1]).split())
            self.results["modes"][mode]["pg_usage_records"] = usage
        finally:
            ngx.close()
            for k in (lite, pg_a, pg_b):
                k.close()


def summarize(runs: dict[str, dict[str, list[dict]]]) -> dict:
    out: dict = {}
    d1, dn = runs["c1"]["direct"], runs["cN"]["direct"]
    out["direct"] = {"rps": med(dn, "rps"), "c1_p50": med(d1, "latency_ms", "p50"),
                     "c1_p99": med(d1, "latency_ms", "p99"), "cN_p50": med(dn, "latency_ms", "p50"),
                     "cN_p99": med(dn, "latency_ms", "p99")}
    for name in SETUPS:
        r1, rn = runs["c1"][name], runs["cN"][name]
        out[name] = {
            "rps": med(rn, "rps"),
            "added_c1_p50": sub(med(r1, "latency_ms", "p50"), out["direct"]["c1_p50"]),
            "added_c1_p99": sub(med(r1, "latency_ms", "p99"), out["direct"]["c1_p99"]),
            "added_cN_p50": sub(med(rn, "latency_ms", "p50"), out["direct"]["cN_p50"]),
            "added_cN_p99": sub(med(rn, "latency_ms", "p99"), out["direct"]["cN_p99"]),
            "keyrelay_cpu_ms_per_req": med(rn, "cpu_ms_per_req"),
            "postgres_cpu_ms_per_req": med(rn, "postgres_cpu_ms_per_req"),
            "machine_busy": med(rn, "machine_busy"),
            "errors": sum(x["errors"] for x in r1 + rn),
        }
    base = out["sqlite-1"]["rps"]
    for name in SETUPS:
        out[name]["rps_over_sqlite_1"] = ratio(out[name]["rps"], base)
    return out


def print_summary(mode: str, s: dict, c: int) -> None:
    print(f"  {mode}: direct {s['direct']['rps']} req/s at c={c}; c=1 p50 {s['direct']['c1_p50']} ms, "
          f"p99 {s['direct']['c1_p99']} ms", flush=True)
    print(f"  | setup | req/s c={c} | ÷ sqlite-1 | added p50 / p99 c=1 (ms) | added p50 / p99 c={c} (ms) "
          "| keyrelay CPU ms/req | PostgreSQL CPU ms/req | errors |", flush=True)
    for name in SETUPS:
        o = s[name]
        print(f"  | {name} | {o['rps']} | {o['rps_over_sqlite_1']} | {o['added_c1_p50']} / "
              f"{o['added_c1_p99']} | {o['added_cN_p50']} / {o['added_cN_p99']} | "
              f"{o['keyrelay_cpu_ms_per_req']} | "
              f"{o['postgres_cpu_ms_per_req']} | {o['errors']} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pg_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1, help="gevent workers per instance (default 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-c", "--concurrency", type=int, default=32, help="throughput concurrency (default 32)")
    ap.add_argument("-n", type=int, default=8000, help="requests per throughput run (default 8000)")
    ap.add_argument("-d", type=float, default=5.0, help="time cap per throughput run, s (default 5)")
    ap.add_argument("--n1", type=int, default=300, help="requests per c=1 run (default 300)")
    ap.add_argument("--modes", nargs="+", choices=("keyed", "open"), default=["keyed", "open"])
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--json", help="also write every raw result to this file")
    ap.add_argument("--max-seconds", type=float, default=900, help="watchdog (default 900)")
    args = ap.parse_args(argv)
    scale = Scale(args)

    def cleanup() -> None:
        stop_all()
        if scale.pg is not None:
            scale.pg.destroy()
        shutil.rmtree(scale.tmp, ignore_errors=True)

    def watchdog(*_: object) -> None:
        cleanup()
        sys.stderr.write(f"bench.pg_scale: stopped by the {args.max_seconds:.0f} s watchdog\n")
        os._exit(3)

    timer = threading.Timer(args.max_seconds, watchdog)
    timer.daemon = True
    timer.start()
    signal.signal(signal.SIGTERM, lambda *_: watchdog())
    started = time.monotonic()
    try:
        results = scale.run()
    except KeyboardInterrupt:
        return 130
    finally:
        timer.cancel()
        cleanup()
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(f"\n== bench.pg_scale: {results['cores']} cores, load before "
          f"{tuple(round(x, 2) for x in results['load_before'])}, after "
          f"{tuple(round(x, 2) for x in results['load_after'])}, {results['wall_s']} s ==")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
