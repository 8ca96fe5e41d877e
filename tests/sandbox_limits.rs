//! Hostile tests against the real engine: every limit holds and ends the run as an outcome.

mod sandbox_support;

use std::time::{Duration, Instant};

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::{Isolation, Policy};

#[tokio::test]
async fn a_fork_bomb_ends_and_the_host_is_fine() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let begun = Instant::now();
    let out = sh(
        &r,
        &inst,
        "bomb() { bomb | bomb & }; bomb; sleep 30",
        Some(4),
    )
    .await;
    let took = begun.elapsed();
    // runc: the shell survives its failed forks and sleeps into the deadline; gVisor: the
    // shell itself dies of a failed fork (exit 2). Either way it ends, within the bound.
    assert!(out.timed_out || out.exit_code != 0, "{out:?}");
    assert!(took < bound(4, &policy()), "took {took:?}");
    // The pids limit held: forks failed inside, and the engine runs the next test normally.
    let next = sh(&r, &inst, "echo fine", Some(20)).await;
    assert_eq!(next.exit_code, 0);
    assert_eq!(text(&next.stdout), "fine\n");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn the_pids_limit_caps_processes() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    // Fork sleepers until forking fails (the subshell dies then), and count what runs using
    // shell builtins only: no fork is left for anything else.
    let out = sh(
        &r,
        &inst,
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         ( while :; do sleep 30 & done ) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n",
        Some(20),
    )
    .await;
    let s = text(&out.stdout);
    // gVisor shows no cgroup files inside; the count (the last line) must hold either way.
    if isolation() == Isolation::Runc {
        assert_eq!(s.lines().next(), Some("128"), "{out:?}");
    }
    let procs: u32 = s.lines().last().and_then(|l| l.parse().ok()).unwrap_or(0);
    if isolation() == Isolation::Runc {
        assert!(procs > 100 && procs <= 128, "{procs} processes, {out:?}");
    } else {
        // Under gVisor the engine's pids cgroup counts the sandbox's host threads (the
        // Sentry's), so forking fails well before 128 guest processes and the shell dies
        // of it (exit 2): the cap holds, more tightly.
        assert!(procs <= 128, "{procs} processes, {out:?}");
        assert!(out.exit_code != 0 || procs > 0, "{out:?}");
    }
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let policy = Policy {
        memory_bytes: 128 * 1024 * 1024,
        ..policy()
    };
    let t = tree(&[]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Python,
        "python3 -c \"x = b'a' * (512 * 1024 * 1024); print(len(x))\"",
        Some(60),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert!(out.oom_killed, "{out:?} stderr={}", text(&out.stderr));
    assert_eq!(out.exit_code, 137);
    assert!(!out.timed_out);
    assert_eq!(out.limits.memory_bytes, 128 * 1024 * 1024);
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_busy_loop_times_out_within_timeout_and_grace() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let begun = Instant::now();
    let out = sh(&r, &inst, "while :; do :; done", Some(2)).await;
    let took = begun.elapsed();
    assert!(out.timed_out);
    assert!(!out.cancelled);
    // SIGTERM ends the loop: 128 + 15.
    assert_eq!(out.exit_code, 143);
    assert!(out.duration_ms >= 2000, "{out:?}");
    assert!(took < Duration::from_secs(2 + 2 + 5), "took {took:?}");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_loop_ignoring_sigterm_is_killed_after_the_grace() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let begun = Instant::now();
    let out = sh(
        &r,
        &inst,
        "trap '' TERM; while :; do sleep 1; done",
        Some(2),
    )
    .await;
    let took = begun.elapsed();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 137);
    // timeout 2 s + grace 2 s, then SIGKILL.
    assert!(out.duration_ms >= 4000, "{out:?}");
    assert!(took < Duration::from_secs(2 + 2 + 6), "took {took:?}");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_test_that_closes_its_output_still_meets_the_deadline() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let begun = Instant::now();
    let out = sh(&r, &inst, "exec >&- 2>&-; sleep 60", Some(2)).await;
    assert!(out.timed_out);
    assert!(begun.elapsed() < Duration::from_secs(10));
    assert_no_leftovers(&r, &inst).await;
}

fn rss_high_water_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_yes_flood_is_truncated_with_flat_memory() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    // Let 64 MiB flow through before the hard cap kills it: the capture must stay at
    // 1 MiB per stream and this process's memory must not grow with the flood.
    let policy = Policy {
        output_kill_bytes: 64 * 1024 * 1024,
        ..policy()
    };
    let t = tree(&[]);
    let before = rss_high_water_kib();
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "yes & yes >&2",
        Some(60),
        &policy,
        t.path(),
    )
    .await
    .unwrap();

    let grown_mib = (rss_high_water_kib().saturating_sub(before)) / 1024;
    eprintln!(
        "flood: {} ms, peak RSS grew by {grown_mib} MiB",
        out.duration_ms
    );
    assert!(out.output_truncated);
    assert!(
        !out.timed_out,
        "the hard cap, not the timeout, must end a flood"
    );
    assert_eq!(out.exit_code, 137);
    assert_eq!(out.stdout.len(), 1024 * 1024);
    assert_eq!(out.stderr.len(), 1024 * 1024);
    assert!(out.stdout.starts_with(b"y\ny\n"));
    assert!(
        grown_mib < 48,
        "memory grew by {grown_mib} MiB during a 256 MiB flood"
    );
    assert_no_leftovers(&r, &inst).await;
}

fn free_bytes(path: &str) -> u64 {
    let c = std::ffi::CString::new(path).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a valid out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

#[tokio::test]
async fn writing_3_gib_fails_with_enospc_and_the_host_disk_does_not_fill() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let before = free_bytes("/");
    let out = sh(
        &r,
        &inst,
        "for d in /tmp /work; do dd if=/dev/zero of=$d/big bs=1M count=3072 2>&1 | grep -o 'No space left on device'; \
         echo \"$d $(du -m $d/big | cut -f1)\"; rm -f $d/big; done",
        Some(60),
    )
    .await;
    let after = free_bytes("/");
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "No space left on device", "{s}");
    assert_eq!(lines[2], "No space left on device", "{s}");
    let mib = |l: &str| -> u64 { l.split(' ').nth(1).unwrap().parse().unwrap() };
    assert!(mib(lines[1]) <= 120, "{s}");
    assert!(mib(lines[3]) <= 129, "{s}");
    // Nothing reached the disk (tmpfs); allow for other work on this machine.
    assert!(
        before.saturating_sub(after) < 1024 * 1024 * 1024,
        "host free space fell by {} MiB",
        before.saturating_sub(after) / (1024 * 1024)
    );
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn nofile_and_fsize_ulimits_apply() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let out = sh(&r, &inst, "ulimit -n; ulimit -f", Some(20)).await;
    assert_eq!(out.exit_code, 0);
    // ulimit -f counts 512-byte blocks in busybox sh.
    assert_eq!(
        text(&out.stdout),
        format!("1024\n{}\n", 256 * 1024 * 1024 / 512)
    );
    assert_no_leftovers(&r, &inst).await;
}
