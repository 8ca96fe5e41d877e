//! Every abuse a hostile test can try ends within `timeout + kill grace + 3 s`, with flags
//! that say what happened and nothing left behind. Runs under the tier named by
//! `SKILL_VERIFIER_SANDBOX__ISOLATION` (runc by default; CI runs it again under gvisor).

mod sandbox_support;

use std::time::Instant;

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::{Policy, RunOutcome};

/// Runs `command` under `policy` with `timeout` and asserts the time bound.
async fn abuse(command: &str, timeout: u64, policy: Policy) -> RunOutcome {
    let Some(r) = runner().await else {
        panic!("no engine (set CI to make this a failure instead of a skip)")
    };
    let inst = instance();
    let t = tree(&[]);
    let begun = Instant::now();
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        command,
        Some(timeout),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    let took = begun.elapsed();
    let limit = bound(timeout, &policy);
    eprintln!(
        "{command:?}: {took:?} (bound {limit:?}) exit {} timed_out {} truncated {} runtime {}",
        out.exit_code, out.timed_out, out.output_truncated, out.oci_runtime
    );
    assert!(took < limit, "{command:?} took {took:?}, bound {limit:?}");
    assert_no_leftovers(&r, &inst).await;
    assert_eq!(out.oci_runtime, isolation().oci_runtime(), "{out:?}");
    out
}

/// No cap on output before the timeout: only the deadline can end these.
fn uncapped() -> Policy {
    Policy {
        output_kill_bytes: u64::MAX / 2,
        ..policy()
    }
}

#[tokio::test]
async fn the_reported_flood_is_cut_by_the_output_cap_not_after_60_s() {
    // What was seen: `yes AAAA...` with verify-timeout 20 ran for 60 s.
    let out = abuse("yes AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 20, policy()).await;
    assert!(out.output_truncated);
    assert!(
        !out.timed_out,
        "the cap, not the deadline, ends it: {out:?}"
    );
    assert_eq!(out.exit_code, 137);
    assert!(out.duration_ms < 10_000, "{out:?}");
}

#[tokio::test]
async fn flooding_stdout_until_the_deadline_ends_in_time() {
    let out = abuse("yes", 3, uncapped()).await;
    assert!(out.timed_out && out.output_truncated, "{out:?}");
    assert_eq!(out.stdout.len(), 1024 * 1024);
}

#[tokio::test]
async fn flooding_both_streams_while_ignoring_sigterm_ends_in_time() {
    let out = abuse(
        "trap '' TERM; yes & yes >&2 & while :; do wait; done",
        3,
        uncapped(),
    )
    .await;
    assert!(out.timed_out && out.output_truncated, "{out:?}");
    assert_eq!(out.exit_code, 137, "SIGTERM ignored, so SIGKILL: {out:?}");
    assert_eq!(out.stderr.len(), 1024 * 1024);
}

#[tokio::test]
async fn flooding_until_the_hard_cap_kills_it_while_ignoring_sigterm() {
    let out = abuse("trap '' TERM; yes & yes >&2; wait", 30, policy()).await;
    assert!(out.output_truncated && !out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
}

#[tokio::test]
async fn closing_stdout_and_running_on_ends_in_time() {
    let out = abuse(
        "exec >&- 2>&-; trap '' TERM; while :; do sleep 1; done",
        2,
        policy(),
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
}

#[tokio::test]
async fn forking_without_end_ends_in_time() {
    let out = abuse("bomb() { bomb | bomb & }; bomb; sleep 30", 3, policy()).await;
    // runc: the shell survives its failed forks and sleeps into the deadline; gVisor: the
    // shell itself dies of a failed fork (exit 2).
    assert!(out.timed_out || out.exit_code != 0, "{out:?}");
}

#[tokio::test]
async fn spinning_ends_in_time() {
    let out = abuse("while :; do :; done", 2, policy()).await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 143, "SIGTERM ends a plain loop: {out:?}");
    assert!(out.duration_ms >= 2000, "{out:?}");
}

#[tokio::test]
async fn sleeping_ends_in_time() {
    let out = abuse("sleep 600", 2, policy()).await;
    assert!(out.timed_out, "{out:?}");
    assert!(!out.output_truncated && !out.oom_killed);
}

#[tokio::test]
async fn a_quiet_test_is_not_flagged() {
    let out = abuse("echo ok", 10, policy()).await;
    assert!(!out.timed_out && !out.output_truncated && !out.oom_killed && !out.cancelled);
    assert_eq!(out.exit_code, 0);
    assert_eq!(text(&out.stdout), "ok\n");
}
