#!/usr/bin/env bash
# Gate a skill on skill-verifier in any shell-based CI (GitLab CI, Jenkins, Buildkite, ...).
#
# Usage: verify-skill.sh [SKILL_DIR] [OUT_FILE]
#   SKILL_DIR  the skill's folder (or a .zip/.tar.gz/.skill archive); default ./my-skill
#   OUT_FILE   where to write the signed attestation (DSSE JSON); default attestation.json
#
# Two modes:
#   local   (default) `skill-verifier verify`: the whole pipeline in this job, against the
#           Docker engine this job can reach (DOCKER_HOST or the local socket). Needs the
#           skill-verifier binary and Docker. Signs with the key in SKILL_VERIFIER_KEY_DIR
#           (created if missing; default: skill-verifier's data dir).
#   remote  when SKILL_VERIFIER_SERVER is set: `skill-verifier submit --wait` to a daemon
#           you run (see deploy/), which signs with its long-lived key. SKILL_VERIFIER_TOKEN
#           (read by submit from the environment) is sent when set. Needs only the binary,
#           no Docker. The explicit form is:
#             skill-verifier submit ./my-skill --server "$SKILL_VERIFIER_SERVER" \
#               --token "$SKILL_VERIFIER_TOKEN" --wait --out attestation.json
#
# Exit codes, passed through so the CI step fails on anything but 0:
#   0 passed (also WARNED: no tests were declared, only smoke checks ran)
#   1 the skill's tests failed
#   2 invalid package (SKILL.md, layout or limits)
#   3 the verifier could not do its job (Docker unreachable, image missing, daemon down, ...)
# Set REQUIRE_TESTS=1 to also fail (exit 1) on WARNED; that check needs jq and base64.

set -euo pipefail

skill_dir=${1:-./my-skill}
out=${2:-attestation.json}

if ! command -v skill-verifier >/dev/null 2>&1; then
    echo "verify-skill: skill-verifier is not on PATH (cargo install --locked --git <repo> skill-verifier)" >&2
    exit 3
fi

rc=0
if [[ -n "${SKILL_VERIFIER_SERVER:-}" ]]; then
    echo "verify-skill: submitting $skill_dir to $SKILL_VERIFIER_SERVER" >&2
    # submit reads the token from SKILL_VERIFIER_TOKEN itself: the same as
    # `--token "$SKILL_VERIFIER_TOKEN"`, but the token stays out of the process list (ps).
    skill-verifier submit "$skill_dir" --server "$SKILL_VERIFIER_SERVER" --wait --out "$out" || rc=$?
else
    echo "verify-skill: verifying $skill_dir locally" >&2
    # Idempotent and quick when the runner images are already there.
    skill-verifier images prepare || rc=$?
    if [[ "$rc" -eq 0 ]]; then
        verify_args=(verify "$skill_dir" --out "$out")
        if [[ -n "${SKILL_VERIFIER_KEY_DIR:-}" ]]; then
            verify_args+=(--key-dir "$SKILL_VERIFIER_KEY_DIR")
        fi
        skill-verifier "${verify_args[@]}" || rc=$?
    else
        rc=3
    fi
fi

case "$rc" in
    0) echo "verify-skill: PASSED (attestation in $out)" >&2 ;;
    1) echo "verify-skill: FAILED: the skill's tests failed (attestation in $out)" >&2 ;;
    2) echo "verify-skill: INVALID: the package was refused; see the message above" >&2 ;;
    3) echo "verify-skill: ERROR: the verifier could not do its job; see the message above" >&2 ;;
    *) echo "verify-skill: ERROR: unexpected exit code $rc" >&2 ;;
esac

if [[ "$rc" -eq 0 && "${REQUIRE_TESTS:-0}" == "1" ]]; then
    status=$(jq -r '.payload' "$out" | base64 -d | jq -r '.predicate.result.status')
    if [[ "$status" != "PASSED" ]]; then
        echo "verify-skill: REQUIRE_TESTS=1 and the verdict is $status (no tests declared?)" >&2
        exit 1
    fi
fi

exit "$rc"
