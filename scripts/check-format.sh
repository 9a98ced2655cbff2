#!/usr/bin/env bash
# Checks that every C, header and CUDA source that git tracks is formatted with the root
# .clang-format (run by CTest as the `format` test; fix with `clang-format -i FILE`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-format >/dev/null || { echo "clang-format not found: run scripts/setup.sh" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cu' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
((${#files[@]})) || { echo "no sources found" >&2; exit 1; }
bad=0
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f (clang-format -i $f)"
        bad=$((bad + 1))
    fi
done
echo "${#files[@]} files checked, $bad not formatted"
[ "$bad" -eq 0 ]
