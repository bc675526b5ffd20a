"""gunicorn settings for keyrelay (used by `keyrelay serve`; any value can be overridden on the command line).

gevent workers; bind, worker count and graceful timeout from the keyrelay config (or KEYRELAY_BIND /
KEYRELAY_WORKERS set by `keyrelay serve`); gunicorn's own lines are JSON too, its access log off by default.
The master validates the config, migrates the database and checks that it is writable before forking,
keeps the last valid config across SIGHUP reloads, and owns the Prometheus multiprocess directory. Workers
drain at once when told to exit (DrainingGeventWorker) and start their background work in post_worker_init.
"""
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

import gevent
from gunicorn import glogging
from gunicorn import util as gunicorn_util
from gunicorn.workers import ggevent

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

_BOOT_ERROR = "boot-error"  # a worker that cannot start leaves its one-line reason here (see on_exit)
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
pidfile = _config.server.pidfile  # written before on_starting, removed by the master when it exits
if pidfile:
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)


def _set_title(title: str) -> None:
    """gunicorn titles its processes ``gunicorn: master [keyrelay]``; ours say ``keyrelay: master`` and
    ``keyrelay: worker N`` (N counts the workers this master started, 1 first)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def _gunicorn_title(title: str) -> None:
    if title.startswith("master"):
        _set_title("keyrelay: master")


gunicorn_util._setproctitle = _gunicorn_title  # the arbiter renames the master at start and on reload
forwarded_allow_ips = "127.0.0.1"


class _Logger(glogging.Logger):
    """gunicorn builds every request's access-log atoms (a dict over all headers and the environ) whenever
    ``logconfig_dict`` is set, even with the access log off (its logger then drops the line)."""

    def access(self, resp, req, environ, request_time):
        if self.cfg.accesslog:  # a Gemini client may send its keyrelay key as ?key=: never log it
            environ = {**environ, **{k: _KEY_PARAM.sub(r"\1[REDACTED]", environ.get(k) or "")
                                     for k in ("RAW_URI", "QUERY_STRING")}}
            super().access(resp, req, environ, request_time)


_KEY_PARAM = re.compile(r"(?i)((?:^|[?&])key=)[^&\s]*")


logger_class = _Logger  # ~21 us less per request with the access log off (bench/RESULTS.md)


def _check_database(path: str) -> None:
    """Migrated and writable, or exit 1 with one line: a read-only file or directory must not get as far
    as the workers' key sync. SQLite writes its WAL files next to the database, so the directory is
    probed too; ``BEGIN IMMEDIATE`` alone passes on a read-only WAL database, so the probe writes (a
    table created and rolled back)."""
    from proxy.store import backend, db

    if backend.is_postgres(path):  # reachable, migrated (under its advisory lock) and writable
        try:
            backend.migrate(path)
        except db.DatabaseError as exc:
            sys.exit(_fail(str(exc)))
        problem = backend.readiness(path, write_timeout_s=5.0)
        if problem:
            sys.exit(_fail(problem))
        return
    path = backend.sqlite_path(path)
    directory = Path(path).resolve().parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        sys.exit(_fail(f"database not writable: {path}: directory {directory}: {exc.strerror or exc}"))
    try:
        conn = db.connect(path)
    except db.DatabaseError as exc:
        sys.exit(_fail(str(exc)))
    try:
        db.migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE keyrelay_write_probe (x INTEGER)")
    except db.DatabaseError as exc:
        sys.exit(_fail(str(exc)))
    except sqlite3.Error as exc:
        sys.exit(_fail(f"database not writable: {path}: {exc}"))
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def _fail(message: str) -> int:
    sys.stderr.write(f"keyrelay: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return 1


def on_starting(server):
    _check_database(_config.server.database)
    prom_dir = tempfile.mkdtemp(prefix="keyrelay-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    server._keyrelay_prom_dir = prom_dir
    for notice in _config.notices:
        _log.info(notice, extra={"event": "config_notice"})
    _auth_notice(_config)


def _auth_notice(config) -> None:
    """Says whether the data plane will answer 401 to everyone (no client, config or runtime) or is open."""
    import time

    from proxy.clients.auth import startup_notice
    from proxy.store import backend, db
    from proxy.store.base import StoreUnavailable

    try:  # the configured backend: a PostgreSQL URL is no file path (it made a stray SQLite file)
        store = backend.open_store(config.server.database, pool_size=1, migrate=False)
        try:
            notice = startup_notice(config, store, time.time())
        finally:
            store.close()
    except (StoreUnavailable, db.DatabaseError) as exc:  # the workers will say more; never stop the start
        notice = f"could not tell whether any client key exists: {exc}"
    if notice:
        _log.warning(notice, extra={"event": "auth_notice"})


def when_ready(server):
    _log.info(f"serving on http://{', '.join(bind)} with {workers} gevent worker(s)",
              extra={"event": "serving", "bind": bind, "workers": workers})


def on_reload(server):
    """SIGHUP: the file was re-read above; a broken one is reported and the old config keeps serving."""
    if _reload_error:
        server.log.error("keyrelay: reload rejected, old config keeps serving: %s", _reload_error)
    else:
        server.log.info("keyrelay: config reloaded from %s", _config.source)


class DrainingGeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker, except that a worker told to exit (SIGTERM: a reload or a stop) drains at
    once instead of at its next one-second tick (gunicorn's loop would accept new clients for up to 1 s
    more and serve them the old config): it stops accepting in the signal handler, closes its idle
    keep-alive connections, and closes every busy one after its response (``Connection: close`` when the
    headers are not out yet). So once a reload is in force, new requests get the new config; in-flight
    requests and streams finish within graceful_timeout. /healthz says 503 from the same moment.
    A worker whose app cannot start for a database reason says so in one line (on_exit), no traceback."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - gunicorn's signature
        super().__init__(*args, **kwargs)
        self._servers: list[ggevent.StreamServer] = []
        self._idle: set[socket.socket] = set()  # kept-alive connections waiting for their next request
        self._busy: dict[socket.socket, object] = {}  # connection -> the request it is serving

    def init_signals(self) -> None:
        super().init_signals()
        if getattr(self, "term_before_init", False):  # post_fork's early SIGTERM handler caught a stop
            self.alive = False

    def run(self) -> None:
        worker = self

        class Server(ggevent.StreamServer):
            def start(self) -> None:
                super().start()
                worker._servers.append(self)

        ggevent.StreamServer = Server  # this worker process only: run() builds its servers from this name
        if not self.alive:  # told to exit while booting (a stop right after a respawn): never start serving
            return
        super().run()

    def load_wsgi(self) -> None:
        from proxy.store import db

        try:
            super().load_wsgi()
        except (db.DatabaseError, sqlite3.Error) as exc:  # e.g. the database turned read-only since start
            reason = " ".join(str(exc).split())
            prom_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if prom_dir:
                Path(prom_dir, _BOOT_ERROR).write_text(f"cannot start a worker: {reason}")
            # Stop the master (on_exit says why, exit 1) rather than exit with gunicorn's boot-error code 3:
            # a second worker failing the same way while the master halts makes gunicorn raise again.
            os.kill(self.ppid, signal.SIGTERM)
            sys.exit(1)

    def handle_request(self, listener_name, req, sock, addr):  # noqa: ANN001 - gunicorn's signature
        self._idle.discard(sock)
        self._busy[sock] = req
        try:
            super().handle_request(listener_name, req, sock, addr)  # raises StopIteration to close
        finally:
            del self._busy[sock]
        self._idle.add(sock)

    def handle(self, listener, client, addr):  # noqa: ANN001 - gunicorn's signature
        try:
            super().handle(listener, client, addr)
        finally:
            self._idle.discard(client)

    def handle_exit(self, sig, frame) -> None:  # noqa: ANN001 - a signal handler
        super().handle_exit(sig, frame)  # alive = False: responses to requests that start now close
        gateway = getattr(getattr(self, "wsgi", None), "extensions", {}).get("keyrelay")
        if gateway is not None:
            gateway.shutting_down.set()
        for server in self._servers:
            server.stop_accepting()  # stops a libev watcher, nothing that blocks: safe in the handler
        for req in self._busy.values():
            req.must_close = True  # `Connection: close` if its headers are not out yet; closed after it
        gevent.spawn(self._close_idle)

    def _close_idle(self) -> None:
        for sock in list(self._idle):
            try:  # on a duplicate: gevent's own shutdown() would fail the waiting handler with EBADF
                with socket.socket(fileno=os.dup(sock.fileno())) as dup:
                    dup.shutdown(socket.SHUT_RDWR)  # the handler reads EOF and closes the connection
            except OSError:
                pass


worker_class = DrainingGeventWorker


def post_fork(server, worker):
    _set_title(f"keyrelay: worker {worker.age}")
    # Until gunicorn installs the worker's own handlers (after gevent's monkey patching, ~100s of ms on a
    # busy machine) a SIGTERM would hit the master's inherited handler and be lost: the master would then
    # wait graceful_timeout for a worker that never heard it. Remember it; init_signals replays it.
    signal.signal(signal.SIGTERM, lambda *_: setattr(worker, "term_before_init", True))


def post_worker_init(worker):
    """This worker's background work (key counter flush, revalidation) starts here, after the fork."""
    gateway = worker.wsgi.extensions["keyrelay"]
    gateway.start_background()
    _log.info("worker ready", extra={
        "event": "worker_ready", "pid": worker.pid, "worker_class": type(worker).__name__})


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    gateway = getattr(app, "extensions", {}).get("keyrelay") if app else None
    if gateway is not None:
        gateway.close()  # flush batched counters and usage records


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    prom_dir = getattr(server, "_keyrelay_prom_dir", None)
    if not prom_dir:
        return
    boot_error = Path(prom_dir, _BOOT_ERROR)
    reason = boot_error.read_text() if boot_error.exists() else None
    shutil.rmtree(prom_dir, ignore_errors=True)
    if reason:  # a worker could not start (gunicorn would exit 3): one line, the documented exit code 1
        sys.exit(_fail(reason))
