"""One JSON object per line on stderr; secrets are never passed to the logger in the first place,
and a last-line redaction filter removes any configured secret that slips into a message."""
from __future__ import annotations

import json
import logging
import sys
import time

import orjson

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)
        self._second: tuple[int, str] = (-1, "")  # (epoch second, its prefix), swapped as one object

    def format(self, record: logging.LogRecord) -> str:
        sec, stamp = self._second
        if int(record.created) != sec:  # one strftime per second, not per line (one request log per request)
            sec = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._second = (sec, stamp)
        entry = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which gunicorn worker
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:  # orjson: ~15 us less per line than json.dumps (bench/RESULTS.md)
            line = orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson refuses (non-str keys, huge ints): the standard library's way
            line = json.dumps(entry, default=str)
        for secret in self.secrets:
            line = line.replace(secret, "[REDACTED]")
        return line


def setup(level: str, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger("keyrelay")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def gunicorn_logconfig(level: str, access: bool, secrets: tuple[str, ...] = ()) -> dict:
    """gunicorn's ``logconfig_dict``: its own error (and, if wanted, access) loggers write JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "secrets": secrets}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO" if access else "CRITICAL", "handlers": ["stderr"],
                                "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": []},
    }
