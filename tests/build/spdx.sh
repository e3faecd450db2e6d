#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/build/spdx.sh SOURCE_DIR — every source, header, script and build
# file of the repository names its license in one of its first three lines
# (`SPDX-License-Identifier: MIT`, as LICENSE says).  Lists the files that do
# not and fails; files git does not track (build trees) are not looked at.
set -euo pipefail
src=${1:?usage: spdx.sh SOURCE_DIR}
cd "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    list() { git ls-files; }
else # a source tree without its history (an unpacked archive)
    list() { find . -path ./build -prune -o -type f -print | sed 's|^\./||'; }
fi
missing=0
checked=0
while IFS= read -r f; do
    case "$f" in
        fuzz/corpus/*) continue ;;
        *.c | *.h | *.hpp | *.cpp | *.cc | *.py | *.sh | *.cmake | *CMakeLists.txt | .ci/run) ;;
        *) continue ;;
    esac
    [ -f "$f" ] || continue
    checked=$((checked + 1))
    if ! head -n 3 "$f" | grep -q 'SPDX-License-Identifier: MIT'; then
        echo "no SPDX line in the first three lines: $f"
        missing=$((missing + 1))
    fi
done < <(list)
echo "spdx: $checked files checked, $missing without an SPDX line"
[ "$checked" -gt 0 ] && [ "$missing" -eq 0 ]
