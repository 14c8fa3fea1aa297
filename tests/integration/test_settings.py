"""The settings registry: every setting through every door (command line,
environment, config file, Python API), precedence, error messages, the
generated reference docs, several listeners, and uvicorn options that are
accepted with a warning."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from heron.cli import load
from heron.config import Config, SettingError, cli_flags, env_names, field_kind, settings
from heron.settings_docs import markdown
from heron.sources import read_dotenv

from .test_cli import free_port, heron_server, lines, raw_request, run

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {f.name: f for f in settings()}
PEM_WITH_KEY = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"

APP_SOURCE = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "setapp.py").write_text(APP_SOURCE)
    return tmp_path


# --- example values: one non-default value per setting, derived from the registry ------------


def example(f: dataclasses.Field[Any], tmp: Path) -> Any:
    """A valid, non-default value for ``f``, as it should appear in Config."""
    pem = tmp / "server.pem"
    pem.write_text(PEM_WITH_KEY)
    special: dict[str, Any] = {
        "app": "setapp:app",
        "port": 9001,
        "fd": 3,
        "uds": str(tmp / "heron.sock"),
        "host": "0.0.0.0",
        "bind": ("127.0.0.1:9000", f"unix:{tmp / 'b.sock'}"),
        "headers": (("x-a", "1"), ("x-b", "two")),
        "workers": 1,
        "loop": "asyncio",
        "http": "h11",
        "ws": "none",
        "log_level": "debug",
        "access_log_format": "combined",
        "metrics_bind": "127.0.0.1:9100",
        "quic_bind": ("127.0.0.1:8443", "[::1]:8443"),
        "log_config": "logging.json",
        "root_path": "/api",
        "app_dir": str(tmp),
        "forwarded_allow_ips": "10.0.0.1",
        "ssl_certfile": str(pem),
        "ssl_keyfile": str(pem),
        "ssl_ca_certs": str(pem),
        "ssl_keyfile_password": "secret",
        "ssl_version": 5,
        "ssl_cert_reqs": 2,
        "ssl_ciphers": "ECDHE+AESGCM",
    }
    if f.name == "env_file":
        path = tmp / "vars.env"
        path.write_text("UNRELATED_VARIABLE=1\n")
        return str(path)
    if f.name == "config":
        path = tmp / "empty.toml"
        path.write_text("")
        return str(path)
    if f.name in special:
        return special[f.name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    kind = field_kind(f)
    choices = f.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != default)
    if kind.base is bool:
        return not default
    if kind.multiple:
        return ("first", "second")
    if kind.base is int:
        return (default or 0) + 1 if default is None or default >= 0 else 1
    if kind.base is float:
        return (default or 0.0) + 1.5
    return "some-value"


def companions(name: str, tmp: Path) -> list[str]:
    """Command-line settings that ``name`` needs to be valid (TLS settings need TLS on)."""
    if name == "quic_bind":  # (QUIC always uses TLS)
        pem = tmp / "server.pem"
        pem.write_text(PEM_WITH_KEY)
        return ["--ssl-certfile", str(pem)]
    if name.startswith("ssl_") and name not in ("ssl_certfile",):
        pem = tmp / "server.pem"
        pem.write_text(PEM_WITH_KEY)
        extra = ["--ssl-certfile", str(pem)]
        if name != "ssl_ca_certs":
            extra += ["--ssl-ca-certs", str(pem)]
        return extra
    return []


def as_text(f: dataclasses.Field[Any], value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if f.name == "headers":
        return "\n".join(f"{n}: {v}" for n, v in value)  # newline-separated: values may hold spaces
    if isinstance(value, tuple):
        return " ".join(value)  # whitespace-separated, as click splits UVICORN_* lists
    return str(value)


def cli_args(f: dataclasses.Field[Any], value: Any) -> list[str]:
    if f.name == "app":
        return [value]
    flag = cli_flags(f)[-1]
    kind = field_kind(f)
    if kind.base is bool and f.metadata["metavar"] != "BOOL":
        return [flag] if value else ["--no-" + flag[2:]]
    if f.name == "headers":
        return [x for n, v in value for x in ("--header", f"{n}:{v}")]
    if kind.multiple:
        return [x for item in value for x in (flag, item)]
    return [flag, as_text(f, value)]


def toml_value(f: dataclasses.Field[Any], value: Any) -> str:
    if f.name == "headers":
        return json.dumps([f"{n}: {v}" for n, v in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return json.dumps(value)


def test_example_values_differ_from_defaults(tmp_path: Path) -> None:
    defaults = Config()
    for f in settings():
        assert example(f, tmp_path) != getattr(defaults, f.name), f.name


@pytest.mark.parametrize("name", list(FIELDS))
def test_every_setting_round_trips_through_cli_env_file_and_api(name: str, tmp_path: Path) -> None:
    f = FIELDS[name]
    value = example(f, tmp_path)
    base = companions(name, tmp_path)

    def check(config: Config, how: str) -> None:
        assert getattr(config, name) == value, f"{name} via {how}"

    if f.metadata["cli"] or name == "app":
        resolved, _ = load(base + cli_args(f, value), environ={}, cwd=str(tmp_path))
        check(resolved.config, "command line")
        assert resolved.sources[name] in ("APP", *cli_args(f, value))
    for var in env_names(f):
        if var in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS") or var.startswith(("HERON_", "UVICORN_")):
            resolved, _ = load(base, environ={var: as_text(f, value)}, cwd=str(tmp_path))
            check(resolved.config, var)
            assert resolved.sources[name] == var
    if f.metadata["file"]:
        key = name if len(name) % 2 else name.replace("_", "-")  # both spellings are accepted
        (tmp_path / "heron.toml").write_text(f"{key} = {toml_value(f, value)}\n")
        resolved, _ = load(base + ["--config", str(tmp_path / "heron.toml")], environ={}, cwd=str(tmp_path))
        check(resolved.config, "config file")
        assert resolved.sources[name].endswith(f": {key}")
        (tmp_path / "pyproject.toml").write_text(f"[project]\nname='x'\n[tool.heron]\n{key} = {toml_value(f, value)}\n")
        resolved, _ = load(base, environ={}, cwd=str(tmp_path))
        check(resolved.config, "pyproject.toml")
        (tmp_path / "pyproject.toml").unlink()
    else:
        (tmp_path / "heron.toml").write_text(f"{name} = {toml_value(f, value)}\n")
        with pytest.raises(SettingError, match="can't be set in a config file"):
            load(["--config", str(tmp_path / "heron.toml")], environ={}, cwd=str(tmp_path))
    # the Python API takes the same name and value
    api: dict[str, Any] = {name: value}
    for option, arg in zip(base[::2], base[1::2], strict=True):
        api[option[2:].replace("-", "_")] = arg
    config = Config(**api).validate()
    assert getattr(config, name) == value


def test_every_uvicorn_054_option_is_accepted(tmp_path: Path) -> None:
    """The option table of uvicorn 0.54 (research/cli.md section 2): every flag parses."""
    uvicorn_flags = [
        "--host", "--port", "--uds", "--fd", "--reload", "--reload-dir", "--reload-include", "--reload-exclude",
        "--reload-delay", "--workers", "--loop", "--http", "--http2", "--ws", "--ws-max-size", "--ws-max-queue",
        "--ws-ping-interval", "--ws-ping-timeout", "--ws-per-message-deflate", "--lifespan", "--interface",
        "--env-file", "--log-config", "--log-level", "--access-log", "--no-access-log", "--use-colors",
        "--no-use-colors", "--proxy-headers", "--no-proxy-headers", "--server-header", "--no-server-header",
        "--date-header", "--no-date-header", "--forwarded-allow-ips", "--root-path", "--limit-concurrency",
        "--backlog", "--limit-max-requests", "--limit-max-requests-jitter", "--timeout-keep-alive",
        "--timeout-graceful-shutdown", "--timeout-worker-healthcheck", "--ssl-keyfile", "--ssl-certfile",
        "--ssl-keyfile-password", "--ssl-version", "--ssl-cert-reqs", "--ssl-ca-certs", "--ssl-ciphers",
        "--header", "--version", "--app-dir", "--h11-max-incomplete-event-size", "--reset-contextvars", "--factory",
    ]  # fmt: skip
    known = set()
    for f in settings():
        known.update(cli_flags(f))
        if f.metadata["negatable"]:
            known.update("--no-" + flag[2:] for flag in cli_flags(f) if flag.startswith("--"))
    known.add("--version")
    assert sorted(set(uvicorn_flags) - known) == []
    # and every uvicorn option has uvicorn's environment variable too
    for f in settings():
        if any(flag in uvicorn_flags for flag in cli_flags(f)) and f.name not in ("bind",):
            assert "UVICORN_" + f.name.upper() in env_names(f), f.name


def test_short_flags(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("port = 9100\n")
    resolved, _ = load(
        ["-b", "127.0.0.1:9000", "-b", "[::1]:9001", "-w", "1", "-c", str(tmp_path / "c.toml")], {}, str(tmp_path)
    )
    config = resolved.config
    assert config.bind == ("127.0.0.1:9000", "[::1]:9001") and config.workers == 1
    assert [str(listener) for listener in config.listeners] == ["127.0.0.1:9000", "[::1]:9001"]
    assert resolved.sources["bind"] == "-b" and resolved.sources["workers"] == "-w"


# --- precedence ------------------------------------------------------------------------------------


def test_precedence_cli_then_environment_then_file_then_default(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.heron]\nport = 3000\nbacklog = 10\n")
    env = {"HERON_PORT": "2000", "HERON_ROOT_PATH": "/env"}
    resolved, _ = load(["--port", "1000"], dict(env), str(tmp_path))
    assert (resolved.config.port, resolved.sources["port"]) == (1000, "--port")
    resolved, _ = load([], dict(env), str(tmp_path))
    assert (resolved.config.port, resolved.sources["port"]) == (2000, "HERON_PORT")
    assert resolved.config.root_path == "/env"
    resolved, _ = load([], {}, str(tmp_path))
    assert resolved.config.port == 3000 and resolved.sources["port"].endswith("[tool.heron]: port")
    assert resolved.config.backlog == 10
    (tmp_path / "pyproject.toml").unlink()
    resolved, _ = load([], {}, str(tmp_path))
    assert resolved.config.port == 8000 and "port" not in resolved.sources


def test_heron_variables_beat_uvicorn_variables_beat_extra_names(tmp_path: Path) -> None:
    env = {"HERON_WORKERS": "1", "UVICORN_WORKERS": "2", "WEB_CONCURRENCY": "3"}
    resolved, _ = load([], env, str(tmp_path))
    assert resolved.config.workers == 1 and resolved.sources["workers"] == "HERON_WORKERS"
    resolved, _ = load([], {"UVICORN_PORT": "7000", "WEB_CONCURRENCY": "1"}, str(tmp_path))
    assert resolved.config.port == 7000 and resolved.config.workers == 1
    assert resolved.sources["workers"] == "WEB_CONCURRENCY"
    resolved, _ = load([], {"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}, str(tmp_path))
    assert resolved.config.forwarded_allow_ips == "10.0.0.0/8"
    assert resolved.notices == []  # honoured, so no warning


def test_explicit_config_file_replaces_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.heron]\nport = 3000\nbacklog = 10\n")
    (tmp_path / "heron.toml").write_text("port = 4000\n[other-tool]\nx = 1\n")
    resolved, _ = load(["-c", "heron.toml"], {}, str(tmp_path))
    assert (resolved.config.port, resolved.config.backlog) == (4000, 2048)
    resolved, _ = load([], {"HERON_CONFIG": "heron.toml"}, str(tmp_path))
    assert resolved.config.port == 4000 and resolved.config_file == str(tmp_path / "heron.toml")
    # a pyproject.toml without [tool.heron] is ignored
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    resolved, _ = load([], {}, str(tmp_path))
    assert resolved.config.port == 8000 and resolved.config_file is None


def test_list_settings_from_environment_split_on_whitespace_or_newlines(tmp_path: Path) -> None:
    resolved, _ = load(
        [], {"UVICORN_RELOAD_DIRS": "src  lib\ttests", "HERON_HEADERS": "x-a: one two\nx-b:3\n"}, str(tmp_path)
    )
    assert resolved.config.reload_dirs == ("src", "lib", "tests")
    assert resolved.config.headers == (("x-a", "one two"), ("x-b", "3"))
    resolved, _ = load([], {"UVICORN_HEADERS": "x-a:1 x-b:2"}, str(tmp_path))
    assert resolved.config.headers == (("x-a", "1"), ("x-b", "2"))


def test_header_table_in_config_file(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text('headers = { x-a = "1", x-b = "two words" }\n')
    resolved, _ = load(["-c", "h.toml"], {}, str(tmp_path))
    assert resolved.config.headers == (("x-a", "1"), ("x-b", "two words"))


# --- env files --------------------------------------------------------------------------------------


def test_dotenv_parser(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = spaced value  # trailing comment\n"
        "HASH=a#b\n"
        "SINGLE='literal $x \\n # not a comment'\n"
        'DOUBLE="line1\\nline2 \\"quoted\\""\n'
        'MULTI="first\nsecond"\n'
        "EMPTY=\n"
        "EMPTY_QUOTED=''\n"
    )
    assert read_dotenv(path) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "spaced value",
        "HASH": "a#b",
        "SINGLE": "literal $x \\n # not a comment",
        "DOUBLE": 'line1\nline2 "quoted"',
        "MULTI": "first\nsecond",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
    }
    path.write_text("NOT A PAIR\n")
    with pytest.raises(ValueError, match="line 1"):
        read_dotenv(path)


def test_env_file_is_loaded_before_settings_are_read(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("HERON_PORT=5000\nHERON_ROOT_PATH=/from-file\nAPP_SECRET=s3cret\n")
    environ = {"HERON_ROOT_PATH": "/already-set"}
    resolved, _ = load(["--env-file", "app.env"], environ, str(tmp_path))
    assert resolved.config.port == 5000 and resolved.sources["port"] == "HERON_PORT"
    assert resolved.config.root_path == "/already-set"  # variables already set win
    assert environ["APP_SECRET"] == "s3cret"  # the app sees the file's variables
    # named by a config file too
    (tmp_path / "pyproject.toml").write_text("[tool.heron]\nenv_file = 'app.env'\nport = 1\n")
    resolved, _ = load([], {}, str(tmp_path))
    assert resolved.config.port == 5000  # the env file's HERON_PORT beats the file's port


def test_env_file_reaches_the_app(app_dir: Path) -> None:
    (app_dir / "envapp.py").write_text(
        "import os\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    body = os.environ.get('GREETING', 'unset').encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
    )
    port = free_port()
    (app_dir / ".env").write_text(f"GREETING='hello from .env'\nHERON_PORT={port}\n")
    with heron_server(["envapp:app", "--env-file", ".env"], app_dir, port=port) as srv:
        assert raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"hello from .env"
        assert srv.stop() == 0


# --- errors: exit 2, one line naming the setting, its source and what is allowed --------------------


ERRORS = [
    # (argv, environment, config file text, words the one line must contain)
    (["--port", "abc"], {}, None, ["port", "--port", "'abc'", "an integer"]),
    (["--port", "70000"], {}, None, ["port", "--port", "between 0 and 65535"]),
    ([], {"HERON_PORT": "x"}, None, ["port", "HERON_PORT", "an integer"]),
    (
        [],
        {"UVICORN_TIMEOUT_KEEP_ALIVE": "soon"},
        None,
        ["timeout_keep_alive", "UVICORN_TIMEOUT_KEEP_ALIVE", "a number"],
    ),
    (["--lifespan", "maybe"], {}, None, ["lifespan", "--lifespan", "one of auto, on, off"]),
    (["--ws-per-message-deflate", "perhaps"], {}, None, ["ws_per_message_deflate", "true or false"]),
    ([], {"HERON_ACCESS_LOG": "sometimes"}, None, ["access_log", "HERON_ACCESS_LOG", "true or false"]),
    (["--limit-concurrency", "0"], {}, None, ["limit_concurrency", "--limit-concurrency", "a positive integer"]),
    (["-w", "0"], {}, None, ["workers", "-w", "a positive integer"]),
    ([], {"WEB_CONCURRENCY": "-1"}, None, ["workers", "WEB_CONCURRENCY", "a positive integer"]),
    (["--limit-max-requests", "0"], {}, None, ["limit_max_requests", "a positive integer"]),
    (["--limit-max-requests-jitter", "-5"], {}, None, ["limit_max_requests_jitter", "an integer >= 0"]),
    (["--timeout-worker-healthcheck", "0"], {}, None, ["timeout_worker_healthcheck", "seconds > 0"]),
    (["--reload-delay", "0"], {}, None, ["reload_delay", "--reload-delay", "seconds > 0"]),
    (["-b", "example.org", "--port", "9000"], {}, None, ["bind", "-b", "can't be combined with --port"]),
    (["--bind", "::1:80"], {}, None, ["bind", "--bind", "brackets"]),
    (["--bind", "fd://x"], {}, None, ["bind", "fd://N"]),
    (["--header", "no-colon"], {}, None, ["headers", "--header", "'Name:Value'"]),
    (["--header", "bad name:1"], {}, None, ["headers", "--header", "token"]),
    (["--http", "zippy"], {}, None, ["http", "--http", "h11"]),
    (["--access-log-format", "%(nope)s"], {}, None, ["access_log_format", "unknown atom %(nope)s"]),
    (["--metrics-bind", "fd://3"], {}, None, ["metrics_bind", "HOST:PORT"]),
    (["--ssl-cert-reqs", "2"], {}, None, ["ssl_cert_reqs", "--ssl-cert-reqs", "TLS is off"]),
    (["--ssl-certfile", "missing.pem"], {}, None, ["ssl_certfile", "--ssl-certfile", "does not exist"]),
    (["-c", "missing.toml"], {}, None, ["config", "-c", "an existing TOML file"]),
    (["-c", "heron.toml"], {}, "port = [", ["config", "valid TOML"]),
    (["-c", "heron.toml"], {}, "prot = 1\n", ["unknown setting 'prot'", "heron.toml", "did you mean 'port'"]),
    (["-c", "heron.toml"], {}, "port = 'eighty'\n", ["port", "heron.toml: port", "an integer"]),
    (["-c", "heron.toml"], {}, "access_log = 1\n", ["access_log", "heron.toml: access_log", "true or false"]),
    (["-c", "heron.toml"], {}, "config = 'x.toml'\n", ["'config' can't be set in a config file"]),
    (["--env-file", "missing.env"], {}, None, ["env_file", "--env-file", "readable dotenv file"]),
    (["--env-file", "heron.toml"], {}, "NOT A PAIR\n", ["env_file", "--env-file", "KEY=VALUE"]),
    (["--log-config", "missing.json"], {}, None, ["log_config", "--log-config", "an existing logging config"]),
    (["--log-config", "heron.json"], {}, None, ["log_config", "--log-config", "a valid logging config"]),
]


@pytest.mark.parametrize(
    "argv, env, file_text, words", ERRORS, ids=[" ".join(e[0]) or next(iter(e[1])) for e in ERRORS]
)
def test_invalid_values_exit_2_with_one_line(
    app_dir: Path, argv: list[str], env: dict[str, str], file_text: str | None, words: list[str]
) -> None:
    if file_text is not None:
        (app_dir / "heron.toml").write_text(file_text)
    (app_dir / "heron.json").write_text("{not json")
    result = run(["setapp:app", *argv], app_dir, **env)
    assert result.returncode == 2, result.stderr
    assert len(lines(result.stderr)) == 1, result.stderr
    assert result.stderr.startswith("heron: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert result.stdout == ""


def test_api_errors_name_the_setting() -> None:
    with pytest.raises(SettingError, match="port: 'x' is not valid; expected an integer"):
        Config(port="x").validate()  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="workers"):
        Config(workers=0).validate()
    with pytest.raises(SettingError, match="access_log: 1 is not valid; expected true or false"):
        Config(access_log=1).validate()  # type: ignore[arg-type]


# --- accepted, not supported yet: one warning line each -------------------------------------------------


def test_unsupported_uvicorn_options_warn_once_each(app_dir: Path) -> None:
    port = free_port()
    args = [
        "setapp:app", "--port", str(port), "--reload-dir", "src", "--workers", "1",
        "--http", "h11", "--ws", "wsproto", "--loop", "none", "--proxy-headers", "--limit-max-requests", "100",
        "--reset-contextvars", "--h11-max-incomplete-event-size", "100", "--timeout-worker-healthcheck", "9",
        "--interface", "asgi3",
    ]  # fmt: skip
    with heron_server(args, app_dir, port=port, UVICORN_FORWARDED_ALLOW_IPS="*") as srv:
        assert raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"hello"
        assert srv.stop() == 0
    warnings = [line for line in lines(srv.stderr) if line.startswith("WARNING:")]
    expected = {
        "--http": "'h11' has no effect",
        "--ws": "'wsproto' has no effect",
        "--loop": "'none' is served as 'asyncio'",
        "--h11-max-incomplete-event-size": "has no effect",
    }
    # --reload-dir without --reload: one line of its own (it is not a setting's notice)
    no_reload = [w for w in warnings if "have no effect without --reload" in w]
    assert len(no_reload) == 1, warnings
    assert len(warnings) == len(expected) + 1, warnings
    for flag, words in expected.items():
        matching = [w for w in warnings if w.split()[1] == flag + ":"]
        assert len(matching) == 1 and words in matching[0], (flag, warnings)


# --- listeners ------------------------------------------------------------------------------------------


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_several_binds_tcp_ipv6_unix_and_fd(app_dir: Path) -> None:
    port4, port6 = free_port(), free_port()
    uds = str(app_dir / "b.sock")
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen(8)
    fd_port = inherited.getsockname()[1]
    binds = ["-b", f"127.0.0.1:{port4}", "-b", f"unix:{uds}", "-b", f"fd://{inherited.fileno()}"]
    if _ipv6_available():
        binds += ["-b", f"[::1]:{port6}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "heron", "setapp:app", *binds],
        cwd=app_dir,
        env={k: v for k, v in os.environ.items() if not k.startswith(("HERON_", "UVICORN_"))},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=[inherited.fileno()],
    )
    inherited.close()
    try:
        assert proc.stderr is not None
        banner = []
        while not any("Press CTRL+C to quit" in line for line in banner):
            line = proc.stderr.readline()
            assert line, f"heron exited: {banner}"
            banner.append(line)
        assert httpx.get(f"http://127.0.0.1:{port4}/", timeout=5).text == "hello"
        assert httpx.get(f"http://127.0.0.1:{fd_port}/", timeout=5).text == "hello"
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds), timeout=5) as client:
            assert client.get("http://localhost/").text == "hello"
        if _ipv6_available():
            assert httpx.get(f"http://[::1]:{port6}/", timeout=5).text == "hello"
        text = "".join(banner)
        assert f"Serving HTTP/1.1 on http://127.0.0.1:{port4}" in text
        assert f"Serving HTTP/1.1 on unix:{uds}" in text
        assert f"Serving HTTP/1.1 on http://127.0.0.1:{fd_port}" in text
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert not os.path.exists(uds)


def test_ipv4_and_ipv6_wildcards_bind_side_by_side(app_dir: Path) -> None:
    if not _ipv6_available():
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    with heron_server(["setapp:app", "-b", f"0.0.0.0:{port}", "-b", f"[::]:{port}"], app_dir, port=port) as srv:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello"
        assert httpx.get(f"http://[::1]:{port}/", timeout=5).text == "hello"
        assert srv.stop() == 0


def test_a_bind_that_fails_releases_the_others(app_dir: Path) -> None:
    free = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        result = run(["setapp:app", "-b", f"127.0.0.1:{free}", "-b", f"127.0.0.1:{taken}"], app_dir)
    assert result.returncode == 3
    assert f"127.0.0.1:{taken}" in result.stderr and len(lines(result.stderr)) == 1
    with socket.socket() as again:
        again.bind(("127.0.0.1", free))  # released


def test_banner_says_what_is_served_where(app_dir: Path) -> None:
    port, mport = free_port(), free_port()
    with heron_server(
        ["setapp:app", "--port", str(port), "--metrics-bind", f"127.0.0.1:{mport}", "--loop", "asyncio"],
        app_dir,
        port=port,
    ) as srv:
        assert srv.stop() == 0
    text = srv.stderr
    assert "Started heron" in text and "asyncio loop" in text and "1 worker process" in text
    assert f"Serving HTTP/1.1 on http://127.0.0.1:{port} (" in text and "WebSocket" in text and "no TLS" in text
    assert f"Prometheus metrics on http://127.0.0.1:{mport}/metrics" in text
    assert "Press CTRL+C to quit" in text


# --- the Python API ----------------------------------------------------------------------------------------


def test_heron_run_accepts_settings_and_sets_up_logging(app_dir: Path) -> None:
    port = free_port()
    (app_dir / "runner.py").write_text(
        "import heron, setapp\n"
        f"raise SystemExit(heron.run(setapp.app, port={port}, log_format='json', http='h11',"
        " headers=[('x-from', 'api')], timeout_graceful_shutdown=1))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "runner.py"], cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = 100
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.ConnectError:
                deadline -= 1
                assert deadline and proc.poll() is None, proc.communicate()
                import time

                time.sleep(0.1)
        assert response.text == "hello" and response.headers["x-from"] == "api"
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    records = [json.loads(line) for line in err.splitlines()]
    assert any(r["level"] == "warning" and "http: 'h11' has no effect" in r["message"] for r in records)
    access = [json.loads(line) for line in out.splitlines()]
    assert access[0]["status"] == 200 and access[0]["path"] == "/"


# --- the reference docs ---------------------------------------------------------------------------------------


def test_settings_docs_are_generated_from_the_registry() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == markdown(), "docs/settings.md is stale: run python -m heron.settings_docs > docs/settings.md"
    for f in settings():
        assert f"| `{f.name}`" in committed


def test_markdown_command() -> None:
    result = subprocess.run([sys.executable, "-m", "heron.settings_docs"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == markdown()
