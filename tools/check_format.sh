#!/usr/bin/env bash
# The layout check: every C++ file git tracks is laid out as .clang-format says (clang-format
# from Debian's clang-format package, installed by tools/deps.sh). Lists the files that differ
# and exits 1; `tools/check_format.sh --fix` rewrites them in place.
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h')
else # a source tarball: every C++ file of the project's folders
  mapfile -t files < <(find app core tests widgets \( -name '*.cpp' -o -name '*.h' \) -type f | sort)
fi
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done
if [ "${#bad[@]}" -gt 0 ]; then
  printf 'not laid out as .clang-format says (tools/check_format.sh --fix):\n'
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check_format: ${#files[@]} files laid out as .clang-format says"
