# Sourced by scripts/serve and scripts/test: create .venv and install the
# locked dependencies once (re-done only when a lock file changes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
LOCK="$ROOT/$1"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Tidings needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
STAMP="$VENV/.installed-$(basename "$LOCK")-$(cat "$LOCK" "$ROOT/pyproject.toml" "$ROOT/sdk/python/pyproject.toml" "$ROOT/tools/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  if [ "$(basename "$LOCK")" = requirements-dev.lock ]; then
    # The SDK and the development tools are distributions of their own
    # (sdk/python, tools); the tests and `tidings bench` / `tidings sim` use them.
    "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT/sdk/python" -e "$ROOT/tools"
  fi
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
