#!/usr/bin/env bash
# Create .venv (if needed) and install the toolkit with its dev tools; idempotent and quick when
# nothing changed. Also prepares the OpenSSL 1.1 libraries the embedded MongoDB of FiftyOne needs.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for c in "${PYTHON:-}" python3.11 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$c"; return 0
    fi
  done
  echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi

stamp=.venv/.vision-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the toolkit into .venv (first time: several minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi

# FiftyOne's embedded mongod 6.0 needs OpenSSL 1.1: link it from the psycopg2-binary wheel.
.venv/bin/python -c "from vision.curation.db import prepare_mongod_libs as p; d = p(); print('setup: mongod libraries in', d)"

# Debian's Chromium for the FiftyOne App test (headless, driven over the DevTools protocol). Best effort:
# without it (no root, no apt) that one test skips with a message saying so.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (for the App test)"
    timeout 600 apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
      || (timeout 300 apt-get update -q >/dev/null 2>&1 && \
          timeout 600 apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1) \
      || echo "setup: chromium could not be installed; the App browser test will skip"
  else
    echo "setup: chromium not found (install Debian's chromium to run the App browser test)"
  fi
fi
