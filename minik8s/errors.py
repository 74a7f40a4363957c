"""The error hierarchy shared by every minik8s component.

Each error maps one-to-one onto a Kubernetes ``Status`` body (``reason`` and HTTP ``code``), so
the apiserver can answer with it, the client can raise it again from a response, and ``minictl``
can print one readable line::

    ApiError                      (500 InternalError)
     ├── BadRequest               (400)
     ├── Unauthorized             (401)
     ├── Forbidden                (403)
     ├── NotFound                 (404)
     ├── MethodNotAllowed         (405)
     ├── NotAcceptable            (406)
     ├── AlreadyExists            (409)
     ├── Conflict                 (409)
     ├── Gone                     (410, a watch's resourceVersion was compacted)
     ├── RequestEntityTooLarge    (413)
     ├── UnsupportedMediaType     (415)
     ├── Invalid                  (422, with ``causes``)
     ├── TooManyRequests          (429)
     ├── ServiceUnavailable       (503)
     └── Timeout                  (504)

``ConnectionFailed`` (not an ``ApiError``) means no answer came from the server at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One field error of an ``Invalid`` answer (``details.causes[]``)."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        # Like Kubernetes, the message does not repeat the field: kubectl prints "field: message".
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def describe(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ApiError(Exception):
    """An error with a Kubernetes ``Status`` shape. ``code``/``reason`` are class defaults."""

    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "", group: str = "",
                 causes: list[Cause] | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes: list[Cause] = list(causes or [])
        self.retry_after = retry_after

    def to_status(self) -> dict[str, Any]:
        """The ``Status`` body for this error, exactly as kubectl expects it."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            status["details"] = details
        return status

    @staticmethod
    def from_status(body: Any, http_code: int = 0) -> ApiError:
        """Rebuild the matching error from a ``Status`` body (or anything else a server said)."""
        if not isinstance(body, dict):
            cls = _BY_CODE.get(http_code, ApiError)
            return cls(str(body) or f"HTTP {http_code}")
        reason = body.get("reason") or ""
        code = int(body.get("code") or http_code or 500)
        details = body.get("details") or {}
        causes = [Cause(field=c.get("field", ""), message=_strip_field(c), reason=c.get("reason", ""))
                  for c in details.get("causes") or [] if isinstance(c, dict)]
        cls = _BY_REASON.get(reason) or _BY_CODE.get(code, ApiError)
        err = cls(body.get("message") or reason or f"HTTP {code}", kind=details.get("kind", ""),
                  name=details.get("name", ""), group=details.get("group", ""), causes=causes,
                  retry_after=details.get("retryAfterSeconds"))
        if cls is ApiError:
            err.code, err.reason = code, reason or err.reason
        return err


def _strip_field(cause: dict[str, Any]) -> str:
    msg = str(cause.get("message", ""))
    prefix = f"{cause.get('field', '')}: "
    return msg[len(prefix):] if cause.get("field") and msg.startswith(prefix) else msg


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Unauthorized(ApiError):
    code, reason = 401, "Unauthorized"


class Forbidden(ApiError):
    code, reason = 403, "Forbidden"


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class NotAcceptable(ApiError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class Gone(ApiError):
    code, reason = 410, "Expired"


class RequestEntityTooLarge(ApiError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(ApiError):
    code, reason = 422, "Invalid"

    @classmethod
    def of(cls, kind: str, name: str, causes: list[Cause], group: str = "") -> Invalid:
        """The 422 for ``causes``; the message reads like the apiserver's (kubectl ignores it)."""
        what = f'{kind} "{name}"' if name else kind
        text = ", ".join(c.describe() for c in causes) or "invalid object"
        return cls(f"{what} is invalid: {text}", kind=kind, name=name, group=group, causes=causes)


class TooManyRequests(ApiError):
    code, reason = 429, "TooManyRequests"


class ServiceUnavailable(ApiError):
    code, reason = 503, "ServiceUnavailable"


class Timeout(ApiError):
    code, reason = 504, "Timeout"


class ConnectionFailed(Exception):
    """No answer from the server (refused, reset, timed out before any response)."""


_BY_REASON: dict[str, type[ApiError]] = {
    c.reason: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, NotAcceptable,
                          AlreadyExists, Conflict, Gone, RequestEntityTooLarge, UnsupportedMediaType,
                          Invalid, TooManyRequests, ServiceUnavailable, Timeout)
}
_BY_REASON["Gone"] = Gone
_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
    406: NotAcceptable, 409: Conflict, 410: Gone, 413: RequestEntityTooLarge, 415: UnsupportedMediaType,
    422: Invalid, 429: TooManyRequests, 503: ServiceUnavailable, 504: Timeout,
}
