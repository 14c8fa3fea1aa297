"""Real frameworks (Starlette, FastAPI, Django) served by heron over real sockets.

Each app is built per test (no shared state between tests) and talked to with
httpx, or with a raw socket where the connection itself matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from ..conftest import serve

WAIT = 5.0


@contextlib.contextmanager
def heron_log_records(level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """Collect what heron logs on ``heron.error`` (whatever logging set-up other tests left)."""
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("heron.error")
    handler = _Collect(level)
    old_level, old_disabled = logger.level, logger.disabled
    logger.setLevel(level)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.disabled = old_disabled


def client_port(response: httpx.Response) -> int:
    return int(response.json()["client_port"])


# --- Starlette -----------------------------------------------------------------------------------

from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402


def make_starlette(events: dict[str, Any]) -> Starlette:
    """A Starlette app; ``events`` is how it reports back to the test (thread-safe Events and values)."""

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "item_id": request.path_params["item_id"],
                "name": request.path_params["name"],
                "q": request.query_params.get("q"),
                "tags": request.query_params.getlist("tag"),
                "client_port": request.client.port if request.client else None,
            }
        )

    async def echo_json(request: Request) -> JSONResponse:
        data = await request.json()
        return JSONResponse({"received": data, "method": request.method}, status_code=201)

    async def stream(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(20):
                yield b"part-%02d\n" % i
                await asyncio.sleep(0.005)

        return StreamingResponse(gen(), media_type="text/plain")

    def after_response(payload: str) -> None:
        # Runs after the response: it waits for the client to have the response in hand, which
        # deadlocks (and fails below) if the server held the response back until the task ended.
        events["task_saw_client_done"] = events["client_got_response"].wait(WAIT)
        events["task_payload"] = payload
        events["task_done"].set()

    async def with_task(request: Request) -> PlainTextResponse:
        return PlainTextResponse("accepted", background=BackgroundTask(after_response, "job-42"))

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom from the test app")

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"client_port": request.client.port if request.client else None})

    async def state(request: Request) -> JSONResponse:
        request.state.counter["hits"] += 1
        return JSONResponse({"greeting": request.state.greeting, "hits": request.state.counter["hits"]})

    async def resource(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x" * 1234, headers={"x-resource": "yes"})

    async def watch(request: Request) -> PlainTextResponse:
        # Long-poll style: wait (without writing) until the client goes away.
        events["watch_started"].set()
        first = await request.is_disconnected()
        events["first_check"] = first
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                events["watch_saw_disconnect"].set()
                break
            await asyncio.sleep(0.02)
        return PlainTextResponse("done")

    async def check_connected(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"disconnected": await request.is_disconnected(), "len": len(body)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events["startup"] = True
        yield {"greeting": "hello from lifespan", "counter": {"hits": 0}}
        events["shutdown"] = True

    return Starlette(
        routes=[
            Route("/items/{item_id:int}/{name}", item),
            Route("/echo", echo_json, methods=["POST"]),
            Route("/stream", stream),
            Route("/task", with_task),
            Route("/boom", boom),
            Route("/whoami", whoami),
            Route("/state", state),
            Route("/resource", resource, methods=["GET"]),
            Route("/watch", watch),
            Route("/connected", check_connected, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def starlette_events() -> dict[str, Any]:
    return {
        "client_got_response": threading.Event(),
        "task_done": threading.Event(),
        "watch_started": threading.Event(),
        "watch_saw_disconnect": threading.Event(),
    }


def test_starlette_path_and_query_params() -> None:
    with serve(make_starlette(starlette_events())) as srv:
        with httpx.Client(base_url=srv.url) as client:
            r = client.get("/items/42/caf%C3%A9", params=[("q", "a b&c"), ("tag", "x"), ("tag", "y")])
            assert r.status_code == 200
            data = r.json()
            assert data["item_id"] == 42 and data["name"] == "café"
            assert data["q"] == "a b&c" and data["tags"] == ["x", "y"]
            # the int convertor refuses a non-number: Starlette's own 404
            assert client.get("/items/abc/x").status_code == 404


def test_starlette_json_echo() -> None:
    payload = {"name": "heron", "nested": {"list": [1, 2, 3], "unicode": "żółw"}, "big": "z" * 100_000}
    with serve(make_starlette(starlette_events())) as srv:
        r = httpx.post(srv.url + "/echo", json=payload)
        assert r.status_code == 201
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"received": payload, "method": "POST"}


def test_starlette_streaming_response_is_chunked_and_streamed() -> None:
    with serve(make_starlette(starlette_events())) as srv:
        with httpx.Client(base_url=srv.url) as client:
            with client.stream("GET", "/stream") as r:
                assert r.status_code == 200
                assert r.headers["transfer-encoding"] == "chunked"
                assert "content-length" not in r.headers
                pieces = list(r.iter_raw())
            body = b"".join(pieces)
            assert body == b"".join(b"part-%02d\n" % i for i in range(20))
            # the app paused between parts, so the body arrived in more than one read
            assert len(pieces) > 1
            # and the connection is still good afterwards
            assert client.get("/whoami").status_code == 200


def test_starlette_background_task_runs_after_the_response() -> None:
    events = starlette_events()
    with serve(make_starlette(events)) as srv:
        with httpx.Client(base_url=srv.url, timeout=WAIT) as client:
            r = client.get("/task")
            assert r.status_code == 200 and r.text == "accepted"
            assert not events["task_done"].is_set()
            events["client_got_response"].set()
            assert events["task_done"].wait(WAIT), "background task never finished"
            assert events["task_saw_client_done"] is True
            assert events["task_payload"] == "job-42"
            # the connection is reusable once the task is over
            assert client.get("/whoami").status_code == 200


def test_starlette_exception_gives_500_and_connection_survives() -> None:
    with heron_log_records(logging.ERROR) as records:
        with serve(make_starlette(starlette_events())) as srv:
            with httpx.Client(base_url=srv.url) as client:
                before = client_port(client.get("/whoami"))
                r = client.get("/boom")
                assert r.status_code == 500
                assert r.text == "Internal Server Error"
                after = client.get("/whoami")
                assert after.status_code == 200
                # same TCP connection: the 500 was complete and kept the connection
                assert client_port(after) == before
    # heron logs the app's exception (Starlette re-raises after answering)
    assert any("boom from the test app" in str(rec.exc_info[1]) for rec in records if rec.exc_info)


def test_starlette_lifespan_state_reaches_requests() -> None:
    events = starlette_events()
    with serve(make_starlette(events), lifespan="on") as srv:
        assert events.get("startup") is True
        r1 = httpx.get(srv.url + "/state")
        r2 = httpx.get(srv.url + "/state")
        assert r1.json() == {"greeting": "hello from lifespan", "hits": 1}
        # the per-request state is a shallow copy: mutable values are shared
        assert r2.json() == {"greeting": "hello from lifespan", "hits": 2}
        assert "shutdown" not in events
    assert events.get("shutdown") is True
    assert srv.exit_code == 0


def test_starlette_head_on_get_route() -> None:
    with serve(make_starlette(starlette_events())) as srv:
        sock = srv.connect()
        try:
            # HEAD then GET pipelined: if the HEAD response carried body bytes, the GET's status
            # line would not follow its head directly
            sock.sendall(b"HEAD /resource HTTP/1.1\r\nHost: t\r\n\r\nGET /resource HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            sock.settimeout(WAIT)
            while data.count(b"\r\n\r\n") < 2 or not data.endswith(b"x" * 1234):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        head1, _, rest = data.partition(b"\r\n\r\n")
        assert head1.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ncontent-length: 1234" in head1.lower()
        assert b"\r\nx-resource: yes" in head1.lower()
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
        head2, _, body2 = rest.partition(b"\r\n\r\n")
        assert body2 == b"x" * 1234
        r = httpx.head(srv.url + "/resource")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "1234"


def test_starlette_is_disconnected_false_while_connected() -> None:
    with serve(make_starlette(starlette_events())) as srv:
        r = httpx.post(srv.url + "/connected", content=b"abc" * 1000)
        assert r.json() == {"disconnected": False, "len": 3000}


def test_starlette_is_disconnected_sees_client_close() -> None:
    events = starlette_events()
    with serve(make_starlette(events)) as srv:
        sock = srv.connect()
        sock.sendall(b"GET /watch HTTP/1.1\r\nHost: t\r\n\r\n")
        assert events["watch_started"].wait(WAIT)
        time.sleep(0.1)
        sock.close()
        assert events["watch_saw_disconnect"].wait(WAIT), "request.is_disconnected() never became true"
        assert events["first_check"] is False


# --- FastAPI -------------------------------------------------------------------------------------

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, UploadFile  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402


class ItemIn(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


class UserIn(BaseModel):
    username: str
    password: str


class UserOut(BaseModel):
    username: str


def make_fastapi() -> FastAPI:
    app = FastAPI(title="heron-fastapi-test", version="9.9.9")

    async def current_user(x_token: str = Header()) -> str:
        if x_token != "secret":
            raise HTTPException(status_code=401, detail="bad token")
        return "alice"

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None, limit: int = Query(10, le=100)) -> dict[str, Any]:
        return {"item_id": item_id, "q": q, "limit": limit}

    @app.post("/items", status_code=201)
    async def create_item(item: ItemIn) -> dict[str, Any]:
        return {"item": item.model_dump(), "total": item.price * 2}

    @app.get("/me")
    async def me(user: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user}

    @app.post("/users", response_model=UserOut)
    async def create_user(user: UserIn) -> Any:
        return user  # the password is filtered out by response_model

    @app.post("/upload")
    async def upload(file: UploadFile = File(...), note: str = Form("")) -> dict[str, Any]:  # noqa: B008  # (FastAPI's idiom)
        digest = hashlib.sha256()
        size = 0
        while chunk := await file.read(65536):
            digest.update(chunk)
            size += len(chunk)
        return {
            "filename": file.filename,
            "content_type": file.content_type,
            "size": size,
            "sha256": digest.hexdigest(),
            "note": note,
        }

    return app


def test_fastapi_path_query_validation() -> None:
    with serve(make_fastapi()) as srv:
        with httpx.Client(base_url=srv.url) as client:
            r = client.get("/items/7", params={"q": "hi", "limit": 5})
            assert r.status_code == 200 and r.json() == {"item_id": 7, "q": "hi", "limit": 5}
            r = client.get("/items/not-a-number")
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["path", "item_id"]
            r = client.get("/items/7", params={"limit": 1000})
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_fastapi_body_model_validation() -> None:
    with serve(make_fastapi()) as srv:
        with httpx.Client(base_url=srv.url) as client:
            r = client.post("/items", json={"name": "pen", "price": 1.5, "tags": ["a"]})
            assert r.status_code == 201
            assert r.json() == {"item": {"name": "pen", "price": 1.5, "tags": ["a"]}, "total": 3.0}
            r = client.post("/items", json={"name": "", "price": -1})
            assert r.status_code == 422
            locs = sorted(tuple(d["loc"]) for d in r.json()["detail"])
            assert locs == [("body", "name"), ("body", "price")]
            r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 422
            # still the same healthy connection after the errors
            assert client.get("/items/1").status_code == 200


def test_fastapi_dependency() -> None:
    with serve(make_fastapi()) as srv:
        assert httpx.get(srv.url + "/me", headers={"x-token": "secret"}).json() == {"user": "alice"}
        assert httpx.get(srv.url + "/me", headers={"x-token": "nope"}).status_code == 401
        assert httpx.get(srv.url + "/me").status_code == 422  # missing header


def test_fastapi_response_model_filters_output() -> None:
    with serve(make_fastapi()) as srv:
        r = httpx.post(srv.url + "/users", json={"username": "bob", "password": "hunter2"})
        assert r.status_code == 200
        assert r.json() == {"username": "bob"}


def test_fastapi_upload_file_one_mib() -> None:
    data = os.urandom(1024 * 1024 + 123)
    with serve(make_fastapi()) as srv:
        r = httpx.post(
            srv.url + "/upload",
            files={"file": ("blob.bin", data, "application/octet-stream")},
            data={"note": "one mebibyte"},
            timeout=30,
        )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "note": "one mebibyte",
    }


def test_fastapi_openapi_json() -> None:
    with serve(make_fastapi()) as srv:
        r = httpx.get(srv.url + "/openapi.json")
        docs = httpx.get(srv.url + "/docs")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    schema = r.json()
    assert schema["info"] == {"title": "heron-fastapi-test", "version": "9.9.9"}
    assert {"/items/{item_id}", "/items", "/me", "/users", "/upload"} <= set(schema["paths"])
    assert "UserOut" in schema["components"]["schemas"]
    assert int(r.headers["content-length"]) == len(r.content)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- Django --------------------------------------------------------------------------------------

from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def dj_plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain django view", content_type="text/plain")


def dj_post(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "method": request.method,
            "length": len(request.body),
            "sha256": hashlib.sha256(request.body).hexdigest(),
            "query": request.GET.get("q"),
            "content_type": request.content_type,
        }
    )


async def dj_async(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0.01)
    return JsonResponse({"async": True, "path": request.path, "host": request.get_host()})


def dj_form(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"fields": {k: request.POST.getlist(k) for k in request.POST}})


urlpatterns = [
    path("plain/", dj_plain),
    path("post/", dj_post),
    path("async/", dj_async),
    path("form/", dj_form),
]


@pytest.fixture(scope="module")
def django_app() -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="heron-test-not-secret",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            DATABASES={},
            USE_TZ=True,
        )
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def test_django_plain_view_and_404(django_app: Any) -> None:
    with serve(django_app) as srv:
        with httpx.Client(base_url=srv.url) as client:
            r = client.get("/plain/")
            assert r.status_code == 200 and r.text == "plain django view"
            assert r.headers["content-type"] == "text/plain"
            r = client.get("/does-not-exist/")
            assert r.status_code == 404
            assert "Not Found" in r.text
            # keep-alive holds across Django responses
            assert client.get("/plain/").status_code == 200


def test_django_post_body(django_app: Any) -> None:
    body = os.urandom(300_000)
    with serve(django_app) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            r = client.post("/post/?q=z", content=body, headers={"content-type": "application/octet-stream"})
            assert r.status_code == 200
            assert r.json() == {
                "method": "POST",
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "query": "z",
                "content_type": "application/octet-stream",
            }
            # chunked upload (no content-length) reaches the view too
            r = client.post("/post/", content=iter([b"ab", b"cd" * 5000]))
            assert r.json()["length"] == 2 + 10000
            r = client.post("/form/", data={"a": "1", "b": ["x", "y"]})
            assert r.json() == {"fields": {"a": ["1"], "b": ["x", "y"]}}


def test_django_async_view(django_app: Any) -> None:
    with serve(django_app) as srv:
        r = httpx.get(srv.url + "/async/")
    assert r.status_code == 200
    assert r.json() == {"async": True, "path": "/async/", "host": f"127.0.0.1:{srv.port}"}


def test_django_as_a_wsgi_app(django_app: Any) -> None:
    """The same project through Django's WSGI handler: heron detects WSGI by itself."""
    from django.core.wsgi import get_wsgi_application

    body = os.urandom(200_000)
    with serve(get_wsgi_application()) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            r = client.get("/plain/")
            assert r.status_code == 200 and r.text == "plain django view"
            r = client.post("/post/?q=w", content=body, headers={"content-type": "application/octet-stream"})
            assert r.json()["sha256"] == hashlib.sha256(body).hexdigest() and r.json()["query"] == "w"
            r = client.post("/form/", data={"a": "1", "b": ["x", "y"]})
            assert r.json() == {"fields": {"a": ["1"], "b": ["x", "y"]}}
            assert client.get("/async/").json()["async"] is True
            assert client.get("/nope/").status_code == 404


