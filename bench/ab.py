"""A/B of whole builds in one run: an older checkout of keyrelay vs this one (open, and with a client key),
one gevent worker each, the same bench mock, measured alternately so machine drift hits all alike.

    .venv/bin/python -m bench.ab [--baseline /path/to/old/checkout] [--rounds 3] [-n 4000] [-c 16]
    .venv/bin/python -m bench.ab --set inspector [--rounds 3]   # issue 16: inspector off vs sample 1.0

The baseline checkout runs from its own directory with this venv's Python (its `proxy` package is the
one imported); it is optional. Prints the median requests/s and worker CPU per request of each variant
of the set (``auth``: open vs client keys; ``inspector``: off vs capturing every request), relative to
the set's first variant.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.runner import BENCH_CLIENT_KEY, KEYS, MODEL, OPENAI_BODY, free_port, spawn, stop

REPO = Path(__file__).resolve().parents[1]
PRICES = {MODEL: {"input": 0.3, "output": 2.5}}
VARIANTS = {  # name -> (extra config, sends the client key)
    "open": ({"auth": {"mode": "open"}}, False),
    "key only": ({"auth": {"mode": "keys"}, "prices": PRICES,
                  "clients": [{"name": "b", "key": BENCH_CLIENT_KEY}]}, True),
    "key+rpm": ({"auth": {"mode": "keys"}, "prices": PRICES,
                 "clients": [{"name": "b", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000}]}, True),
    "key+rpm+tpm": ({"auth": {"mode": "keys"}, "prices": PRICES,
                     "clients": [{"name": "b", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000,
                                  "tpm": 10**12}]}, True),
    "key+rpm+tpm+budget": ({"auth": {"mode": "keys"}, "prices": PRICES,
                            "clients": [{"name": "b", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000,
                                         "tpm": 10**12, "budget_usd": 1_000_000}]}, True),
    "key+all limits": ({"auth": {"mode": "keys"}, "prices": PRICES,
                        "clients": [{"name": "b", "key": BENCH_CLIENT_KEY, "rpm": 10_000_000, "tpm": 10**12,
                                     "max_concurrent": 10_000, "budget_usd": 1_000_000}]}, True),
}
INSPECTOR_VARIANTS = {  # the same open gateway; only the inspector differs
    "inspector off": ({"auth": {"mode": "open"}}, False),
    "inspector 1.0": ({"auth": {"mode": "open"}, "inspector": {"enabled": True, "sample": 1.0}}, False),
}
SETS = {"auth": VARIANTS, "inspector": INSPECTOR_VARIANTS}


def worker_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(repo: Path, mock_url: str, extra: dict, tmp: Path) -> tuple[subprocess.Popen, str]:
    d = Path(tempfile.mkdtemp(dir=tmp))
    config = {"server": {"database": str(d / "k.db"), "log_level": "warning"},
              "providers": [{"name": "gemini", "type": "gemini", "base_url": mock_url + "/v1beta",
                             "keys": KEYS, "models": [MODEL]}],
              "models": [{"name": "bench", "targets": [{"provider": "gemini", "model": MODEL}]}], **extra}
    if repo == REPO:  # an older checkout may not know the catalog; this one must not fetch in a measurement
        config["catalog"] = {"sources": []}
    (d / "k.yaml").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    p = spawn([sys.executable, "-m", "proxy.cli", "serve", "--config", str(d / "k.yaml"), "--bind",
               f"127.0.0.1:{port}", "--workers", "1"], cwd=repo, stdout=open(d / "log", "wb"),  # noqa: SIM115
              stderr=subprocess.STDOUT, env=env)
    return p, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="also an older keyrelay checkout (open, no client key)")
    ap.add_argument("--set", choices=sorted(SETS), default="auth", help="which variants to compare")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("-c", type=int, default=16)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="keyrelay-ab-"))
    mock = spawn([sys.executable, "-m", "bench.mock", "--port", "0"], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = [mock]
    try:
        mock_url = mock.stdout.readline().rsplit("listening on ", 1)[1].strip()  # type: ignore[union-attr]
        runs: dict[str, tuple[str, bool]] = {}
        if a.baseline is not None:  # an old checkout may know no auth section; this set's needs one
            base_extra = {"auth": {"mode": "open"}} if a.set == "inspector" else {}
            p, url = serve(a.baseline.resolve(), mock_url, base_extra, tmp)
            procs.append(p)
            runs["baseline"] = (url, False)
        variants = SETS[a.set]
        for name, (extra, keyed) in variants.items():
            p, url = serve(REPO, mock_url, extra, tmp)
            procs.append(p)
            runs[name] = (url, keyed)
        time.sleep(5)
        pids = {name: int(subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout
                          .split()[0]) for name, p in zip(runs, procs[1:], strict=True)}

        def load(name: str, n: int) -> tuple[float, float, int]:
            url, keyed = runs[name]
            args = [sys.executable, "-m", "bench.load", "--url", url + "/v1/chat/completions", "--body",
                    OPENAI_BODY, "-c", str(a.c), "-n", str(n), "-d", "6"]
            if keyed:
                args += ["--header", f"Authorization: Bearer {BENCH_CLIENT_KEY}"]
            c0 = worker_cpu(pids[name])
            run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
            out = json.loads(run.stdout)
            return out["rps"], (worker_cpu(pids[name]) - c0) * 1000 / max(1, out["ok"]), out["errors"]

        for name in runs:
            load(name, 1500)  # warm up
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
        for _ in range(a.rounds):
            for name in runs:
                results[name].append(load(name, a.n))
        first = next(iter(variants))
        base = statistics.median(r[0] for r in results[first])
        for name, rs in results.items():
            rps = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs)
            print(f"{name:15} {rps:8.1f} req/s  {cpu:.3f} ms CPU/req  {rps / base:5.2f} x {first}  "
                  f"errors {sum(r[2] for r in rs)}  runs {[round(r[0]) for r in rs]}", flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
