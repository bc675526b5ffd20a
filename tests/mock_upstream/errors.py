"""Error bodies in each upstream's real envelope (Gemini: the recorded fixtures where we have them)."""
from __future__ import annotations

import copy

from tests.mock_upstream.core import load_fixture_json

_GEMINI_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/{model} is not found for API version v1beta, or is not supported for "
                       "generateContent. Call ListModels to see the list of available models and their "
                       "supported methods."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}

_UNREGISTERED = ("Method doesn't allow unregistered callers (callers without established identity). "
                 "Please use API Key or other form of API consumer identity to call this API.")


def gemini_error(status: int, message: str | None = None, *, model: str = "",
                 retry_delay: str | None = None, quota_id: str | None = None) -> dict:
    """A google.rpc.Status body. 403 and 429 start from the recorded fixtures."""
    if status == 403 and message is None:
        return load_fixture_json("gemini-error-403-permission-denied.json")
    if status == 429:
        body = load_fixture_json("gemini-error-429-resource-exhausted.json")
        err = body["error"]
        if message:
            err["message"] = message
        for detail in err["details"]:
            if detail["@type"].endswith("RetryInfo") and retry_delay is not None:
                detail["retryDelay"] = retry_delay
            if detail["@type"].endswith("QuotaFailure") and quota_id is not None:
                detail["violations"][0]["quotaId"] = quota_id
        return body
    name, default = _GEMINI_STATUS.get(status, ("UNKNOWN", "Unknown error."))
    return {"error": {"code": status, "message": message or default.format(model=model), "status": name}}


def gemini_api_key_invalid() -> dict:
    return load_fixture_json("gemini-error-400-api-key-invalid.json")


def gemini_unregistered() -> dict:
    return {"error": {"code": 403, "message": _UNREGISTERED, "status": "PERMISSION_DENIED"}}


_OPENAI = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key",
          "Incorrect API key provided: sk-***. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory "
                                                                           "not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access "
                                                      "to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for gpt-4o in organization org-mock on requests per min (RPM): Limit 3, "
          "Used 3, Requested 1. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}


def openai_error(status: int, message: str | None = None, *, code: str | None = None,
                 type_: str | None = None) -> dict:
    kind, default_code, default_msg = _OPENAI.get(status, ("api_error", None, "Upstream error."))
    return {"error": {"message": message or default_msg, "type": type_ or kind, "param": None,
                      "code": code if code is not None else default_code}}


OPENAI_INSUFFICIENT_QUOTA = openai_error(
    429, "You exceeded your current quota, please check your plan and billing details.",
    code="insufficient_quota", type_="insufficient_quota")

_ANTHROPIC = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization of 20,000 "
                              "input tokens per minute."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error(status: int, message: str | None = None, *, request_id: str = "req_mock") -> dict:
    kind, default = _ANTHROPIC.get(status, ("api_error", "Upstream error."))
    return {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": request_id}


def ollama_error(status: int, message: str | None = None, *, model: str = "") -> dict:
    defaults = {401: "unauthorized", 404: f'model "{model}" not found, try pulling it first',
                429: "too many requests", 500: "llama runner process has terminated", 503: "server busy"}
    return {"error": message or defaults.get(status, "error")}


def default_error(dialect: str, status: int, *, model: str = "", retry_delay: str | None = None) -> dict:
    if dialect == "gemini":
        return gemini_error(status, model=model, retry_delay=retry_delay)
    if dialect == "openai":
        return openai_error(status)
    if dialect == "anthropic":
        return anthropic_error(status)
    return ollama_error(status, model=model)


def invalid_key_error(dialect: str) -> tuple[int, dict]:
    if dialect == "gemini":
        return 400, gemini_api_key_invalid()
    if dialect == "openai":
        return 401, openai_error(401)
    if dialect == "anthropic":
        return 401, anthropic_error(401)
    return 401, ollama_error(401)


def missing_key_error(dialect: str) -> tuple[int, dict]:
    if dialect == "gemini":
        return 403, gemini_unregistered()
    if dialect == "openai":
        body = openai_error(401, "You didn't provide an API key. You need to provide your API key in an "
                                 "Authorization header using Bearer auth.")
        body["error"]["code"] = None
        return 401, body
    return 401, anthropic_error(401, "x-api-key header is required")


def with_retry_delay(body: dict, retry_delay: str) -> dict:
    """Copy of a Gemini body with its RetryInfo.retryDelay replaced (no-op if it has none)."""
    body = copy.deepcopy(body)
    for detail in body.get("error", {}).get("details", []):
        if str(detail.get("@type", "")).endswith("RetryInfo"):
            detail["retryDelay"] = retry_delay
    return body
