"""Profile one worker under concurrent streams: the bench mock, keyrelay (keyed, 1 worker) or the floor,
a 200-stream warm-up, then ``py-spy record`` on the worker while ``2 × --streams`` streams run with the
bench's shape (10 chunks 200 ms apart, starts over 2 s). py-spy needs root (or ptrace rights).

    python -m bench.profile --streams 1000 --out /tmp/kr.svg [--format raw] [--floor] [--rate 250]

Prints the load run's result line (ok, errors, worker CPU per stream, first chunk percentiles).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import runner as r
from bench import yardstick as y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--out", required=True, help="py-spy output file")
    ap.add_argument("--format", default="flamegraph", help="py-spy format: flamegraph (SVG), raw, speedscope")
    ap.add_argument("--floor", action="store_true", help="profile bench/floor.py instead of keyrelay")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    a = ap.parse_args(argv)
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tmp = Path(tempfile.mkdtemp(prefix="keyrelay-profile-"))
    mock = r.Mock(chunks=y.CHUNKS, gap_ms=200)
    r.MOCK_PIDS[:] = [mock.pid]
    try:
        if a.floor:
            srv: y.Floor | r.Keyrelay = y.Floor(tmp, mock.url, 1, "floor")
            t = r.Target("floor", srv.url + "/v1/chat/completions", r.OPENAI_STREAM_BODY, (),
                         tuple(srv.worker_pids()))
        else:
            srv = r.Keyrelay(tmp, mock.url, 1, "info", "kr", y.KEYED)
            t = r.Target("keyrelay", srv.url + "/v1/chat/completions", r.OPENAI_STREAM_BODY, y.AUTH,
                         tuple(srv.worker_pids()))
        r.load(t, c=200, n=200, d=20, stream=True, chunks=y.CHUNKS, ramp=0.5)
        spy = subprocess.Popen([spy_bin, "record", "-o", a.out, "--pid", str(t.pids[0]), "-r", str(a.rate),
                                "--nonblocking", "-f", a.format, "-d", "60"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        res = r.load(t, c=a.streams, n=2 * a.streams, d=40, stream=True, chunks=y.CHUNKS, timeout=30,
                     ramp=2.0)
        spy.send_signal(2)  # py-spy writes its output on SIGINT
        spy.wait(30)
        print(json.dumps({"ok": res.get("ok"), "errors": res.get("errors"),
                          "cpu_ms_per_stream": res.get("cpu_ms_per_req"),
                          "first_chunk_ms": res.get("stream", {}).get("first_chunk_ms")}))
    finally:
        r.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if os.path.exists(a.out) else 1


if __name__ == "__main__":
    from bench import profile  # the module under its own name, like bench.runner

    sys.exit(profile.main())
