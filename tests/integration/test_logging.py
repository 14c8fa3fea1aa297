"""Logging through the real command line: text and JSON records, access-log
formats and presets, trace, --log-config (JSON, YAML, ini, uvicorn names),
uvicorn logger aliases, --no-configure-logging, colours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import need_program
from .test_cli import free_port, heron_server, lines, raw_request

APP_SOURCE = """
import logging

async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text") or ""})
            await send({"type": "websocket.close", "code": 1000})
        return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    if scope["path"] == "/log":
        logging.getLogger("uvicorn.error").info("app logs to uvicorn.error")
    body = b"hello"
    await send({
        "type": "http.response.start",
        "status": 201 if scope["path"] == "/created" else 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5"), (b"x-served-by", b"heron-test")],
    })
    await send({"type": "http.response.body", "body": body})
"""

REQUEST = (
    b"GET /items?page=2 HTTP/1.1\r\nHost: t\r\nUser-Agent: tester/1.0\r\nX-Request-ID: req-42\r\n"
    b"Referer: http://ref.example/\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nX-Custom: custom-value\r\n\r\n"
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "logapp.py").write_text(APP_SOURCE)
    return tmp_path


def serve_and_request(
    app_dir: Path, args: list[str], requests: list[bytes] | None = None, app: str = "logapp:app", **env: str
) -> Any:
    port = free_port()
    with heron_server([app, "--port", str(port), *args], app_dir, port=port, **env) as srv:
        for request in requests if requests is not None else [REQUEST]:
            raw_request(port, request)
        assert srv.stop() == 0
    return srv


# --- text -----------------------------------------------------------------------------------------


def test_default_access_line(app_dir: Path) -> None:
    srv = serve_and_request(app_dir, [])
    out = lines(srv.stdout)
    assert len(out) == 1
    assert re.fullmatch(r'INFO: +127\.0\.0\.1:\d+ - "GET /items\?page=2 HTTP/1\.1" 200 OK 5 \d+\.\dms', out[0]), out
    assert "\x1b" not in srv.stderr + srv.stdout  # not a terminal: no colours


@pytest.mark.parametrize(
    "preset, pattern",
    [
        (
            "common",
            r'127\.0\.0\.1 - alice \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /items\?page=2 HTTP/1\.1" 200 5',
        ),
        (
            "combined",
            r'127\.0\.0\.1 - alice \[[^]]+\] "GET /items\?page=2 HTTP/1\.1" 200 5 "http://ref\.example/" "tester/1\.0"',
        ),
    ],
)
def test_access_log_presets(app_dir: Path, preset: str, pattern: str) -> None:
    srv = serve_and_request(app_dir, ["--access-log-format", preset])
    out = lines(srv.stdout)
    assert len(out) == 1 and re.fullmatch(pattern, out[0]), out


def test_access_log_json_preset(app_dir: Path) -> None:
    srv = serve_and_request(app_dir, ["--access-log-format", "json"])
    record = json.loads(lines(srv.stdout)[0])
    assert record["method"] == "GET" and record["path"] == "/items" and record["query"] == "page=2"
    assert record["status"] == 200 and record["bytes"] == 5 and record["request_id"] == "req-42"
    assert record["user_agent"] == "tester/1.0" and record["http_version"] == "1.1"
    assert record["client"].startswith("127.0.0.1:") and record["duration_ms"] >= 0


def test_every_gunicorn_atom(app_dir: Path) -> None:
    fmt = (
        "h=%(h)s|l=%(l)s|u=%(u)s|t=%(t)s|r=%(r)s|m=%(m)s|U=%(U)s|q=%(q)s|H=%(H)s|s=%(s)s|b=%(b)s|B=%(B)s|"
        "f=%(f)s|a=%(a)s|D=%(D)s|T=%(T)s|M=%(M)s|L=%(L)s|p=%(p)s|i=%({x-custom}i)s|o=%({X-Served-By}o)s|"
        "missing=%({x-none}i)s|pct=%%|rid=%(request_id)s"
    )
    srv = serve_and_request(app_dir, ["--access-log-format", fmt])
    line = lines(srv.stdout)[0]
    fields = dict(part.split("=", 1) for part in line.split("|"))
    assert fields["h"] == "127.0.0.1" and fields["l"] == "-" and fields["u"] == "alice"
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["t"])
    assert fields["r"] == "GET /items?page=2 HTTP/1.1" and fields["m"] == "GET"
    assert (fields["U"], fields["q"], fields["H"], fields["s"]) == ("/items", "page=2", "HTTP/1.1", "200")
    assert (fields["b"], fields["B"]) == ("5", "5")
    assert fields["f"] == "http://ref.example/" and fields["a"] == "tester/1.0"
    assert fields["D"].isdigit() and fields["T"].isdigit() and fields["M"].isdigit()
    assert re.fullmatch(r"\d+\.\d{6}", fields["L"]) and re.fullmatch(r"<\d+>", fields["p"])
    assert (fields["i"], fields["o"], fields["missing"], fields["pct"]) == ("custom-value", "heron-test", "-", "%")
    assert fields["rid"] == "req-42"


def test_header_values_are_escaped_in_access_lines(app_dir: Path) -> None:
    request = b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: evil\x9b31m\xff\r\n\r\n"
    srv = serve_and_request(app_dir, ["--access-log-format", "combined"], [request])
    line = lines(srv.stdout)[0]
    assert line.endswith('"evil\\x9b31m\\xff"'), line


# --- JSON -------------------------------------------------------------------------------------------


def test_json_records_for_errors_and_access(app_dir: Path) -> None:
    srv = serve_and_request(
        app_dir,
        ["--log-format", "json"],
        [REQUEST, b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n", b"GET /x HTTP/1.1\r\nHost t\r\n\r\n"],
    )
    errors = [json.loads(line) for line in lines(srv.stderr)]
    for record in errors:
        assert set(record) >= {"time", "level", "logger", "message"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])
    assert any(r["message"].startswith("Started heron") and r["logger"] == "heron.error" for r in errors)
    crash = [r for r in errors if r["message"] == "Exception in ASGI application"]
    assert len(crash) == 1 and crash[0]["level"] == "error" and "RuntimeError: boom" in crash[0]["exc_info"]
    assert any(r["message"].startswith("Bad request from 127.0.0.1") for r in errors)
    access = [json.loads(line) for line in lines(srv.stdout)]
    assert [a["status"] for a in access] == [200, 500]
    first = access[0]
    assert first["logger"] == "heron.access" and first["level"] == "info"
    expected = {
        "method": "GET",
        "path": "/items",
        "query": "page=2",
        "status": 200,
        "bytes": 5,
        "http_version": "1.1",
        "user_agent": "tester/1.0",
        "request_id": "req-42",
    }
    assert {k: first[k] for k in expected} == expected
    assert first["client"].startswith("127.0.0.1:") and isinstance(first["duration_ms"], float)
    assert first["message"].startswith(first["client"] + ' - "GET /items?page=2 HTTP/1.1" 200 OK 5')
    assert "request_id" not in access[1]


def test_websocket_session_is_one_access_record(app_dir: Path) -> None:
    from websockets.sync.client import connect

    port = free_port()
    with heron_server(["logapp:app", "--port", str(port), "--log-format", "json"], app_dir, port=port) as srv:
        with connect(f"ws://127.0.0.1:{port}/chat?room=1") as ws:
            ws.send("hi")
            assert ws.recv() == "hi"
        assert srv.stop() == 0
    (record,) = [json.loads(line) for line in lines(srv.stdout)]
    assert record["type"] == "websocket" and record["status"] == 1000
    assert record["path"] == "/chat" and record["query"] == "room=1"
    assert record["bytes"] > 0 and record["bytes_in"] > 0


# --- trace ------------------------------------------------------------------------------------------


def test_trace_logs_asgi_messages(app_dir: Path) -> None:
    srv = serve_and_request(app_dir, ["--log-level", "trace"])
    trace = [line for line in lines(srv.stderr) if line.startswith("TRACE:")]
    text = "\n".join(trace)
    assert "ASGI [2] Started scope={'type': 'http'" in text
    assert "ASGI [2] Receive {'type': 'http.request', 'body': '<0 bytes>', 'more_body': False}" in text
    assert "ASGI [2] Send {'type': 'http.response.start', 'status': 200" in text
    assert "ASGI [2] Send {'type': 'http.response.body', 'body': '<5 bytes>'}" in text
    assert "ASGI [2] Completed" in text
    srv = serve_and_request(app_dir, ["--log-level", "debug"])
    assert "ASGI [" not in srv.stderr


# --- --log-config ---------------------------------------------------------------------------------------

UVICORN_STYLE = {
    "version": 1,
    "formatters": {
        "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s U %(message)s"},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s ACCESS %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def _check_uvicorn_style(srv: Any) -> None:
    assert re.search(r"^INFO: +U Started heron", srv.stderr, re.MULTILINE), srv.stderr
    out = lines(srv.stdout)
    assert len(out) == 2, out
    # (uvicorn's own AccessFormatter, when uvicorn is installed, adds the reason phrase)
    assert re.fullmatch(r'INFO: +ACCESS 127\.0\.0\.1:\d+ - "GET /items\?page=2 HTTP/1\.1" 200( OK)?', out[0]), out
    assert re.search(r"^INFO: +U app logs to uvicorn\.error$", srv.stderr, re.MULTILINE), srv.stderr


def test_log_config_json_written_for_uvicorn(app_dir: Path) -> None:
    (app_dir / "log.json").write_text(json.dumps(UVICORN_STYLE))
    srv = serve_and_request(app_dir, ["--log-config", "log.json"], [REQUEST, b"GET /log HTTP/1.1\r\nHost: t\r\n\r\n"])
    _check_uvicorn_style(srv)


def test_log_config_yaml(app_dir: Path) -> None:
    yaml = pytest.importorskip("yaml")
    (app_dir / "log.yaml").write_text(yaml.safe_dump(UVICORN_STYLE))
    srv = serve_and_request(app_dir, ["--log-config", "log.yaml"], [REQUEST, b"GET /log HTTP/1.1\r\nHost: t\r\n\r\n"])
    _check_uvicorn_style(srv)


def test_log_config_ini_does_not_disable_heron_loggers(app_dir: Path) -> None:
    (app_dir / "log.ini").write_text(
        "[loggers]\nkeys=root\n\n[handlers]\nkeys=err\n\n[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=INFO\nhandlers=err\n\n"
        "[handler_err]\nclass=StreamHandler\nformatter=plain\nargs=(sys.stderr,)\n\n"
        "[formatter_plain]\nformat=ROOT %(name)s %(message)s\n"
    )
    srv = serve_and_request(app_dir, ["--log-config", "log.ini"])
    assert "ROOT heron.error Started heron" in srv.stderr
    assert re.search(r'ROOT heron\.access 127\.0\.0\.1:\d+ - "GET /items\?page=2 HTTP/1\.1" 200', srv.stderr)


def test_log_config_never_disables_existing_loggers() -> None:
    script = (
        "import logging, json, sys\n"
        "from heron.logs import load_log_config\n"
        "early = logging.getLogger('myapp.early')\n"
        "load_log_config({'version': 1, 'root': {'level': 'INFO'}})\n"
        "assert not early.disabled\n"
        "load_log_config({'version': 1, 'disable_existing_loggers': True, 'root': {'level': 'INFO'}})\n"
        "print(early.disabled)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # only an explicit request in the file disables them


def test_log_level_applies_over_log_config(app_dir: Path) -> None:
    (app_dir / "log.json").write_text(json.dumps(UVICORN_STYLE))
    srv = serve_and_request(app_dir, ["--log-config", "log.json", "--log-level", "warning"])
    assert "Started heron" not in srv.stderr and srv.stdout == ""


# --- uvicorn aliases from the app ----------------------------------------------------------------------


def test_app_filters_on_uvicorn_access_apply(app_dir: Path) -> None:
    (app_dir / "filtered.py").write_text(
        "import logging\n"
        "from logapp import app\n"
        "class NoHealth(logging.Filter):\n"
        "    def filter(self, record):\n"
        "        return '/health' not in record.getMessage()\n"
        "logging.getLogger('uvicorn.access').addFilter(NoHealth())\n"
    )
    port = free_port()
    with heron_server(["filtered:app", "--port", str(port)], app_dir, port=port) as srv:
        raw_request(port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        raw_request(port, b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
        raw_request(port, b"GET /log HTTP/1.1\r\nHost: t\r\n\r\n")
        assert srv.stop() == 0
    out = lines(srv.stdout)
    assert len(out) == 2 and "/other" in out[0] and "/log" in out[1], out
    assert re.search(r"^INFO: +app logs to uvicorn\.error$", srv.stderr, re.MULTILINE)


def test_app_handlers_on_uvicorn_access_receive_heron_records(app_dir: Path) -> None:
    (app_dir / "collect.py").write_text(
        "import logging, sys\n"
        "from logapp import app\n"
        "handler = logging.StreamHandler(sys.stderr)\n"
        "handler.setFormatter(logging.Formatter('COLLECTED %(status_code)s %(request_line)s'))\n"
        "logging.getLogger('uvicorn.access').addHandler(handler)\n"
    )
    port = free_port()
    with heron_server(["collect:app", "--port", str(port)], app_dir, port=port) as srv:
        raw_request(port, b"GET /created HTTP/1.1\r\nHost: t\r\n\r\n")
        assert srv.stop() == 0
    assert "COLLECTED 201 GET /created HTTP/1.1" in srv.stderr
    assert len(lines(srv.stdout)) == 1  # heron's own access line still there, once


def test_no_configure_logging_leaves_logging_to_the_app(app_dir: Path) -> None:
    (app_dir / "ownlogs.py").write_text(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='APP %(levelname)s %(name)s %(message)s')\n"
        "from logapp import app\n"
    )
    srv = serve_and_request(app_dir, ["--no-configure-logging"], [REQUEST], app="ownlogs:app")
    srv_lines = lines(srv.stderr)
    assert any(line.startswith("APP INFO heron.error Started heron") for line in srv_lines), srv_lines
    assert any(line.startswith("APP INFO heron.access 127.0.0.1:") and "/items" in line for line in srv_lines)
    assert not any(line.startswith("INFO:") for line in srv_lines)
    assert srv.stdout == ""


# --- colours ------------------------------------------------------------------------------------------


def test_colours_only_when_asked_or_on_a_terminal(app_dir: Path) -> None:
    srv = serve_and_request(app_dir, ["--use-colors"])
    assert "\x1b[32mINFO\x1b[0m:" in srv.stderr and "\x1b[32mINFO\x1b[0m:" in srv.stdout
    srv = serve_and_request(app_dir, ["--no-use-colors"])
    assert "\x1b" not in srv.stderr + srv.stdout


def test_request_durations_have_microseconds_under_uvloop(app_dir: Path) -> None:
    """uvloop's loop.time() ticks in milliseconds: durations must come from a finer clock."""
    srv = serve_and_request(app_dir, ["--loop", "uvloop", "--access-log-format", "%(D)s"], [REQUEST] * 20)
    micros = [int(line) for line in lines(srv.stdout)]
    assert len(micros) == 20 and all(m >= 0 for m in micros), micros
    # not whole milliseconds (give or take a float's rounding): most requests here take well under one
    assert any(5 < m % 1000 < 995 for m in micros), micros


INVALID_RESPONSE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"x" * 1000
    # a header value with a newline: heron refuses the head and answers 500 itself
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"a\\nb")]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.mark.parametrize("http2", [False, True], ids=["http/1.1", "h2c"])
def test_heron_500_logs_the_bytes_it_sent(tmp_path: Path, http2: bool) -> None:
    """After an invalid response heron answers 500 itself: the record says 500 and
    the size of that answer, not of the body the app had tried to send."""
    (tmp_path / "badapp.py").write_text(INVALID_RESPONSE_APP)
    port = free_port()
    with heron_server(
        ["badapp:app", "--port", str(port), "--access-log-format", "%(s)s %(b)s"], tmp_path, port=port
    ) as srv:
        if http2:
            subprocess.run(
                [need_program("curl"), "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/"],
                capture_output=True,
                timeout=10,
            )
        else:
            raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert srv.stop() == 0
    assert lines(srv.stdout) == ["500 22"], (srv.stdout, srv.stderr)
