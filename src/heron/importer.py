"""Load the application named on the command line, and adapt it to ASGI 3."""

from __future__ import annotations

import asyncio
import difflib
import importlib
import inspect
import logging
import sys
from typing import Any

from .asgi.http import ASGIApp


class AppLoadError(Exception):
    """The app could not be imported; the message is one line for the user."""


def import_from_string(target: str) -> Any:
    module_name, sep, attrs = target.partition(":")
    if not sep or not module_name or not attrs:
        raise AppLoadError(f"APP must be in the form 'module:attribute', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name and not module_name.startswith(f"{exc.name}."):
            raise  # a module the app imports is missing: show the real traceback
        raise AppLoadError(f"Could not import module {module_name!r}") from None
    obj: Any = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            close = difflib.get_close_matches(attr, [name for name in dir(obj) if not name.startswith("__")], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AppLoadError(f"Attribute {attrs!r} not found in module {module_name!r}{hint}") from None
    return obj


def load_app(
    target: Any,
    *,
    factory: bool = False,
    app_dir: str = "",
    interface: str = "auto",
    wsgi_threads: int = 10,
    multiprocess: bool = False,
) -> ASGIApp:
    """Import (if a string), call (if a factory) and adapt (if ASGI 2 or WSGI) the app."""
    if isinstance(target, str):
        sys.path.insert(0, app_dir or ".")
        app = import_from_string(target)
    else:
        app = target
    if factory:
        try:
            app = app()
        except TypeError as exc:
            raise AppLoadError(f"Error calling the app factory: {exc}") from None
    if not callable(app):  # refused now, not answered 500 on every request
        named = f" {target!r}" if isinstance(target, str) else ""
        raise AppLoadError(f"The app{named} is {type(app).__name__}, not a callable ASGI or WSGI app")
    if interface == "auto":
        if _is_asgi3(app):
            interface = "asgi3"
        else:
            from .asgi.wsgi import looks_like_wsgi

            interface = "wsgi" if looks_like_wsgi(app) else "asgi2"
    if interface == "wsgi":
        from .asgi.wsgi import WSGIAdapter

        logging.getLogger("heron.error").info("Serving the app as WSGI, in a pool of %d threads", wsgi_threads)
        return WSGIAdapter(app, threads=wsgi_threads, multiprocess=multiprocess)
    if interface == "asgi2":
        return _ASGI2Adapter(app)
    return app  # type: ignore[no-any-return]


def _is_asgi3(app: Any) -> bool:
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if asyncio.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004  # (the method itself, to inspect)
    return asyncio.iscoroutinefunction(call)


class _ASGI2Adapter:
    """Run an ASGI 2 (double-callable) app as ASGI 3."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)
