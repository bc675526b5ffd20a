"""WSGI entry point for any WSGI server: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

`keyrelay serve` is the usual way; it uses the same factory."""

from proxy import create_app_from_env

app = create_app_from_env()
