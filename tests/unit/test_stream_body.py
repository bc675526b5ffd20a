"""``common.stream_response``: a stream served as a plain WSGI iterable (no framework layer per event)
whose ``close()`` closes the items at once and runs the response's close hooks exactly once."""
from __future__ import annotations

from collections.abc import Iterator

from flask import Flask

from proxy.api.common import StreamBody, stream_response
from proxy.relay import Trace


def _items(log: list[str]) -> Iterator[bytes]:
    try:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"
        log.append("ended")
    finally:
        log.append("closed")


def _app_iter(log: list[str]):  # noqa: ANN202
    app = Flask("t")
    with app.test_request_context("/", method="POST"):
        resp = stream_response(_items(log), Trace())
        resp.call_on_close(lambda: log.append("hook"))
        assert resp.is_streamed and resp.mimetype == "text/event-stream"
        return resp.get_app_iter({"REQUEST_METHOD": "POST"})


def test_the_server_iterates_the_items_themselves_and_close_runs_the_hooks_once():
    log: list[str] = []
    body = _app_iter(log)
    assert isinstance(body, StreamBody)
    it = iter(body)
    assert it is body.items  # nothing between the server and the encoder
    assert list(it) == [b"data: 1\n\n", b"data: 2\n\n"]
    body.close()
    body.close()
    assert log == ["ended", "closed", "hook"]


def test_a_client_gone_mid_stream_closes_the_items_at_once():
    log: list[str] = []
    body = _app_iter(log)
    it = iter(body)
    assert next(it) == b"data: 1\n\n"
    body.close()  # what gunicorn does when a write to the client failed
    assert log == ["closed", "hook"]


def test_in_process_clients_still_see_the_whole_stream():
    app = Flask("t")
    log: list[str] = []

    @app.post("/s")
    def s():  # noqa: ANN202
        resp = stream_response(_items(log), Trace())
        resp.call_on_close(lambda: log.append("hook"))
        return resp

    r = app.test_client().post("/s")
    assert r.data == b"data: 1\n\ndata: 2\n\n"
    r.close()
    assert log == ["ended", "closed", "hook"]
