"""The "real app" scenarios: a small JSON endpoint in Starlette and in FastAPI.

    bench.app_starlette:starlette_app   Starlette route returning JSONResponse
    bench.app_starlette:fastapi_app     FastAPI route with a pydantic response model

Both answer GET / with the same JSON document. Lifespan is handled by the
frameworks.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PAYLOAD = {"message": "Hello, world!", "id": 42, "tags": ["a", "b", "c"]}


async def _index(request: Request) -> JSONResponse:
    return JSONResponse(PAYLOAD)


starlette_app = Starlette(routes=[Route("/", _index)])


class Item(BaseModel):
    message: str
    id: int
    tags: list[str]


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@fastapi_app.get("/", response_model=Item)
async def fastapi_index() -> Item:
    return Item(**PAYLOAD)


app = starlette_app
