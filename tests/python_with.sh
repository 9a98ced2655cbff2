#!/usr/bin/env bash
# Runs a Python script with the first python3 that can import MODULE: $GM_PYTHON3, then
# python3 on the PATH (e.g. a pyenv one), then Debian's /usr/bin/python3. Without one it says
# which interpreters it tried and exits 77, which CTest reports as skipped.
#
#   bash tests/python_with.sh MODULE SCRIPT [ARG…]
set -euo pipefail
(($# >= 2)) || { echo "usage: python_with.sh MODULE SCRIPT [ARG...]" >&2; exit 2; }
module=$1
shift
tried=()
for py in ${GM_PYTHON3:-} "$(command -v python3 || true)" /usr/bin/python3; do
    [ -n "$py" ] && [ -x "$py" ] || continue
    if "$py" -c "import $module" >/dev/null 2>&1; then
        exec "$py" "$@"
    fi
    tried+=("$py")
done
echo "skipped: no python3 with the '$module' module (tried: ${tried[*]:-none found});" \
    "install Debian's python3-$module (scripts/setup.sh) or point GM_PYTHON3 at one" >&2
exit 77
