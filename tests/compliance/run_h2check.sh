#!/usr/bin/env bash
# h2check.py (HTTP/2 raw-frame checks from RFC 9113/7541 plus bounded DoS checks, 94 in all) against
# heron serving the conformance echo app over h2c (prior knowledge).
#
#   tests/compliance/run_h2check.sh                   # plain verdicts (as h2spec judges)
#   tests/compliance/run_h2check.sh --strict-codes    # a wrong GOAWAY/RST_STREAM code fails too
#   tests/compliance/run_h2check.sh --only 8,hpack -v # any h2check.py options are passed through
#
# Starts heron on a free port through with_server.sh, runs h2check.py, prints its summary line
# "h2check: N passed, M failed, K skipped" last, and exits non-zero if a check failed.
# Settings:
#   CONFORMANCE_DIR  the shared conformance tools (default: ../shared/conformance next to the repo)
#   PYTHON           interpreter with heron and h2 installed (default: .venv/bin/python if present, else python3)
#   REPORTS          where the server log goes (default: ./conformance-reports, git-ignored)
#   HERON_ARGS       extra heron options (default: --log-level warning --no-access-log)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CONF="${CONFORMANCE_DIR:-$ROOT/../shared/conformance}"
[ -f "$CONF/h2check.py" ] || { echo "no h2check.py in $CONF (set CONFORMANCE_DIR)" >&2; exit 2; }
CONF="$(cd "$CONF" && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# a relative path would break once the server starts in the reports folder
case "$PYTHON" in /*) ;; */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
"$PYTHON" -c "import heron, h2" 2>/dev/null || { echo "$PYTHON cannot import heron and h2 (set PYTHON)" >&2; exit 2; }
export REPORTS="${REPORTS:-$ROOT/conformance-reports}"
mkdir -p "$REPORTS"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
HERON_ARGS="${HERON_ARGS:---log-level warning --no-access-log}"

OUT="$REPORTS/h2check-summary.txt"
cd "$REPORTS"
set +e
PYTHONPATH="$CONF${PYTHONPATH:+:$PYTHONPATH}" "$CONF/with_server.sh" 127.0.0.1 "$PORT" \
  "$PYTHON -m heron echo_app:app --host 127.0.0.1 --port $PORT $HERON_ARGS" \
  "$PYTHON" "$CONF/h2check.py" 127.0.0.1 "$PORT" "$@" | tee "$OUT"
RC=${PIPESTATUS[0]}
set -e
echo "server log: $REPORTS/server-$PORT.log" >&2
LAST="$(tail -n 1 "$OUT")"
case "$LAST" in
  "h2check: "*", 0 failed"*) exit "$RC" ;;
  *) exit 1 ;;
esac
