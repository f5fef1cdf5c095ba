"""The dashboard's web application (Starlette): the page and its assets, a JSON face of the API, a stream of
server-sent events, sign-in with a token, and CSV/JSONL downloads.

Every call the page makes is one API request model, validated here like on the 0MQ side
(``POST /api/call/METHOD`` with the parameters as JSON). The token travels in an HttpOnly, SameSite=Strict
cookie (or an ``Authorization: Bearer`` header for scripts); a state-changing request must be JSON from the
page's own origin, which a cross-site form cannot send.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sdl.access.refusals import Refusal
from sdl.api import models as m
from sdl.api.models import ApiError
from sdl.dashboard.backend import Backend, Session
from sdl.dashboard.hosts import MAX_HOST, AllowedHosts, HostCheck
from sdl.exports.table import export_text
from sdl.spec.campaign import Campaign

log = logging.getLogger(__name__)

COOKIE = "sdl_token"
STATUS_OF_ERROR = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "invalid_params": 422,
    "invalid_campaign": 422,
    "bad_request": 400,
    "unknown_method": 404,
    "too_large": 413,
    "conflict": 409,
    "busy": 503,
    "internal": 500,
}
KEEPALIVE_S = 15.0
VISITOR = "web visitor"
CROSS_SITE = "a cross-site request (its Origin is not this dashboard)"
NOT_OUR_NAME = "not a name this dashboard answers to (its Host header)"
UNKNOWN_TOKEN = "unknown token, or its key is no longer allowed"


def static_dir() -> Any:
    return resources.files("sdl.dashboard") / "static"


def create_app(backend: Backend, hosts: AllowedHosts, *, secure_cookie: bool = False) -> Starlette:
    """The dashboard's application: only for requests whose Host is in ``hosts`` (checked first)."""

    def token_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(COOKIE)

    def origin_of(request: Request) -> str | None:
        return request.client.host if request.client else None

    def session_of(request: Request) -> Session:
        session = backend.session_for(token_of(request), origin_of(request))
        if session is None:
            raise ApiError("unauthenticated", "sign in with a token (sdl keys token NAME --key FILE)")
        return session

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"ok": False, "error": exc.error.model_dump()}, status_code=STATUS_OF_ERROR[exc.error.type]
        )

    def same_origin_json(request: Request, action: str) -> None:
        """A state-changing request must come from this page: when the browser says where from, from this
        origin (a refusal is audited), and JSON (a form cannot send it cross-site without a preflight we
        never grant)."""
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            backend.refused(
                Refusal(VISITOR, action, f"refused: {CROSS_SITE}", f"web {origin_of(request) or '?'}",
                        target=origin[:MAX_HOST])
            )  # fmt: skip
            raise ApiError("forbidden", f"a request from {origin[:MAX_HOST]} is not from this dashboard")
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ApiError("bad_request", "send JSON (Content-Type: application/json)")

    def refused_token(request: Request) -> None:
        where = f"web {origin_of(request) or '?'}"
        backend.refused(Refusal(VISITOR, "web.signin", f"refused: {UNKNOWN_TOKEN}", where))

    def set_cookie(response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=secure_cookie, max_age=30 * 24 * 3600
        )

    async def index(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return FileResponse(str(static_dir() / "index.html"), headers={"Cache-Control": "no-cache"})
        # A sign-in URL (the one `sdl daemon --http` prints): the token becomes a cookie, and the address
        # bar and the history keep the page without it.
        query = request.url.remove_query_params("token").query
        response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        if backend.session_for(token, origin_of(request)) is None:
            refused_token(request)
        else:
            set_cookie(response, token)
        return response

    async def session(request: Request) -> Response:
        token = token_of(request)
        found = backend.session_for(token, origin_of(request))
        if found is None:
            return JSONResponse(
                {"name": None, "role": None, "signed_in": False, "token_refused": bool(token)}
            )
        return JSONResponse({"name": found.name, "role": found.role.value, "signed_in": found.signed_in})

    async def signin(request: Request) -> Response:
        try:
            same_origin_json(request, "web.signin")
            body = await request.json()
            token = str(body.get("token", "")).strip() if isinstance(body, dict) else ""
            found = backend.session_for(token, origin_of(request)) if token else None
            if found is None:
                refused_token(request)
                raise ApiError("unauthenticated", UNKNOWN_TOKEN)
        except ApiError as exc:
            return error(exc)
        except ValueError:
            return error(ApiError("bad_request", "not JSON"))
        response = JSONResponse({"name": found.name, "role": found.role.value, "signed_in": True})
        set_cookie(response, token)
        return response

    async def signout(request: Request) -> Response:
        response = JSONResponse({"signed_in": False})
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure_cookie)
        return response

    async def call(request: Request) -> Response:
        method = request.path_params["method"]
        try:
            model = m.METHODS.get(method)
            if model is None:
                raise ApiError("unknown_method", f"no method {method[:80]!r}")
            if model.role is not m.Role.VIEWER:
                same_origin_json(request, method)
            session = session_of(request)
            raw = await request.body()
            try:
                params = json.loads(raw) if raw else {}
                api_request = model.model_validate(params)
            except (ValueError, ValidationError) as exc:
                details = (
                    [f"{'.'.join(map(str, e['loc'])) or '(params)'}: {e['msg']}" for e in exc.errors()]
                    if isinstance(exc, ValidationError)
                    else [str(exc)]
                )
                raise ApiError("invalid_params", f"invalid parameters for {method}", details) from None
            result = await backend.call(api_request, session, origin_of(request))
        except ApiError as exc:
            return error(exc)
        return Response(
            b'{"ok":true,"result":' + result.model_dump_json().encode() + b"}", media_type="application/json"
        )

    async def events(request: Request) -> Response:
        try:
            session = session_of(request)
            # a browser reconnecting says where it stopped (Last-Event-ID); take whichever is later
            since = max(
                int(request.query_params.get("since", "0")), int(request.headers.get("last-event-id", "0"))
            )
        except ApiError as exc:
            return error(exc)
        except ValueError:
            return error(ApiError("bad_request", "since must be an event sequence number"))

        async def stream() -> AsyncIterator[bytes]:
            yield b"retry: 1000\n\n"
            iterator = backend.events(since)
            pending: asyncio.Task[m.EventRecord] | None = None
            try:
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(iterator.__anext__())
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                    if not done:
                        yield b": keep-alive\n\n"
                        continue
                    event = pending.result()
                    pending = None
                    if not await backend.still_allowed(session):
                        return  # its token was revoked or its key removed: not one event more
                    yield b"id: %d\ndata: %s\n\n" % (event.seq, event.model_dump_json().encode())
            finally:
                if pending is not None:
                    pending.cancel()
                await iterator.aclose()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def export(request: Request) -> Response:
        campaign_id, fmt = request.path_params["campaign_id"], request.path_params["fmt"]
        try:
            if fmt not in ("csv", "jsonl"):
                raise ApiError("not_found", f"no export format {fmt!r} (csv, jsonl)")
            session = session_of(request)
            detail = await backend.call(m.ShowCampaign(campaign_id=campaign_id), session, origin_of(request))
            history: list[m.ExperimentSummary] = []
            while True:
                after = history[-1].seq if history else 0
                batch = await backend.call(
                    m.ListExperiments(campaign_id=campaign_id, after_seq=after, limit=10000),
                    session,
                    origin_of(request),
                )
                history += batch.experiments
                if len(batch.experiments) < 10000:
                    break
        except ApiError as exc:
            return error(exc)
        text = export_text(Campaign.model_validate(detail.spec), history, fmt)
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return Response(
            text,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{campaign_id}.{fmt}"'},
        )

    routes = [
        Route("/", index),
        Route("/api/session", session),
        Route("/api/signin", signin, methods=["POST"]),
        Route("/api/signout", signout, methods=["POST"]),
        Route("/api/call/{method}", call, methods=["POST"]),
        Route("/api/events", events),
        Route("/api/export/{campaign_id}.{fmt}", export),
        Mount("/static", StaticFiles(directory=str(static_dir())), name="static"),
    ]

    def host_refused(host: str, address: str | None) -> None:
        backend.refused(
            Refusal(VISITOR, "web.host", f"refused: {NOT_OUR_NAME}", f"web {address or '?'}", target=host)
        )

    return Starlette(
        routes=routes, middleware=[Middleware(HostCheck, allowed=hosts, on_refused=host_refused)]
    )
