#!/bin/sh
# Test for scripts/hello.sh: exact output with and without a name, and usage errors.
# Run from the skill root: sh tests/run.sh
set -eu

failures=0

check() {
    # check DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        echo "ok - $1"
    else
        echo "not ok - $1: expected '$2', got '$3'"
        failures=$((failures + 1))
    fi
}

check "default greeting" "Hello, world!" "$(sh scripts/hello.sh)"
check "greets by name" "Hello, Ada!" "$(sh scripts/hello.sh Ada)"
check "empty name falls back" "Hello, world!" "$(sh scripts/hello.sh '')"

rc=0
sh scripts/hello.sh a b >/dev/null 2>&1 || rc=$?
check "two arguments are refused with exit 2" "2" "$rc"

if [ "$failures" -ne 0 ]; then
    echo "FAILED: $failures check(s)"
    exit 1
fi
echo "PASSED: all checks"
