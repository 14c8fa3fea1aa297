"""Prometheus metrics (``--metrics-bind ADDRESS``), served at ``/metrics`` on
their own listener.

Cost: with metrics off nothing here is created and the transports make no
call for them. With metrics on, a finished request costs one call
(:meth:`Metrics.request`: two dict updates and a bisect), bytes are counted
by a thin wrapper around each connection's transport, and gauges (in-flight
requests, open connections and WebSocket sessions) are read from the
server's registries at scrape time, not maintained per request.

With several workers (``--workers N``) each worker keeps its own
:class:`Metrics`; the supervisor owns the metrics listener and, per scrape,
asks every worker for a :meth:`Metrics.snapshot` over its pipe and adds them
up (:func:`merge`), so one scrape sees the whole server.
"""

from __future__ import annotations

import asyncio
import bisect
import http
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import __version__


class Registries(Protocol):
    """What the gauges are read from at scrape time (the server's ``ServerContext``)."""

    tasks: set[asyncio.Task[None]]
    connections: set[Any]


#: latency histogram bucket bounds, seconds (Prometheus client defaults)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}

#: ServerContext.connections member class -> "protocol" label
PROTOCOL_LABELS = {
    "H1Protocol": "http/1.1",
    "WebSocketProtocol": "websocket",
    "H2Protocol": "h2",
}


class Metrics:
    """Counters for one server. Updated from the event loop thread only."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.response_body_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections_total = 0
        self.websocket_sessions: dict[int, int] = {}
        self.parse_errors: dict[int, int] = {}
        #: the server whose open connections and tasks the gauges count
        self.ctx: Registries | None = None

    # --- updates (hot path when on) ----------------------------------------------

    def request(self, method: bytes, status: int, duration: float, nbytes: int) -> None:
        key = (_METHODS.get(method, "other"), status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.response_body_bytes += nbytes

    def websocket_closed(self, code: int, bytes_in: int) -> None:
        self.websocket_sessions[code] = self.websocket_sessions.get(code, 0) + 1
        self.bytes_in += bytes_in  # after the upgrade, reads bypass the metered protocol

    def parse_error(self, status: int) -> None:
        self.parse_errors[status] = self.parse_errors.get(status, 0) + 1

    # --- exposition ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every figure of this server now, as plain data (picklable, mergeable)."""
        in_flight, websockets, by_protocol = self._scan()
        return {
            "requests": dict(self.requests),
            "buckets": list(self.buckets),
            "duration_sum": self.duration_sum,
            "response_body_bytes": self.response_body_bytes,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connections_total": self.connections_total,
            "websocket_sessions": dict(self.websocket_sessions),
            "parse_errors": dict(self.parse_errors),
            "in_flight": in_flight,
            "websockets_open": websockets,
            "connections_open": by_protocol,
        }

    def render(self) -> str:
        return render(self.snapshot())

    def _scan(self) -> tuple[int, int, dict[str, int]]:
        ctx = self.ctx
        if ctx is None:
            return 0, 0, {}
        in_flight = websockets = 0
        for task in list(ctx.tasks):
            owner = getattr(task.get_coro(), "__qualname__", "")
            if owner == "HTTPCycle.run":
                in_flight += 1
            elif owner == "WebSocketCycle.run":
                websockets += 1
        by_protocol: dict[str, int] = {}
        for connection in list(ctx.connections):
            name = type(connection).__name__
            label = getattr(connection, "metrics_protocol", None) or PROTOCOL_LABELS.get(name, name.lower())
            by_protocol[label] = by_protocol.get(label, 0) + 1
        return in_flight, websockets, by_protocol


