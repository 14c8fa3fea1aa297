"""docs/deployment.md and the Dockerfile say only what heron does.

Every flag the guide gives heron (in its command lines, in the inline code of its prose and in the
"heron" column of its migration tables) is one heron's own argument parser accepts; every
``HERON_*`` variable it or the Dockerfile names is one heron reads; every file it links to (and
every path under deploy/ it names) exists. The Dockerfile runs heron as a non-root user, with a stop
signal and no --reload; its command resolves to the settings the guide describes, serves, answers
its own HEALTHCHECK, and stops cleanly on its STOPSIGNAL.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from heron.cli import build_parser, load
from heron.config import env_names, settings

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "deployment.md"
DOCKERFILE = ROOT / "Dockerfile"

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")
ENV_VAR = re.compile(r"\bHERON_[A-Z0-9_]*[A-Z0-9]\b")


# --- what heron accepts, from heron itself ---------------------------------------------


def accepted_options() -> set[str]:
    return {option for action in build_parser()._actions for option in action.option_strings}


def heron_variables() -> set[str]:
    return {name for f in settings() for name in env_names(f) if name.startswith("HERON_")}


# --- reading the guide ------------------------------------------------------------------


def flag_names(tokens: list[str]) -> list[str]:
    """The options among command-line tokens (``--name=value`` counts as ``--name``)."""
    return [t.split("=", 1)[0] for t in tokens if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", t)]


def logical_lines(code: str) -> list[str]:
    """Lines of a code block with backslash continuations joined and comments removed."""
    joined = re.sub(r"\\\n", " ", code)
    return [re.split(r"(?:^|\s)#", line, maxsplit=1)[0] for line in joined.splitlines()]


def heron_arguments(line: str) -> list[str] | None:
    """The arguments a line passes to heron (``heron ...``, ``.../bin/heron ...``,
    ``python -m heron ...``, ``docker run ... heron ...`` and exec-form JSON arrays
    alike), or None when the line does not run heron."""
    tokens = [token.strip("\"',[]") for token in line.split()]
    for i, token in enumerate(tokens):
        if token == "heron" or token.endswith("/heron"):
            return tokens[i + 1 :]
    return None


def split_sections(text: str) -> dict[str, str]:
    """'## ' heading -> its text (the part before the first heading is '')."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    sections = {"": parts[0]}
    for heading, body in zip(parts[1::2], parts[2::2]):
        sections[heading.strip()] = body
    return sections


