"""create_app is a pure factory: it starts no thread and configures no logging; the entry points do."""
from __future__ import annotations

import logging
import threading

from tests.harness import mock_config


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
    assert started == ["keyrelay-key-flush", "keyrelay-revalidate"]
