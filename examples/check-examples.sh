#!/usr/bin/env bash
# Verifies every example skill and asserts the verdict and exit code in expected.tsv; for CI.
#
# Usage: examples/check-examples.sh [SKILL_VERIFIER_BINARY]
#   default binary: skill-verifier on PATH.
# Mode: `verify` (local, needs Docker and prepared runner images) by default; `submit --wait`
# to a daemon when SKILL_VERIFIER_SERVER is set (SKILL_VERIFIER_TOKEN is read by submit).
# In local mode each attestation is also checked offline with `attestation verify --package`
# against the public key in the key dir used for signing (KEY_FILE overrides its path; in
# submit mode the check runs only when KEY_FILE names the daemon's public key).
# Exits 0 when every example matched, 1 when any did not (it runs them all first).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-skill-verifier}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
key_dir="$work/keys"
key_file=${KEY_FILE:-$key_dir/signing.pub}

# The verdict inside a DSSE envelope: base64 payload -> in-toto statement -> predicate.result.
status_of() {
    python3 - "$1" <<'PY'
import base64, json, sys
env = json.load(open(sys.argv[1]))
statement = json.loads(base64.b64decode(env["payload"]))
print(statement["predicate"]["result"]["status"])
PY
}

failures=0
while IFS=$'\t' read -r name runtime want_status want_rc; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    out="$work/$name.json"
    rc=0
    if [[ -n "${SKILL_VERIFIER_SERVER:-}" ]]; then
        "$bin" submit "$here/$name" --server "$SKILL_VERIFIER_SERVER" --wait --out "$out" \
            >/dev/null 2>"$work/$name.err" || rc=$?
    else
        "$bin" verify "$here/$name" --key-dir "$key_dir" --out "$out" \
            >/dev/null 2>"$work/$name.err" || rc=$?
    fi

    problems=()
    [[ "$rc" == "$want_rc" ]] || problems+=("exit $rc, want $want_rc")
    if [[ -s "$out" ]]; then
        got_status=$(status_of "$out" 2>&1) || got_status="unreadable ($got_status)"
        [[ "$got_status" == "$want_status" ]] || problems+=("verdict $got_status, want $want_status")
        if [[ -z "${SKILL_VERIFIER_SERVER:-}" || -n "${KEY_FILE:-}" ]]; then
            if ! "$bin" attestation verify "$out" --key "$key_file" --package "$here/$name" \
                >/dev/null 2>"$work/$name.check.err"; then
                problems+=("attestation verify --package failed: $(tail -n 1 "$work/$name.check.err")")
            fi
        fi
    else
        problems+=("no attestation written")
    fi

    if [[ ${#problems[@]} -eq 0 ]]; then
        echo "ok     $name ($runtime): $want_status, exit $want_rc"
    else
        joined=$(printf '%s; ' "${problems[@]}")
        echo "FAIL   $name ($runtime): ${joined%; }"
        sed 's/^/       | /' "$work/$name.err" | tail -n 5
        failures=$((failures + 1))
    fi
done < "$here/expected.tsv"

if [[ "$failures" -ne 0 ]]; then
    echo "$failures example(s) did not give the expected result"
    exit 1
fi
echo "all examples gave the expected result"
