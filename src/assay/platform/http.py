"""What every web service of Assay puts in front of its routes: the caller's token, fast JSON responses, security
headers (request size and rate limits are in :mod:`assay.platform.limits`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from assay.platform.auth import SESSION_COOKIE


def request_token(request: Request) -> tuple[str | None, bool]:
    """The login token a request carries: (token, came from the cookie?). ``Authorization: Bearer`` wins over the
    session cookie."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip(), False
    return request.cookies.get(SESSION_COOKIE), True


def client_address(request: Request) -> str | None:
    """The client's address for login throttling: the socket peer, or the client a trusted proxy names (uvicorn
    rewrites it from ``X-Forwarded-For`` only for ``--forwarded-allow-ips``)."""
    return request.client.host if request.client else None


class FastJSON(Response):
    """JSON rendered by orjson; returned directly by endpoints so FastAPI skips its own (slower) serialisation."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        import orjson

        from assay.core.record import _json_default

        return orjson.dumps(content, default=_json_default)


class SecurityHeaders:
    """Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware) adding security headers to every response:
    no framing, no MIME sniffing, and a CSP that allows only our own scripts and styles (no inline code)."""

    HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin"),
               (b"content-security-policy", b"default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
                                            b"script-src 'self'; frame-ancestors 'none'; form-action 'self'")]
    HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")

    def __init__(self, app: Any, hsts: bool = False) -> None:
        """``hsts``: also send Strict-Transport-Security (the app is only reached over https)."""
        self.app = app
        self.headers = self.HEADERS + [self.HSTS] if hsts else self.HEADERS

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
