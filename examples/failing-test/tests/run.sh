#!/bin/sh
# Test for scripts/add.sh. It fails deterministically, because add.sh has a deliberate bug.
# Run from the skill root: sh tests/run.sh
set -eu

expected=4
actual=$(sh scripts/add.sh 2 2)

if [ "$actual" != "$expected" ]; then
    echo "FAIL: add.sh 2 2: expected $expected, got $actual (this example fails on purpose)"
    exit 1
fi
echo "ok - add.sh 2 2 = $expected"
