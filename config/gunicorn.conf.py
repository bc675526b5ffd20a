"""gunicorn settings for keyrelay (used by `keyrelay serve`; any value can be overridden on the command line).

gevent workers; bind, worker count and graceful timeout from the keyrelay config (or KEYRELAY_BIND /
KEYRELAY_WORKERS set by `keyrelay serve`); gunicorn's own lines are JSON too, its access log off by default.
The master validates the config and migrates the database before forking, keeps the last valid config
across SIGHUP reloads, and owns the Prometheus multiprocess directory.
"""
import logging
import os
import shutil
import sys
import tempfile

from gunicorn import glogging

from proxy import runtime
from proxy.config import ConfigError
from proxy.observability import logging as jsonlog

# gunicorn runs this file at start and again on every SIGHUP (in the master).
_previous = runtime.last_good()
try:
    _config = runtime.load()
    _reload_error = None
except ConfigError as exc:
    if _previous is None:  # at start: refuse to run (`keyrelay serve` validated already)
        sys.stderr.write(f"keyrelay: config error: {exc}\n")
        sys.exit(2)
    _config, _reload_error = _previous, str(exc)

_secrets = _config.secrets()
jsonlog.setup(_config.server.log_level, _secrets)
_log = logging.getLogger("keyrelay")

worker_class = "gevent"
workers = int(os.environ.get("KEYRELAY_WORKERS") or _config.server.workers)
worker_connections = int(os.environ.get("KEYRELAY_WORKER_CONNECTIONS", "2000"))
bind = [os.environ.get("KEYRELAY_BIND") or f"{_config.server.host}:{_config.server.port}"]
graceful_timeout = int(_config.server.graceful_timeout)
timeout = 60  # heartbeat: a worker blocked this long is restarted (gevent workers notify while idle)
keepalive = 5
accesslog = "-" if _config.server.access_log else None
errorlog = "-"
loglevel = _config.server.log_level
logconfig_dict = jsonlog.gunicorn_logconfig(loglevel, _config.server.access_log, _secrets)
control_socket_disable = True  # gunicorn >= 25: a shared ~/.gunicorn/gunicorn.ctl clashes between instances
proc_name = "keyrelay"
forwarded_allow_ips = "127.0.0.1"


class _Logger(glogging.Logger):
    """gunicorn builds every request's access-log atoms (a dict over all headers and the environ) whenever
    ``logconfig_dict`` is set, even with the access log off (its logger then drops the line)."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = _Logger  # ~21 us less per request with the access log off (bench/RESULTS.md)


def on_starting(server):
    from proxy.store import db

    try:
        conn = db.connect(_config.server.database)
        db.migrate(conn)
        conn.close()
    except db.DatabaseError as exc:
        sys.stderr.write(f"keyrelay: {exc}\n")
        sys.exit(1)
    prom_dir = tempfile.mkdtemp(prefix="keyrelay-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    server._keyrelay_prom_dir = prom_dir
    for notice in _config.notices:
        _log.info(notice, extra={"event": "config_notice"})


def when_ready(server):
    _log.info(f"serving on http://{', '.join(bind)} with {workers} gevent worker(s)",
              extra={"event": "serving", "bind": bind, "workers": workers})


def on_reload(server):
    """SIGHUP: the file was re-read above; a broken one is reported and the old config keeps serving."""
    if _reload_error:
        server.log.error("keyrelay: reload rejected, old config keeps serving: %s", _reload_error)
    else:
        server.log.info("keyrelay: config reloaded from %s", _config.source)


def post_worker_init(worker):
    """Flip /healthz to 503 as soon as graceful shutdown begins in this worker."""
    import logging
    import signal

    gateway = worker.wsgi.extensions["keyrelay"]
    logging.getLogger("keyrelay").info("worker ready", extra={
        "event": "worker_ready", "pid": worker.pid, "worker_class": type(worker).__name__})
    original = worker.handle_exit

    def handle_exit(sig, frame):
        gateway.shutting_down.set()
        original(sig, frame)

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    gateway = getattr(app, "extensions", {}).get("keyrelay") if app else None
    if gateway is not None:
        gateway.pool.close()  # flush batched counters


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    prom_dir = getattr(server, "_keyrelay_prom_dir", None)
    if prom_dir:
        shutil.rmtree(prom_dir, ignore_errors=True)
