"""OpenAI's error envelope, {"error": {"message", "type", "param", "code"}}, with real status codes."""
from __future__ import annotations

import re
from typing import Optional

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tritium.entrypoints.openai.protocol import ErrorInfo, ErrorResponse

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 503: "service_unavailable_error"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 retry_after: Optional[int] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "internal_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param,
                                             code=self.code)).model_dump()

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: Optional[str] = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def internal_error(exc: BaseException) -> OpenAIError:
    return OpenAIError(500, f"internal error: {type(exc).__name__}: {exc}")


_PARAM_IN_MESSAGE = re.compile(r"SamplingParams\.(\w+)")


def from_value_error(exc: ValueError, param: Optional[str] = None) -> OpenAIError:
    """A ValueError from tritium's own validation (it names the field) -> 400."""
    message = str(exc)
    match = _PARAM_IN_MESSAGE.search(message)
    return bad_request(message, param or (match.group(1) if match else None))


def from_validation_error(exc: RequestValidationError) -> OpenAIError:
    """pydantic's first complaint, with the field path as `param`."""
    errors = exc.errors()
    if not errors:
        return bad_request("invalid request")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Drop pydantic's union-branch labels (e.g. "list[int]") from the path.
    loc = [p for p in loc if not any(c in p for c in "[]") and p not in ("str", "function-after")]
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    if not loc and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        return bad_request("the request body must be a JSON object")
    param = ".".join(loc) or None
    return bad_request(f"{param + ': ' if param else ''}{first['msg']}", param)
