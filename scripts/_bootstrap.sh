# Sourced by scripts/demo and scripts/test: make .venv if missing and install hpsearch into it.
# Usage: source scripts/_bootstrap.sh [EXTRAS]   (EXTRAS e.g. "dev")
# Re-installs only when pyproject.toml or the extras changed, so a second run takes a second.
set -euo pipefail
_extras="${1:-}"
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$_root"

_python="${PYTHON:-}"
if [ -z "$_python" ]; then
  for candidate in python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      _python="$candidate"; break
    fi
  done
fi
if [ -z "$_python" ]; then
  echo "hpsearch: needs Python 3.10 or newer on PATH (or set PYTHON=/path/to/python3.10+)" >&2
  exit 2
fi

if [ ! -x .venv/bin/python ]; then
  echo "hpsearch: creating .venv with $($_python --version 2>&1)" >&2
  "$_python" -m venv .venv
fi

_target="."
[ -n "$_extras" ] && _target=".[$_extras]"
# The stamp holds "<hash of pyproject.toml> <extras>" per install; an install with extras also
# satisfies a plain one, so alternating ./scripts/demo and ./scripts/test installs once.
_stamp=".venv/.hpsearch-installed"
_hash="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$_stamp" ] || ! grep -q "^$_hash ${_extras:-}" "$_stamp"; then
  echo "hpsearch: installing $_target into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e "$_target"
  echo "$_hash ${_extras:-}" >> "$_stamp"
fi
export PATH="$_root/.venv/bin:$PATH"
