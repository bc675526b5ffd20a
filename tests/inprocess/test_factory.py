"""create_app is a pure factory: it starts no thread and configures no logging; the entry points do."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import yaml

from tests.harness import REPO, mock_config


def test_create_app_starts_no_thread_and_leaves_logging_alone(make_app):
    logger = logging.getLogger("keyrelay")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    before = set(threading.enumerate())
    client = make_app(mock_config())
    assert set(threading.enumerate()) == before
    assert (logger.handlers, logger.level, logger.propagate) == (handlers, level, propagate)
    assert client.get("/healthz").json == {"status": "ok"}  # it serves without its background work


def test_start_background_starts_the_flusher_and_revalidation_once(make_app):
    gateway = make_app(mock_config()).application.extensions["keyrelay"]
    before = {t.name for t in threading.enumerate()}
    gateway.start_background()
    gateway.start_background()
    started = sorted(t.name for t in threading.enumerate() if t.name not in before)
    listener = ["keyrelay-pg-listen"] if os.environ.get("KEYRELAY_TEST_BACKEND") == "postgresql" else []
    assert started == sorted(["keyrelay-catalog", "keyrelay-client-touch", "keyrelay-history-prune",
                              "keyrelay-key-flush", "keyrelay-limit-slices", "keyrelay-revalidate",
                              "keyrelay-usage-flush", *listener])


def test_wsgi_entry_point_sets_up_logging_and_starts_background_on_first_request(tmp_path):
    """wsgi.py (for servers without gunicorn's hooks): the JSON log at import, the background work on the
    first request, in the serving process. A subprocess: it configures this process's logging."""
    config = tmp_path / "keyrelay.yaml"
    config.write_text(yaml.safe_dump({**mock_config(), "server": {"database": str(tmp_path / "k.db")}}))
    script = (
        "import logging, threading, wsgi\n"
        "names = lambda: sorted(t.name for t in threading.enumerate() if t.name.startswith('keyrelay'))\n"
        "print(type(logging.getLogger('keyrelay').handlers[0].formatter).__name__, names())\n"
        "assert wsgi.app.test_client().get('/healthz').status_code == 200\n"
        "print(names())\n"
        "wsgi.app.extensions['keyrelay'].pool.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYRELAY_")}
    env["KEYRELAY_CONFIG"] = str(config)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    background = str(["keyrelay-catalog", "keyrelay-client-touch", "keyrelay-history-prune",
                      "keyrelay-key-flush", "keyrelay-limit-slices", "keyrelay-revalidate",
                      "keyrelay-usage-flush"])
    assert proc.stdout.splitlines() == ["JsonFormatter []", background]


def test_healthz_is_503_once_the_worker_is_shutting_down(app_client):
    """gunicorn's worker sets ``shutting_down`` when told to exit (config/gunicorn.conf.py)."""
    assert app_client.get("/healthz").status_code == 200
    app_client.application.extensions["keyrelay"].shutting_down.set()
    r = app_client.get("/healthz")
    assert r.status_code == 503 and r.json == {"status": "shutting_down"}
