//! The warm pool: containers created, attached and **started** ahead of demand, waiting idle
//! for their command.
//!
//! - A warm container runs [`READ_COMMAND_UNPACK_AND_RUN`](crate::sandbox::spec::READ_COMMAND_UNPACK_AND_RUN):
//!   it blocks in `read` on its stdin until a job sends its command line, then its tar. The
//!   engine's create + start (most of a trivial run's cost here) is already paid when the
//!   job arrives, and so is the attach: the pool holds the attached streams.
//! - The job's deadline starts when its command is delivered, not when the container
//!   started; idle time is never charged to a job.
//! - A container serves one job and is never reused: the job's container is removed after
//!   its run like any other.
//! - Pools are keyed by the job-independent spec ([`ContainerSpec::pooled`]): image, OCI
//!   runtime, every limit and the instance label. A key that has had a job keeps up to
//!   `per_key` idle; one that has only been prewarmed (a runtime configured but not used
//!   yet) keeps one, so its first job starts warm without every configured runtime holding
//!   a full pool of idle containers (about 17 MB of RSS each here, mostly containerd's
//!   shim).
//! - Refilling runs in the background, one container at a time per key (a single task per
//!   key), so a burst is never slowed by a stampede of creates; a burst larger than the pool
//!   starts its extra containers itself.
//! - Pool members carry the instance label, so the start-up reaper removes those a crash
//!   left; `settle` (shutdown) removes the idle ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::Launched;

/// Trees up to this size may use a warm container (its work tmpfs is sized for them).
pub(super) const POOL_TREE_BYTES: u64 = 16 * 1024 * 1024;

/// Idle containers per shape, and the count of runs in flight.
pub(super) struct WarmPool {
    /// How many idle containers each shape keeps.
    pub(super) per_key: usize,
    idle: Mutex<HashMap<String, Vec<Launched>>>,
    /// Keys with a refill task running.
    refilling: Mutex<HashSet<String>>,
    /// Keys that have had a job (a take): they keep `per_key` idle, the others one.
    used: Mutex<HashSet<String>>,
    /// Runs between take and their outcome.
    in_flight: AtomicUsize,
    /// Set while `settle` empties the pool: refills stop after the container in hand.
    stopping: AtomicBool,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("WarmPool")
            .field("per_key", &self.per_key)
            .field("idle", &idle.values().map(Vec::len).sum::<usize>())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Counts one run in flight for as long as it lives.
pub(super) struct Busy(Arc<WarmPool>);

impl Busy {
    pub(super) fn enter(pool: Arc<WarmPool>) -> Self {
        pool.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(pool)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks a key as being refilled for as long as it lives.
pub(super) struct Refilling {
    pool: Arc<WarmPool>,
    key: String,
}

impl Drop for Refilling {
    fn drop(&mut self) {
        self.pool
            .refilling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl WarmPool {
    pub(super) fn new(per_key: usize) -> Self {
        Self {
            per_key,
            idle: Mutex::new(HashMap::new()),
            refilling: Mutex::new(HashSet::new()),
            used: Mutex::new(HashSet::new()),
            in_flight: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// Whether refills should stop (the pool is being emptied).
    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stops (or allows again) refills.
    pub(super) fn set_stopping(&self, stopping: bool) {
        self.stopping.store(stopping, Ordering::SeqCst);
    }

    /// Runs in flight right now.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Idle containers of `key`.
    pub(super) fn len(&self, key: &str) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, Vec::len)
    }

    /// How many idle containers `key` keeps: `per_key` once it has had a job, else one.
    pub(super) fn target(&self, key: &str) -> usize {
        let used = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key);
        if used {
            self.per_key
        } else {
            self.per_key.min(1)
        }
    }

    /// Takes the oldest idle container of `key` (and marks the key as in use).
    pub(super) fn take(&self, key: &str) -> Option<Launched> {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string());
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let slot = idle.get_mut(key)?;
        (!slot.is_empty()).then(|| slot.remove(0))
    }

    /// Keeps `warm` if the key has room; gives it back otherwise.
    pub(super) fn put(&self, key: &str, warm: Launched) -> Option<Launched> {
        let target = self.target(key);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let slot = idle.entry(key.to_string()).or_default();
        if slot.len() < target {
            slot.push(warm);
            None
        } else {
            Some(warm)
        }
    }

    /// Claims the refill of `key`; `None` when a refill task already runs for it.
    pub(super) fn claim_refill(self: &Arc<Self>, key: &str) -> Option<Refilling> {
        if self.stopping() {
            return None;
        }
        let mut refilling = self.refilling.lock().unwrap_or_else(|p| p.into_inner());
        refilling.insert(key.to_string()).then(|| Refilling {
            pool: self.clone(),
            key: key.to_string(),
        })
    }

    /// Takes every idle container out.
    pub(super) fn drain(&self) -> Vec<Launched> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.drain().flat_map(|(_, ids)| ids).collect()
    }
}
