#!/bin/sh
# Adds two integers... with a deliberate off-by-one bug, so that this example's test fails.
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: add.sh A B" >&2
    exit 2
fi

echo $(( $1 + $2 + 1 ))  # BUG (on purpose): the "+ 1" should not be here.
