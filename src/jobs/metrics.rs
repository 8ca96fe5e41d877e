//! Prometheus metrics (prometheus-client, the Prometheus project's own Rust client):
//! jobs by status, queue depth, stage durations, cache hits, accepted and refused uploads,
//! claims, rescues, lease renewals and fenced results.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A `status` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status name.
    pub status: String,
}

/// A `stage` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage name (unpack, run, attest, store).
    pub stage: String,
}

/// A `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code.
    pub code: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Jobs by status (set from the store at each scrape).
    pub jobs: Family<StatusLabel, Gauge>,
    /// Jobs queued (set at each scrape).
    pub queue_depth: Gauge,
    /// Seconds per stage.
    pub stage_seconds: Family<StageLabel, Histogram>,
    /// Uploads answered from the result cache.
    pub cache_hits: Counter,
    /// Uploads accepted as new jobs.
    pub accepted: Counter,
    /// Uploads refused, by error code.
    pub refused: Family<CodeLabel, Counter>,
    /// Jobs finished, by status.
    pub finished: Family<StatusLabel, Counter>,
    /// Jobs this daemon claimed (each claim is a lease on PostgreSQL).
    pub claims: Counter,
    /// Claims that took over a job whose lease had expired (its daemon died or stalled).
    pub rescues: Counter,
    /// Heartbeats that renewed this daemon's leases, and the leases renewed in all.
    pub lease_renewals: Counter,
    /// Heartbeats that failed (the database did not answer); the leases may lapse.
    pub lease_renewal_failures: Counter,
    /// Leases this daemon holds now (its running jobs).
    pub leases_held: Gauge,
    /// Results refused by the fence: the attempt had lost its lease (or was cancelled).
    pub fenced: Counter,
    /// Webhook deliveries the receiver accepted.
    pub webhooks_delivered: Counter,
    /// Webhook deliveries that failed (each retry counts).
    pub webhooks_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `skill_verifier` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skill_verifier");
        let jobs = Family::<StatusLabel, Gauge>::default();
        let queue_depth = Gauge::default();
        let stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ])
        });
        let cache_hits = Counter::default();
        let accepted = Counter::default();
        let refused = Family::<CodeLabel, Counter>::default();
        let finished = Family::<StatusLabel, Counter>::default();
        registry.register("jobs", "Jobs by status", jobs.clone());
        registry.register(
            "queue_depth",
            "Jobs waiting for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Time spent per job stage",
            stage_seconds.clone(),
        );
        registry.register(
            "cache_hits",
            "Uploads answered from the result cache",
            cache_hits.clone(),
        );
        registry.register(
            "jobs_accepted",
            "Uploads accepted as new jobs",
            accepted.clone(),
        );
        registry.register(
            "uploads_refused",
            "Uploads refused, by error code",
            refused.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs finished, by status",
            finished.clone(),
        );
        let claims = Counter::default();
        let rescues = Counter::default();
        let lease_renewals = Counter::default();
        let lease_renewal_failures = Counter::default();
        let leases_held = Gauge::default();
        let fenced = Counter::default();
        registry.register("claims", "Jobs claimed by this daemon", claims.clone());
        registry.register(
            "rescues",
            "Claims of jobs whose lease had expired",
            rescues.clone(),
        );
        registry.register(
            "lease_renewals",
            "Leases renewed by the heartbeat",
            lease_renewals.clone(),
        );
        registry.register(
            "lease_renewal_failures",
            "Heartbeats that could not renew the leases",
            lease_renewal_failures.clone(),
        );
        registry.register(
            "leases_held",
            "Jobs this daemon holds a lease on",
            leases_held.clone(),
        );
        registry.register(
            "results_fenced",
            "Results not written because the attempt no longer held the job",
            fenced.clone(),
        );
        let webhooks_delivered = Counter::default();
        let webhooks_failed = Counter::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries the receiver accepted",
            webhooks_delivered.clone(),
        );
        registry.register(
            "webhook_delivery_failures",
            "Webhook deliveries that failed (each try)",
            webhooks_failed.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            jobs,
            queue_depth,
            stage_seconds,
            cache_hits,
            accepted,
            refused,
            finished,
            claims,
            rescues,
            lease_renewals,
            lease_renewal_failures,
            leases_held,
            fenced,
            webhooks_delivered,
            webhooks_failed,
        }
    }

    /// Records a stage duration.
    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&StageLabel {
                stage: stage.to_string(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
