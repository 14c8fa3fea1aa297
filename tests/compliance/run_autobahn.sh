#!/usr/bin/env bash
# Autobahn|Testsuite (fuzzing client) against heron serving the conformance echo app.
#
#   tests/compliance/run_autobahn.sh            # all 517 cases (about 8 min on 2 idle cores)
#   QUICK=1 tests/compliance/run_autobahn.sh    # without 12.*/13.* (permessage-deflate): about 20 s
#   CASES='["6.4.*","7.1.6"]' tests/compliance/run_autobahn.sh
#
# Starts heron on a free port through with_server.sh, runs autobahn.sh, prints its per-section counts
# and the summary line "Autobahn: N passed, M failed, K skipped" last, and exits non-zero if a case
# failed. Passed through to autobahn.sh: QUICK, CASES, EXCLUDE, MAX_SECONDS, AGENT.
# Settings:
#   CONFORMANCE_DIR  the shared conformance tools (default: ../shared/conformance next to the repo)
#   PYTHON           interpreter with heron installed (default: .venv/bin/python if present, else python3)
#   REPORTS          where reports and the server log go (default: ./conformance-reports, git-ignored);
#                    the per-case JSON/HTML reports are in $REPORTS/autobahn/
#   HERON_ARGS       extra heron options (default: --log-level warning --no-access-log)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CONF="${CONFORMANCE_DIR:-$ROOT/../shared/conformance}"
[ -x "$CONF/autobahn.sh" ] || { echo "no autobahn.sh in $CONF (set CONFORMANCE_DIR)" >&2; exit 2; }
CONF="$(cd "$CONF" && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# a relative path would break once the server starts in the reports folder
case "$PYTHON" in /*) ;; */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
"$PYTHON" -c "import heron" 2>/dev/null || { echo "$PYTHON cannot import heron (set PYTHON)" >&2; exit 2; }
export REPORTS="${REPORTS:-$ROOT/conformance-reports}"
mkdir -p "$REPORTS"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
HERON_ARGS="${HERON_ARGS:---log-level warning --no-access-log}"

OUT="$REPORTS/autobahn-summary.txt"
cd "$REPORTS"  # with_server.sh and autobahn.sh write relative to $REPORTS; nothing lands in the tree
set +e
PYTHONPATH="$CONF${PYTHONPATH:+:$PYTHONPATH}" "$CONF/with_server.sh" 127.0.0.1 "$PORT" \
  "$PYTHON -m heron echo_app:app --host 127.0.0.1 --port $PORT $HERON_ARGS" \
  "$CONF/autobahn.sh" 127.0.0.1 "$PORT" | tee "$OUT"
RC=${PIPESTATUS[0]}
set -e
echo "server log: $REPORTS/server-$PORT.log, report: $REPORTS/autobahn/index.html" >&2
LAST="$(tail -n 1 "$OUT")"
case "$LAST" in
  "Autobahn: "*", 0 failed"*) exit "$RC" ;;
  *) exit 1 ;;
esac
