"""WSGI entry point for any WSGI server: ``gunicorn -c config/gunicorn.conf.py wsgi:app``, uwsgi, waitress.

`keyrelay serve` is the usual way; it uses the same factory. The factory starts no thread and leaves logging
alone, so this entry point sets up the JSON log and starts the worker's background work (key counter flush,
key revalidation) on its first request: in the process that serves, after any pre-fork (under gunicorn,
post_worker_init has started it already; starting is idempotent)."""

from proxy import create_app, runtime
from proxy.observability import logging as jsonlog

config = runtime.current_config()
jsonlog.setup(config.server.log_level, config.secrets())
app = create_app(config)
app.before_request(app.extensions["keyrelay"].start_background)
