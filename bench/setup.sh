#!/usr/bin/env bash
# Set up heron's benchmark environment: an isolated venv at bench/.venv with
# heron (editable, from the repo root) and its peers, plus wrk, h2load, nginx
# and a C compiler (for bench/no_resume.c, the tls-handshakes preload) from
# Debian. Idempotent: a second run only checks and returns quickly.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
VENV="$BENCH_DIR/.venv"
PY="${PYTHON:-python3}"

# Python packages installed in the venv. Kept in one list so that the
# "already done" check and the install use the same names.
PIP_PKGS=(
    uvicorn uvloop httptools h11
    hypercorn granian daphne gunicorn
    starlette fastapi flask
    matplotlib websockets h2 cryptography
    'aioquic>=1.7,<1.8'  # HTTP/3: heron's http3 extra, hypercorn --quic-bind, bench/h3_client.py
    mypy==2.4.1 'setuptools>=77'  # heron-mypyc: run.py builds heron's wheel with HERON_MYPYC=1 (setup.py)
    # bench/h3_curl_client.py drives the bundled libcurl (ngtcp2/nghttp3) through curl_cffi's
    # cffi module (curl_cffi._wrapper), which is not its public API: keep to one minor version.
    'curl_cffi>=0.17,<0.18'
)

# --- system tools ----------------------------------------------------------
need_apt=()
command -v wrk    >/dev/null 2>&1 || need_apt+=(wrk)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v nginx  >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v cc     >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    echo "setup: apt-get install ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    # nginx-light is gone from newer Debian releases; fall back to nginx.
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"; then
        alt=("${need_apt[@]/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${alt[@]}"
    fi
    # Debian starts the packaged nginx service on install where it can; the
    # harness runs its own nginx, so stop a system one if it got started.
    if command -v nginx >/dev/null 2>&1 && [ -f /run/nginx.pid ]; then
        nginx -s quit 2>/dev/null || true
    fi
fi

# --- venv --------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# Fast path: everything importable and heron installed from this repo.
if "$VENV/bin/python" - "$REPO_DIR" <<'EOF' 2>/dev/null
import importlib, importlib.metadata as md, os, sys
for mod in ("uvicorn", "uvloop", "httptools", "h11", "hypercorn", "granian",
            "daphne", "gunicorn", "starlette", "fastapi", "flask", "matplotlib",
            "websockets", "h2", "cryptography", "aioquic", "curl_cffi", "mypyc", "heron"):
    importlib.import_module(mod)
import heron
repo = os.path.realpath(sys.argv[1])
if not os.path.realpath(heron.__file__).startswith(repo + os.sep):
    sys.exit(1)
EOF
then
    echo "setup: bench/.venv already complete"
else
    echo "setup: installing Python packages into bench/.venv"
    "$VENV/bin/python" -m pip install -q --upgrade "${PIP_PKGS[@]}"
    "$VENV/bin/python" -m pip install -q -e "$REPO_DIR"
fi

for tool in wrk h2load nginx taskset cc; do
    command -v "$tool" >/dev/null 2>&1 || echo "setup: WARNING: $tool is not available"
done
echo "setup: done"