def test_django_with_lifespan_auto_is_quietly_skipped(django_app: Any) -> None:
    with heron_log_records(logging.INFO) as records:
        with serve(django_app, lifespan="auto") as srv:
            r = httpx.get(srv.url + "/plain/")
            assert r.status_code == 200 and r.text == "plain django view"
            assert httpx.get(srv.url + "/async/").status_code == 200
    assert srv.exit_code == 0
    messages = [rec.getMessage() for rec in records]
    assert any("lifespan" in m and "unsupported" in m for m in messages), messages
    # quietly: nothing at WARNING or above, and no traceback
    loud = [rec for rec in records if rec.levelno >= logging.WARNING or rec.exc_info]
    assert loud == [], [rec.getMessage() for rec in loud]


def test_django_lifespan_on_is_a_startup_failure(django_app: Any) -> None:
    """The counterpart: with lifespan="on", Django's refusal stops start-up (exit status 3)."""
    from heron.config import Config
    from heron.server import Server

    server = Server(Config(app=django_app, port=0, lifespan="on", log_level="warning", access_log=False))
    with heron_log_records(logging.ERROR) as records:
        status = asyncio.run(asyncio.wait_for(server.serve(install_signal_handlers=False), 15))
    assert status == 3
    assert not server.started.is_set()
    assert any("lifespan" in rec.getMessage().lower() or "startup" in rec.getMessage().lower() for rec in records)
