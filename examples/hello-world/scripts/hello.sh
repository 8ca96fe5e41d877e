#!/bin/sh
# Prints a greeting. POSIX sh only: the runner image is busybox.
set -eu

if [ "$#" -gt 1 ]; then
    echo "usage: hello.sh [NAME]" >&2
    exit 2
fi

name=${1:-world}
printf 'Hello, %s!\n' "$name"
