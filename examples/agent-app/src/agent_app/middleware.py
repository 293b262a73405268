"""ASGI middleware: request IDs, JSON access logs and HTTP metrics labelled by route template."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_app.logs import request_id_var
from agent_app.metrics import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS

access_log = logging.getLogger("agent_app.access")

REQUEST_ID_HEADER = "X-Request-ID"
# Accept caller-supplied IDs only if they are short and harmless in logs and headers.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _REQUEST_ID_RE.match(candidate) else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's path template (e.g. ``/v1/agent/runs/{run_id}``), never the raw path."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Wraps every HTTP request; the status of a request that raised is recorded as 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        start = time.perf_counter()
        HTTP_IN_FLIGHT.inc()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            duration = time.perf_counter() - start
            HTTP_IN_FLIGHT.dec()
            method = scope["method"]
            route = route_template(scope)
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_DURATION.labels(method=method, route=route).observe(duration)
            client = scope.get("client")
            access_log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration": round(duration, 6),
                    "client": client[0] if client else None,
                },
            )
            request_id_var.reset(token)
