"""The console's web application: pages, JSON API, live updates.

FastAPI (on Starlette, under uvicorn): the JSON API gets its OpenAPI document from the route
signatures (`/api/openapi.json`), request bodies are validated by pydantic as the config already
is, and Starlette serves Jinja2 pages (autoescaped) and a server-sent event stream from the same
process. Server-sent events rather than websockets: updates only flow to the browser, and
EventSource reconnects by itself after a console or network restart.

Every route resolves the session server-side; `by` on a request is the session's operator name,
never anything the client sends.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from nabij.contract import AckRequest, ResolveRequest
from nabij.keys import Keys
from nabij.orders import Order
from nabij.settings import ConsoleSettings
from services.alarm_gateway import operators
from services.console.core import AlarmDetail, Session, Throttle
from services.console.identity import Operators, Sessions
from services.console.reading import Reader

HERE: Final = Path(__file__).resolve().parent
COOKIE: Final = "nabij_session"
CSRF_HEADER: Final = "X-CSRF-Token"
# The contract's alarm id rule, for FastAPI to check (and document) on every path that takes one.
AlarmId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class LoginBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class NoteBody(BaseModel):
    note: str | None = Field(default=None, max_length=1000)


class ResolveBody(BaseModel):
    note: str = Field(min_length=1, max_length=1000)


class NotLoggedInError(Exception):
    """No valid session: the API answers 401, a page sends the operator to the login page."""


class RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


@dataclass
class Console:
    """Everything a request handler needs, built once per app."""

    client: redis.Redis
    keys: Keys
    settings: ConsoleSettings
    clock: Callable[[], int]
    reader: Reader
    people: Operators
    sessions: Sessions
    throttle: Throttle
    failures: dict[str, list[int]] = field(default_factory=dict)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(console: Console, token: str | None) -> Session | None:
    """The live session of `token`: not expired, its operator not removed nor given another role."""
    session = console.sessions.get(token)
    if session is None or console.people.role(session.name) != session.role:
        return None
    return session


def current(request: Request) -> Session:
    session = session_of(console_of(request), request.cookies.get(COOKIE))
    if session is None:
        raise NotLoggedInError
    return session


def checked(request: Request, session: Annotated[Session, Depends(current)]) -> Session:
    """The session, if the request carries its CSRF token (every state-changing request)."""
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise RefusedError(403, f"missing or wrong {CSRF_HEADER} header: nothing was done")
    return session


Operator = Annotated[Session, Depends(current)]
Acting = Annotated[Session, Depends(checked)]
Ctx = Annotated[Console, Depends(console_of)]


def create_app(
    client: redis.Redis,
    keys: Keys,
    settings: ConsoleSettings,
    clock: Callable[[], int],
) -> FastAPI:
    """The console on `client` (connected as the console's Redis user), on nabij's `clock`."""
    app = FastAPI(
        title="nabij dispatcher console",
        openapi_url="/api/openapi.json",
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN: nothing external here
        redoc_url=None,
    )
    app.state.console = Console(
        client, keys, settings, clock,
        reader=Reader(client, keys),
        people=Operators(client, keys),
        sessions=Sessions(client, keys, int(settings.session_ttl_s * 1000), clock),
        throttle=Throttle(settings.login_attempts, int(settings.login_window_s * 1000)),
    )  # fmt: skip
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(NotLoggedInError, _not_logged_in)
    app.add_exception_handler(RefusedError, _refused)
    app.add_exception_handler(redis.RedisError, _redis_down)
    app.include_router(api)
    app.include_router(pages)
    return app


def _not_logged_in(request: Request, _err: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "not logged in, or the session expired"}, 401)
    return RedirectResponse("/login?expired=1", 303)


def _refused(_request: Request, err: Exception) -> Response:
    assert isinstance(err, RefusedError)
    return JSONResponse({"detail": err.message}, err.status)


def _redis_down(request: Request, _err: Exception) -> Response:
    message = "Redis cannot be reached; this page retries by itself. Nothing is lost."
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, 503)
    return HTMLResponse(f"<!doctype html><meta http-equiv=refresh content=2><p>{message}", 503)


api = APIRouter(prefix="/api")
pages = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


@api.post("/login", summary="Log in; the answer holds the CSRF token")
def login(body: LoginBody, request: Request, console: Ctx) -> JSONResponse:
    now, throttle, failures = console.clock(), console.throttle, console.failures
    who = [f"name:{body.name}", f"addr:{request.client.host if request.client else '?'}"]
    wait_ms = max(throttle.blocked_for_ms(failures.get(k, []), now) for k in who)
    if wait_ms > 0:
        return JSONResponse(
            {"detail": "too many failed logins; try again later"},
            429,
            headers={"Retry-After": str(max(1, wait_ms // 1000))},
        )
    role = console.people.verify(body.name, body.password)
    if role is None:
        for key in [k for k in failures if not throttle.recent(failures[k], now)]:
            del failures[key]  # forget what no longer counts: guessed names cannot fill memory
        for key in who:
            failures[key] = [*throttle.recent(failures.get(key, []), now), now]
        return JSONResponse({"detail": "unknown name or wrong password"}, 401)
    token, session = console.sessions.open(body.name, role)
    response = JSONResponse({"name": session.name, "role": role, "csrf_token": session.csrf_token})
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(console.settings.session_ttl_s),
        httponly=True,
        secure=console.settings.secure_cookies,
        samesite="strict",
    )
    return response


@api.post("/logout", summary="End the session")
def logout(request: Request, _session: Acting, console: Ctx) -> JSONResponse:
    console.sessions.close(request.cookies.get(COOKIE, ""))
    response = JSONResponse({"detail": "logged out"})
    response.delete_cookie(COOKIE)
    return response


def wire(value: object) -> Any:
    return msgspec.to_builtins(value)


@api.get("/alarms", summary="Open alarms of the operator's queue, most urgent first")
def api_alarms(session: Operator, console: Ctx) -> JSONResponse:
    situations = console.reader.board(session.role, console.clock())
    alarms = [alarm for s in situations for alarm in s.alarms]
    return JSONResponse({"alarms": wire(alarms), "situations": wire(situations)})


def detail_or_404(alarm_id: str, session: Session, console: Console) -> AlarmDetail:
    detail = console.reader.detail(alarm_id, session.role, console.clock())
    if detail is None:
        raise RefusedError(404, f"{alarm_id}: no open alarm with this id in your queue "
                           "(resolved already, or never opened)")  # fmt: skip
    return detail


@api.get("/alarms/{alarm_id}", summary="One alarm with its timeline of notices")
def api_alarm(alarm_id: AlarmId, session: Operator, console: Ctx) -> JSONResponse:
    return JSONResponse(wire(detail_or_404(alarm_id, session, console)))


def act(
    kind: type[AckRequest] | type[ResolveRequest],
    alarm_id: str,
    note: str | None,
    session: Session,
    console: Console,
) -> JSONResponse:
    """Send the request to the gateway as the session's operator; tell what the gateway did."""
    if console.reader.record(alarm_id, session.role) is None:
        detail_or_404(alarm_id, session, console)
    client, keys = console.client, console.keys
    try:
        sent = operators.request(client, keys, kind, alarm_id, by=session.name, note=note,
                                 now_ms=console.clock(), via="console")  # fmt: skip
    except operators.OperatorError as err:
        raise RefusedError(422, str(err)) from err
    outcome = operators.wait_outcome(client, keys, sent.request_id, console.settings.outcome_wait_s)
    if outcome is None:
        message = (f"{alarm_id}: the gateway has not answered; the request waits and is applied "
                   "when it runs again")  # fmt: skip
        return JSONResponse({"status": "queued", "message": message}, 202)
    told = operators.tell(sent, outcome)
    return JSONResponse({"status": outcome.status, "message": told.message})


@api.post("/alarms/{alarm_id}/ack", summary="Acknowledge, as the logged-in operator")
def api_ack(
    alarm_id: AlarmId, session: Acting, console: Ctx, body: NoteBody | None = None
) -> JSONResponse:
    return act(AckRequest, alarm_id, body.note if body else None, session, console)


@api.post("/alarms/{alarm_id}/resolve", summary="Resolve, with a required note")
def api_resolve(
    alarm_id: AlarmId, body: ResolveBody, session: Acting, console: Ctx
) -> JSONResponse:
    return act(ResolveRequest, alarm_id, body.note, session, console)


def order_view(order: Order, reader: Reader) -> dict[str, Any]:
    """An order for either role: rings, zones, exemptions, and each device's last contact,
    battery and presence (never a position)."""
    devices: dict[str, dict[str, Any] | None] = {}
    for device_id in [order.offender_device, *order.victim_devices]:
        state = reader.device(device_id)
        devices[device_id] = (
            None
            if state is None
            else {
                "last_contact": state.last_heard_ms,
                "battery": state.batt,
                "online": state.online,
            }
        )
    return {
        "order_id": order.id,
        "offender_device": order.offender_device,
        "victim_devices": list(order.victim_devices),
        "alarm_m": order.alarm_m,
        "pre_alert_m": order.pre_alert_ring_m,
        "zones": zones_of(order),
        "exemptions": [e.model_dump(exclude_none=True) for e in order.exemption],
        "devices": devices,
    }


def zones_of(order: Order | None) -> list[dict[str, Any]]:
    return [] if order is None else [z.model_dump(exclude_none=True) for z in order.zone]


@api.get("/orders", summary="The orders with their devices' last contact")
def api_orders(_session: Operator, console: Ctx) -> JSONResponse:
    return JSONResponse(
        {"orders": [order_view(o, console.reader) for o in console.reader.orders()]}
    )


@api.get("/status", summary="Whether Redis and the gateway answer")
def api_status(_session: Operator, console: Ctx) -> JSONResponse:
    return JSONResponse({"redis": True, "gateway": console.reader.gateway_alive()})


@api.get("/events", summary="Server-sent events: notices reaching the operator's queue")
def api_events(request: Request, session: Operator, console: Ctx) -> StreamingResponse:
    token = request.cookies.get(COOKIE)
    expired = lambda: session_of(console, token) is None  # noqa: E731  # read per step
    return StreamingResponse(
        events(console.reader, session, expired), media_type="text/event-stream"
    )


def events(reader: Reader, session: Session, expired: Callable[[], bool]) -> Iterator[str]:
    """Notices as they reach the queue, the gateway's and Redis's state when it changes, and
    the end of the session; a Redis outage is told and waited out (EventSource also retries)."""
    yield "retry: 1000\n\n"
    gateway: bool | None = None
    while True:
        try:
            for item in reader.follow(session.role, expired):
                if isinstance(item, str) and item:
                    yield sse("fault", {"message": item})
                elif not isinstance(item, str):
                    told = {"alarm_id": item.alarm_id, "event": item.event, "kind": item.kind,
                            "priority": item.priority}  # fmt: skip
                    yield sse("notice", told)
                if (alive := reader.gateway_alive()) != gateway:
                    gateway = alive
                    yield sse("status", {"redis": True, "gateway": alive})
            yield sse("expired", {"message": "your session expired: log in again"})
            return
        except redis.RedisError:
            gateway = None
            yield sse("status", {"redis": False, "gateway": False})
            time.sleep(1)


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


# --- pages ---------------------------------------------------------------------------------


def page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    """A page rendered with Jinja2 autoescaping: no text from Redis reaches it unescaped."""
    return templates.TemplateResponse(request, name, {"session": session, **context})


@pages.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/board", 303)


@pages.get("/healthz")
def healthz() -> PlainTextResponse:
    """Liveness for the container's HEALTHCHECK (`nabij healthcheck --port PORT`): no session,
    no Redis call, nothing about alarms."""
    return PlainTextResponse("ok")


@pages.get("/login")
def login_page(request: Request, expired: bool = False) -> HTMLResponse:
    return page(request, "login.html", None, expired=expired)


@pages.get("/board")
def board_page(request: Request, session: Operator, console: Ctx) -> HTMLResponse:
    situations = console.reader.board(session.role, console.clock())
    return page(request, "board.html", session, situations=situations,
                gateway=console.reader.gateway_alive())  # fmt: skip


@pages.get("/board/rows")
def board_rows(request: Request, session: Operator, console: Ctx) -> HTMLResponse:
    situations = console.reader.board(session.role, console.clock())
    return page(request, "_rows.html", session, situations=situations)


@pages.get("/alarms/{alarm_id}")
def alarm_page(request: Request, alarm_id: AlarmId, session: Operator, console: Ctx) -> Response:
    detail = console.reader.detail(alarm_id, session.role, console.clock())
    if detail is None:
        return page(request, "gone.html", session, alarm_id=alarm_id)
    order_id = detail.alarm.order_id
    zones = zones_of(None if order_id is None else console.reader.order(order_id))
    return page(request, "alarm.html", session, detail=detail,
                map_data={"track": wire(detail.track), "zones": zones})  # fmt: skip


@pages.get("/orders")
def orders_page(request: Request, session: Operator, console: Ctx) -> HTMLResponse:
    views = [order_view(o, console.reader) for o in console.reader.orders()]
    return page(request, "orders.html", session, orders=views)