def tables(text: str) -> list[list[list[str]]]:
    """Markdown tables of ``text``: rows of cells (header first, separator dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def migration_section() -> str:
    sections = split_sections(without_code_blocks(guide()))
    (name,) = [name for name in sections if name.startswith("Migrating")]
    return sections[name]


# --- the guide ----------------------------------------------------------------------------


def test_every_heron_command_line_uses_options_heron_accepts() -> None:
    accepted = accepted_options()
    seen: list[str] = []
    for _, code in FENCE.findall(guide()):
        for line in logical_lines(code):
            arguments = heron_arguments(line)
            if arguments is not None:
                seen += flag_names(arguments)
    assert len(seen) >= 20, f"the guide's heron command lines were not found: {seen}"
    unknown = sorted(set(seen) - accepted)
    assert not unknown, f"docs/deployment.md runs heron with options it doesn't have: {unknown}"


def test_every_option_in_the_prose_is_one_heron_accepts() -> None:
    """Inline code that starts with an option, outside the migration section (whose other
    columns name other servers' options), or that runs heron."""
    accepted = accepted_options()
    sections = split_sections(without_code_blocks(guide()))
    seen: list[str] = []
    for name, body in sections.items():
        if name.startswith("Migrating"):
            continue
        for span in SPAN.findall(body):
            tokens = span.replace("\\|", " ").split()
            if span.startswith("-"):
                seen += flag_names(tokens)
            else:
                arguments = heron_arguments(span)
                if arguments is not None:
                    seen += flag_names(arguments)
    assert len(seen) >= 40, f"too few options found in the prose: {seen}"
    unknown = sorted(set(seen) - accepted)
    assert not unknown, f"docs/deployment.md names options heron doesn't have: {unknown}"


def test_the_migration_tables_map_only_to_options_heron_accepts() -> None:
    accepted = accepted_options()
    mapped: list[str] = []
    columns = 0
    for table in tables(migration_section()):
        header = [cell.strip("`").lower() for cell in table[0]]
        if "heron" not in header:
            continue
        columns += 1
        index = header.index("heron")
        for row in table[1:]:
            assert len(row) == len(header), f"a row with {len(row)} cells, not {len(header)}: {row}"
            for span in SPAN.findall(row[index]):
                mapped += flag_names(span.split())
    assert columns == 3, "the uvicorn, gunicorn and hypercorn tables each have a 'heron' column"
    assert len(mapped) >= 60, f"too few heron options found in the migration tables: {mapped}"
    unknown = sorted(set(mapped) - accepted)
    assert not unknown, f"the migration tables map to options heron doesn't have: {unknown}"


@pytest.mark.parametrize("path", [GUIDE, DOCKERFILE], ids=lambda p: p.name)
def test_every_heron_variable_named_is_one_heron_reads(path: Path) -> None:
    named = set(ENV_VAR.findall(path.read_text(encoding="utf-8")))
    assert named, f"{path.name} names no HERON_* variable"
    unknown = sorted(named - heron_variables())
    assert not unknown, f"{path.name} names variables heron doesn't read: {unknown}"


def test_every_file_the_guide_points_to_exists() -> None:
    text = guide()
    prose = without_code_blocks(text)
    links = [target for target in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:|#", target)]
    missing = [target for target in links if not (GUIDE.parent / target.split("#")[0]).exists()]
    deploy = set(re.findall(r"(?<![\w/])(?:\.\./)?(deploy/[\w./-]*\w)", text))
    assert any(path.startswith("deploy/nginx") for path in deploy)
    assert any(path.startswith("deploy/haproxy") for path in deploy)
    missing += sorted(path for path in deploy if not (ROOT / path).exists())
    assert not missing, f"docs/deployment.md points to files that don't exist: {missing}"


# --- the Dockerfile -------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def last(keyword: str) -> str:
    values = [rest for name, rest in instructions() if name == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    return values[-1]


def container_environment() -> dict[str, str]:
    """The variables the Dockerfile's ENV lines set (PATH left out: it names the image's venv)."""
    env: dict[str, str] = {}
    for name, rest in instructions():
        if name == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"ENV in the legacy 'KEY VALUE' form: {rest!r}"
                env[key] = value
    env.pop("PATH", None)
    return env


def heron_command() -> list[str]:
    """ENTRYPOINT + CMD, both in exec form (JSON), so heron is PID 1 and gets the stop signal."""
    try:
        entrypoint, cmd = json.loads(last("ENTRYPOINT")), json.loads(last("CMD"))
    except json.JSONDecodeError:
        raise AssertionError("ENTRYPOINT and CMD must be in exec form (JSON arrays)") from None
    argv = [*entrypoint, *cmd]
    arguments = heron_arguments(" ".join(argv))
    assert argv[:3] == ["python", "-m", "heron"] and arguments is not None, argv
    return arguments


def test_the_dockerfile_runs_heron_as_a_non_root_user_with_a_stop_signal() -> None:
    user = last("USER").split(":")
    assert user[0] not in ("root", "0"), f"USER {last('USER')} is root"
    assert all(part.isdigit() for part in user), "a numeric USER, which runAsNonRoot can verify"
    assert last("STOPSIGNAL") in ("SIGTERM", "TERM", "15")
    assert "--reload" not in DOCKERFILE.read_text(encoding="utf-8")
    bases = [rest.split()[0] for name, rest in instructions() if name == "FROM"]
    assert all(base.startswith("python:") and "-slim" in base for base in bases), bases


def test_the_dockerfile_command_uses_options_heron_accepts() -> None:
    unknown = sorted(set(flag_names(heron_command())) - accepted_options())
    assert not unknown, f"the Dockerfile runs heron with options it doesn't have: {unknown}"


def test_the_dockerfile_command_resolves_to_the_settings_the_guide_describes(tmp_path: Path) -> None:
    environ = container_environment()
    resolved, _ = load(heron_command(), environ=dict(environ), cwd=str(tmp_path))
    config, sources = resolved.config, resolved.sources
    assert config.host == "0.0.0.0" and config.proxy_headers and not config.reload
    # from the environment, so that `docker run -e ...` can change them
    assert sources.get("forwarded_allow_ips") == "HERON_FORWARDED_ALLOW_IPS"
    assert config.forwarded_allow_ips == environ["HERON_FORWARDED_ALLOW_IPS"]
    assert sources.get("metrics_bind") == "HERON_METRICS_BIND"
    assert config.metrics_bind == environ["HERON_METRICS_BIND"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthcheck(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    rest = last("HEALTHCHECK")
    argv = json.loads(rest[rest.index("CMD") + 3 :])
    assert argv[0] == "python", argv
    return subprocess.run([sys.executable, *argv[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=20)


def test_the_dockerfile_command_serves_answers_its_healthcheck_and_stops_on_its_stop_signal(tmp_path: Path) -> None:
    """The image's command, run here: only the addresses differ (127.0.0.1, free ports; the
    command line's last --host/--port win, and HERON_METRICS_BIND is the image's variable)."""
    port, metrics_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HERON_", "UVICORN_"))}
    env.pop("WEB_CONCURRENCY", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    env.update(container_environment())
    env["HERON_METRICS_BIND"] = f"127.0.0.1:{metrics_port}"
    argv = [sys.executable, "-m", "heron", *heron_command(), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"heron exited with {proc.returncode}: {proc.communicate()[1]}"
            try:
                socket.create_connection(("127.0.0.1", metrics_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the metrics listener never opened"
                time.sleep(0.05)
        check = healthcheck(env, tmp_path)
        assert check.returncode == 0, check.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:  # the welcome page
            assert response.status == 200
        proc.send_signal(getattr(signal, last("STOPSIGNAL")))
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0, stderr
        assert "Shutting down" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    failed = healthcheck(env, tmp_path)  # nothing listens any more: the check must say so
    assert failed.returncode != 0
