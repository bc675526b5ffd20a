"""keyrelay: a self-hosted OpenAI-compatible LLM gateway in front of many upstream keys and providers."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from proxy.config import Config

__version__ = "0.1.0"


def create_app(config: Config) -> Flask:
    """The app factory (proxy.app.create_app), importable without pulling Flask in at package import."""
    from proxy.app import create_app as _create_app

    return _create_app(config)


def create_app_from_env() -> Flask:
    """gunicorn's entry point: the config the master validated, else KEYRELAY_CONFIG / the default."""
    from proxy import runtime

    return create_app(runtime.current_config())
