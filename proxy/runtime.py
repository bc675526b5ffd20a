"""The config in force for this process tree.

The gunicorn master loads and validates the config before forking; workers inherit the last config that
passed validation, so a SIGHUP with a broken file keeps the old config serving.
"""
from __future__ import annotations

import os

from proxy.config import Config, load_config

_last_good: Config | None = None


def config_path() -> str | None:
    return os.environ.get("KEYRELAY_CONFIG") or None


def load() -> Config:
    """Load and validate the configured file; on success it becomes the config in force."""
    global _last_good
    _last_good = load_config(config_path())
    return _last_good


def last_good() -> Config | None:
    return _last_good


def current_config() -> Config:
    return _last_good or load()
