//! Leases for containers of daemon-less runs (`skill-verifier verify`), so a later run on
//! the same engine can tell a dead CLI's containers from a live one's.
//!
//! The rule: a CLI run labels every container it creates with
//! `dev.skill-verifier.lease = <boot id>/<pid namespace>/<pid>/<process start time>`.
//! A later `verify` or `serve` on the same engine lists containers carrying a lease and
//! removes one when
//! - its boot id and pid namespace are ours (same host, same process view) and no process
//!   with that pid and that start time exists (the CLI is gone; a reused pid has another
//!   start time), or
//! - it comes from another boot or pid namespace (a remote engine shared by several hosts,
//!   a reboot) and was created more than [`FOREIGN_LEASE_SECS`] ago: liveness cannot be
//!   checked from here, so age decides; no run lives that long (the longest timeout is
//!   capped well below it).
//!
//! A live run's containers are never touched: same host and a live owner is decisive.

use std::path::Path;

/// The label key.
pub const LABEL_LEASE: &str = "dev.skill-verifier.lease";

/// Age after which a lease from another host or pid namespace is considered dead.
pub const FOREIGN_LEASE_SECS: i64 = 6 * 3600;

/// This process's lease value, or `None` when `/proc` does not say enough.
pub fn current() -> Option<String> {
    let pid = std::process::id();
    Some(format!(
        "{}/{}/{pid}/{}",
        boot_id()?,
        pid_namespace()?,
        start_time(pid)?
    ))
}

/// Whether a container with `lease`, created at `created` (Unix seconds), belongs to a run
/// that is gone, judged at `now`.
pub fn is_dead(lease: &str, created: i64, now: i64) -> bool {
    let mut parts = lease.split('/');
    let (Some(boot), Some(ns), Some(pid), Some(start), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        // Not ours to judge by liveness; a malformed lease falls back to age.
        return now.saturating_sub(created) > FOREIGN_LEASE_SECS;
    };
    let here = boot_id().as_deref() == Some(boot) && pid_namespace().as_deref() == Some(ns);
    if !here {
        return now.saturating_sub(created) > FOREIGN_LEASE_SECS;
    }
    match pid.parse::<u32>() {
        Ok(pid) => start_time(pid).as_deref() != Some(start),
        Err(_) => true,
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string())
}

fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    // `pid:[4026531836]` -> `4026531836`
    let text = link.to_string_lossy();
    let inode = text.trim_start_matches("pid:[").trim_end_matches(']');
    Some(inode.to_string())
}

/// Field 22 of `/proc/<pid>/stat`: the process start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_lease_is_alive_and_a_dead_pid_is_not() {
        let ours = current().expect("linux /proc");
        assert!(!is_dead(&ours, 0, i64::MAX));
        let mut parts: Vec<&str> = ours.split('/').collect();
        // Same pid, another start time: a reused pid.
        parts[3] = "1";
        assert!(is_dead(&parts.join("/"), 0, 0));
        // A pid that cannot exist.
        let gone = format!("{}/{}/4294967295/1", parts[0], parts[1]);
        assert!(is_dead(&gone, 0, 0));
    }

    #[test]
    fn a_foreign_lease_is_judged_by_age() {
        let foreign = "not-this-boot/1/1/1";
        assert!(!is_dead(foreign, 1000, 1000 + FOREIGN_LEASE_SECS));
        assert!(is_dead(foreign, 1000, 1001 + FOREIGN_LEASE_SECS));
        assert!(!is_dead("garbage", 1000, 1000));
    }
}