def render(snap: dict[str, Any], workers: int | None = None) -> str:
    """A snapshot (or a merge of several) in the Prometheus text exposition format 0.0.4;
    ``workers``: the live worker count, shown when there is a supervisor."""
    out: list[str] = []

    def metric(name: str, kind: str, help: str, samples: list[tuple[str, Any]]) -> None:
        out.append(f"# HELP {name} {help}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {_number(value)}")

    metric("heron_info", "gauge", "heron version.", [(f'{{version="{__version__}"}}', 1)])
    if workers is not None:
        metric("heron_workers", "gauge", "Live worker processes.", [("", workers)])
    metric(
        "heron_http_requests_total",
        "counter",
        "HTTP requests answered, by method and status.",
        [(f'{{method="{m}",status="{s}"}}', n) for (m, s), n in sorted(snap["requests"].items())],
    )
    cumulative = 0
    samples: list[tuple[str, Any]] = []
    for bound, count in zip(BUCKETS + (float("inf"),), snap["buckets"]):
        cumulative += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        samples.append((f'_bucket{{le="{le}"}}', cumulative))
    out.append("# HELP heron_http_request_duration_seconds Time from the request head to the end of the response.")
    out.append("# TYPE heron_http_request_duration_seconds histogram")
    for suffix, value in samples:
        out.append(f"heron_http_request_duration_seconds{suffix} {value}")
    out.append(f"heron_http_request_duration_seconds_sum {_number(snap['duration_sum'])}")
    out.append(f"heron_http_request_duration_seconds_count {cumulative}")

    in_flight, websockets, by_protocol = snap["in_flight"], snap["websockets_open"], snap["connections_open"]
    metric("heron_http_requests_in_flight", "gauge", "HTTP requests being answered.", [("", in_flight)])
    metric(
        "heron_connections_open",
        "gauge",
        "Open client connections, by protocol.",
        [(f'{{protocol="{p}"}}', n) for p, n in sorted(by_protocol.items())],
    )
    metric("heron_connections_total", "counter", "Client connections accepted.", [("", snap["connections_total"])])
    metric("heron_received_bytes_total", "counter", "Bytes read from clients.", [("", snap["bytes_in"])])
    metric("heron_sent_bytes_total", "counter", "Bytes written to clients.", [("", snap["bytes_out"])])
    metric(
        "heron_http_response_body_bytes_total",
        "counter",
        "HTTP response body bytes sent by the app.",
        [("", snap["response_body_bytes"])],
    )
    metric("heron_websocket_sessions_open", "gauge", "Open WebSocket sessions.", [("", websockets)])
    metric(
        "heron_websocket_sessions_total",
        "counter",
        "Finished WebSocket sessions, by close code.",
        [(f'{{code="{c}"}}', n) for c, n in sorted(snap["websocket_sessions"].items())],
    )
    metric(
        "heron_http_parse_errors_total",
        "counter",
        "Malformed or timed-out requests refused, by status and kind.",
        [(f'{{status="{s}",kind="{_kind(s)}"}}', n) for s, n in sorted(snap["parse_errors"].items())],
    )
    return "\n".join(out) + "\n"


#: the snapshot figures that are gauges (a state now), not counters
GAUGES = ("in_flight", "websockets_open", "connections_open")


def counters_only(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` with its gauges at zero: what a worker that is gone still adds to
    the totals (it counted those requests; it holds no connection any more)."""
    empty = Metrics().snapshot()
    return {key: empty[key] if key in GAUGES else value for key, value in snap.items()}


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up several workers' snapshots (counters, histogram and gauges alike)."""
    total: dict[str, Any] = Metrics().snapshot()
    for snap in snapshots:
        for key, value in snap.items():
            if isinstance(value, dict):
                into = total[key]
                for label, n in value.items():
                    into[label] = into.get(label, 0) + n
            elif isinstance(value, list):
                total[key] = [a + b for a, b in zip(total[key], value)]
            else:
                total[key] += value
    return total


def _number(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _kind(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "other"


# --- the endpoint ------------------------------------------------------------------


class Health(Protocol):
    """What ``/livez`` and ``/readyz`` report (a server, or a supervisor for its workers)."""

    def is_live(self) -> bool: ...

    def is_ready(self) -> bool: ...


_NO_STORE = (b"cache-control", b"no-store")


def metrics_app(source: Metrics | Callable[[], Awaitable[str]], health: Health | None = None) -> Any:
    """A tiny ASGI app: ``GET /metrics`` (and ``/``) answer the exposition of
    ``source``: this process's :class:`Metrics`, or a coroutine function that
    renders it (the supervisor's, which asks its workers). ``/livez`` and
    ``/readyz`` answer 200 or 503 from ``health``: an orchestrator's probes
    (readiness turns 503 the moment a graceful shutdown starts)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        extra: list[tuple[bytes, bytes]] = []
        if path in ("/metrics", "/"):
            text = source.render() if isinstance(source, Metrics) else await source()
            status, body = 200, text.encode("utf-8")
            content_type = b"text/plain; version=0.0.4; charset=utf-8"
        elif path in ("/livez", "/readyz") and health is not None:
            ok = health.is_live() if path == "/livez" else health.is_ready()
            status = 200 if ok else 503
            body = b"ok\n" if ok else (b"not live\n" if path == "/livez" else b"not ready: shutting down\n")
            content_type = b"text/plain; charset=utf-8"
            extra.append(_NO_STORE)
        else:
            status, body, content_type = 404, b"Not Found: try /metrics\n", b"text/plain; charset=utf-8"
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return app
