"""Issue 15: what quota pacing costs, in one run: the same build with pacing off, on (requests only
counted: no limit known) and on with limits configured (every request admitted by a store transaction),
one gevent worker each, the same bench mock, measured alternately so machine drift hits all alike.

    .venv/bin/python -m bench.pacing [--rounds 3] [-n 4000] [-c 16]

Prints the median requests/s and worker CPU per request of each variant and its ratio to "off".
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ab import REPO, serve, worker_cpu
from bench.runner import MODEL, OPENAI_BODY, spawn, stop

HIGH = {MODEL: {"rpm": 10**9, "tpm": 10**12, "rpd": 10**12}}  # never reached: the check runs, never refuses
VARIANTS = {  # name -> (extra config, provider overlay)
    "pacing off": ({"key_manager": {"pacing": False}}, {}),
    "pacing on": ({}, {}),
    "on + limits": ({}, {"limits": HIGH}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("-c", type=int, default=16)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="keyrelay-pacing-"))
    mock = spawn([sys.executable, "-m", "bench.mock", "--port", "0"], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = [mock]
    try:
        mock_url = mock.stdout.readline().rsplit("listening on ", 1)[1].strip()  # type: ignore[union-attr]
        urls: dict[str, str] = {}
        for name, (extra, provider) in VARIANTS.items():
            p, urls[name] = serve(REPO, mock_url, {"auth": {"mode": "open"}, **extra}, tmp, provider)
            procs.append(p)
        time.sleep(5)
        pids = {name: int(subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout
                          .split()[0]) for name, p in zip(urls, procs[1:], strict=True)}

        def load(name: str, n: int) -> tuple[float, float, int]:
            args = [sys.executable, "-m", "bench.load", "--url", urls[name] + "/v1/chat/completions",
                    "--body", OPENAI_BODY, "-c", str(a.c), "-n", str(n), "-d", "6"]
            c0 = worker_cpu(pids[name])
            run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
            out = json.loads(run.stdout)
            return out["rps"], (worker_cpu(pids[name]) - c0) * 1000 / max(1, out["ok"]), out["errors"]

        for name in urls:
            load(name, 1000)  # warm up
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in urls}
        for _ in range(a.rounds):
            for name in urls:
                results[name].append(load(name, a.n))
        base = statistics.median(r[0] for r in results["pacing off"])
        for name, rs in results.items():
            rps = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs)
            print(f"{name:12} {rps:8.1f} req/s  {cpu:.3f} ms CPU/req  {rps / base:5.2f} x off  "
                  f"errors {sum(r[2] for r in rs)}  runs {[round(r[0]) for r in rs]}", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
