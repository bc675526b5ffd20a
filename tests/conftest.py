import copy
import os
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient

from proxy.store.base import KeyStore
from tests.harness import Server, mock_config, open_by_default
from tests.stores import BACKENDS, Backend, make_backend

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def mock_gateway(tmp_path):
    """keyrelay with the built-in mock provider, 2 gevent workers."""
    with Server(tmp_path, mock_config(admin_token=ADMIN_TOKEN)) as gw:
        yield gw


@pytest.fixture
def make_app(tmp_path, request) -> Iterator[Callable[[dict], FlaskClient]]:
    """keyrelay in this process: ``make_app(config_dict)`` builds ``create_app(parse_config(...))`` over a
    database in tmp_path (unless the config names one) and returns Flask's test client; the app is at
    ``client.application``. For what needs no real server: routing, validation, error envelopes, admin
    semantics. Workers, signals, reloads, streaming timing and nginx stay with tests.harness.Server.
    With ``KEYRELAY_TEST_BACKEND=postgresql`` each app gets a fresh database on the test PostgreSQL server
    instead (``.ci/test`` runs tests/inprocess that way too)."""
    from proxy.app import create_app
    from proxy.config import parse_config

    gateways = []

    def make(config: dict) -> FlaskClient:
        config = copy.deepcopy(config)
        if os.environ.get("KEYRELAY_TEST_BACKEND") == "postgresql":
            database = request.getfixturevalue("pg_server").create_database()
        else:
            database = str(tmp_path / f"app{len(gateways)}.db")
        config.setdefault("server", {}).setdefault("database", database)
        open_by_default(config)
        app = create_app(parse_config(config, source="<test>"))
        gateways.append(app.extensions["keyrelay"])
        return app.test_client()

    yield make
    for gateway in gateways:
        gateway.shutting_down.set()  # ends the revalidation loop of a test that started it
        gateway.close()


@pytest.fixture
def app_client(make_app) -> FlaskClient:
    """The in-process app with the built-in mock provider (model ``mock-chat``) and an admin token."""
    return make_app(mock_config(admin_token=ADMIN_TOKEN))


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the whole run (started on first use, removed at the end)."""
    from tests.pg_server import PgServer

    server = PgServer().start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the test server: ``postgresql://keyrelay@127.0.0.1:PORT/NAME``."""
    return pg_server.create_database()


@pytest.fixture(params=BACKENDS)
def any_backend(request, tmp_path) -> Iterator[Backend]:
    """One database per backend ("sqlite": a file in tmp_path; "postgresql": a fresh database on the
    test server): the store-level tests take this (or ``any_store``) and so run on both."""
    backend = make_backend(request.param, tmp_path, request)
    yield backend
    backend.close()


@pytest.fixture
def any_store(any_backend) -> KeyStore:
    """A migrated store on ``any_backend`` (lock wait 2 s), closed at teardown."""
    return any_backend.open()


@pytest.fixture
def any_database(any_backend) -> str:
    """``any_backend``'s ``server.database`` setting (a file path or a postgresql:// URL), for what opens
    its own store from it (KeyPool, the CLI, a child process)."""
    return any_backend.database
