# Sourced by scripts/test: the programs the tests run for real beside Python: Chromium (the MLflow
# UI browser test) and PostgreSQL's server (the team store test). Installed with apt-get when
# missing and this runs as root; otherwise the tests that need them say so and skip.
_missing=()
command -v chromium >/dev/null 2>&1 || _missing+=(chromium)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  _missing+=(postgresql)
fi
if [ ${#_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "hpsearch: installing ${_missing[*]} for the tests (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${_missing[@]}" >/dev/null
  else
    echo "hpsearch: ${_missing[*]} missing and not installable here (needs root and apt-get); their tests skip" >&2
  fi
fi
