//! The typed stages of one verification, shared by the daemon's workers and the daemon-less
//! `skill-verifier verify`: a [`Package`] is run into a [`Ran`], which is attested into an
//! [`Attested`]. A job cannot be attested before it ran because only `run` makes a `Ran`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::attest::dsse::Envelope;
use crate::attest::keys::Signer;
use crate::attest::quote::QuoteProvider;
use crate::attest::statement::{
    Environment, Finding, JobInfo, PackageInfo, PolicyInfo, Predicate, ResultInfo, Severity,
    Statement, Status, Subject, TestInfo, Verdict, VerdictStatus, VerifierInfo, PREDICATE_TYPE,
    STATEMENT_TYPE,
};
use crate::ids::JobId;
use crate::package::{Package, TestSource};
use crate::sandbox::{spec_for_instance, ContainerSpec, Policy, RunOutcome, Runner, LABEL_JOB};
use crate::store::{rfc3339, ResultSummary};

/// How many bytes of each stream go into the attestation's excerpts (the tail: failures
/// usually explain themselves at the end). The full captured output is hashed and kept in
/// the job's logs.
pub const EXCERPT_BYTES: usize = 4096;

/// Everything a verification needs: the engine, the key, the quote provider, the policy.
#[derive(Clone)]
pub struct Verifier {
    /// The sandbox runner (Docker).
    pub runner: Arc<dyn Runner>,
    /// The attestation signing key.
    pub signer: Arc<Signer>,
    /// The TEE quote provider.
    pub quotes: Arc<dyn QuoteProvider>,
    /// The sandbox policy.
    pub policy: Policy,
    /// This daemon instance's id (container label).
    pub instance: String,
    /// The scan stage: compiled rule pack and verdict policy.
    pub scan: Arc<crate::scan::Stage>,
    /// The dependency stage: index, limits, cache.
    pub deps: Arc<crate::deps::Deps>,
}

/// Which job and attempt a run belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The job.
    pub job: JobId,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// A test that ran (stage 2).
#[derive(Debug)]
pub struct Ran {
    /// Which attempt.
    pub attempt: Attempt,
    /// The package that ran.
    pub package: Package,
    /// The container spec it ran under.
    pub spec: ContainerSpec,
    /// What happened.
    pub outcome: RunOutcome,
    /// What the scan found before the run.
    pub scan: crate::scan::ScanReport,
    /// The dry run's script invocations, in order (empty when none ran).
    pub dry_run: Vec<DryRunRun>,
    /// The requirements' fetch and install, when the package has requirements.
    pub deps: Option<DepsRun>,
    /// When the attempt started.
    pub started_at: OffsetDateTime,
    /// When the container was done.
    pub finished_at: OffsetDateTime,
}

/// The dependency stage of a run.
#[derive(Debug)]
pub struct DepsRun {
    /// The requirements file.
    pub requirements: String,
    /// The distributions installed (`None` when the fetch failed or was skipped).
    pub set: Option<crate::deps::CachedSet>,
    /// Served from the cache.
    pub cached: bool,
    /// The fetch's duration.
    pub fetch_ms: u64,
    /// Why the requirements could not be fetched (the skill's fault: the test did not run).
    pub failure: Option<String>,
    /// The index.
    pub index: String,
    /// The configured limits.
    pub limits: crate::deps::DepsLimits,
}

/// One script invocation of the dry run and what happened.
#[derive(Debug)]
pub struct DryRunRun {
    /// The script, relative to the skill root.
    pub script: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The run.
    pub outcome: RunOutcome,
}

/// Script entry points the dry run executes: python, node and shell scripts at the root and
/// under `scripts/`, in canonical order, at most `max`; with the runtime and interpreter for
/// each.
pub fn dry_run_scripts(
    files: &[crate::package::FileRecord],
    max: usize,
) -> Vec<(String, crate::package::Runtime, &'static str)> {
    use crate::package::Runtime;
    files
        .iter()
        .filter(|f| !f.path.contains('/') || f.path.starts_with("scripts/"))
        .filter_map(|f| {
            let ext = f.path.rsplit_once('.').map(|(_, e)| e)?;
            let (runtime, interpreter) = match ext {
                "py" => (Runtime::Python, "python3"),
                "js" | "mjs" | "cjs" => (Runtime::Node, "node"),
                "sh" => (Runtime::Shell, "sh"),
                _ => return None,
            };
            Some((f.path.clone(), runtime, interpreter))
        })
        .take(max)
        .collect()
}

/// A signed result (stage 3).
#[derive(Debug)]
pub struct Attested {
    /// The envelope as written (JSON bytes).
    pub envelope_json: Vec<u8>,
    /// The envelope.
    pub envelope: Envelope,
    /// PASSED / FAILED / WARNED.
    pub status: Status,
    /// The verdict (tests + policy): the job's `failed` follows it.
    pub verdict: VerdictStatus,
    /// The summary kept on the job.
    pub summary: ResultSummary,
    /// The captured logs, as served by `GET /verify/{id}/logs` (JSON).
    pub logs_json: Vec<u8>,
}

/// Why a verification could not complete (never a failing test: that is an outcome).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The sandbox could not run the test.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The attestation could not be signed.
    #[error("signing the attestation")]
    Attest(#[from] crate::attest::AttestError),
    /// Signing did not finish within its deadline (the quote provider hangs).
    #[error("signing the attestation: no answer within {secs} s")]
    AttestTimeout {
        /// The deadline.
        secs: u64,
    },
    /// The signed envelope could not be serialized.
    #[error("serializing the envelope")]
    Envelope(#[source] serde_json::Error),
    /// The signed result could not be stored (blob write).
    #[error("storing the result")]
    Store(#[from] crate::store::StoreError),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The scan could not read the package.
    #[error("scanning the package: {0}")]
    Scan(#[from] crate::scan::ScanError),
    /// The requirements could not be fetched, and not by the skill's fault (the index is
    /// unreachable, the trust store is missing).
    #[error("dependencies: {0}")]
    Deps(String),
}

impl PipelineError {
    /// A stable code for the job's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Sandbox(crate::sandbox::SandboxError::ImageMissing { .. }) => {
                "image_missing"
            }
            PipelineError::Sandbox(crate::sandbox::SandboxError::Connect(_)) => {
                "docker_unreachable"
            }
            PipelineError::Sandbox(_) => "sandbox_failed",
            PipelineError::Attest(_)
            | PipelineError::AttestTimeout { .. }
            | PipelineError::Envelope(_) => "attestation_failed",
            PipelineError::Store(_) => "store_failed",
            PipelineError::Cancelled => "cancelled",
            PipelineError::Scan(_) => "scan_failed",
            PipelineError::Deps(_) => "dependencies_unavailable",
        }
    }
}

impl Verifier {
    /// The container spec this verifier would use for `package` in `attempt`.
    pub fn spec(
        &self,
        package: &Package,
        attempt: Attempt,
    ) -> Result<ContainerSpec, PipelineError> {
        self.spec_of(&package.test, package, attempt)
    }

    /// The container spec for `plan` (the package's test, or one dry-run invocation): this
    /// daemon's labels, and in allowlist mode the package's declared names.
    fn spec_of(
        &self,
        plan: &crate::package::TestPlan,
        package: &Package,
        attempt: Attempt,
    ) -> Result<ContainerSpec, PipelineError> {
        let mut spec = spec_for_instance(plan, &self.policy, &self.instance)?;
        spec.labels
            .insert(LABEL_JOB.to_string(), attempt.job.to_string());
        if spec.network_mode() == crate::sandbox::NetworkMode::Allowlist {
            spec.allow =
                crate::package::plan::declared_network(&package.manifest).unwrap_or_default();
        }
        Ok(spec)
    }

    /// Whether the dry run applies to `package` under this policy.
    pub fn dry_run_applies(&self, package: &Package) -> bool {
        self.policy.network_mode() != crate::sandbox::NetworkMode::None
            && match self.policy.dry_run.as_str() {
                "always" => true,
                "smoke" => package.test.source == TestSource::Smoke,
                _ => false,
            }
    }

    /// The dry run: each script entry point once with `--help` and once with no arguments,
    /// each in its own container under the same observation, with the dry run's timeout.
    async fn dry_run(
        &self,
        attempt: Attempt,
        package: &Package,
        tree: &crate::package::TreeTar,
        install: Option<&crate::sandbox::InstallStep>,
        cancel: &CancellationToken,
    ) -> Result<Vec<DryRunRun>, PipelineError> {
        let mut out = Vec::new();
        for (script, runtime, interpreter) in
            dry_run_scripts(&package.file_facts, self.policy.dry_run_max_scripts)
        {
            for args in [vec!["--help".to_string()], Vec::new()] {
                let mut command = format!(
                    "{interpreter} {}",
                    crate::package::plan::shell_quote(&script)
                );
                for a in &args {
                    command.push(' ');
                    command.push_str(a);
                }
                let plan = crate::package::TestPlan {
                    command,
                    runtime,
                    timeout_secs: Some(self.policy.dry_run_timeout_secs),
                    source: TestSource::Smoke,
                };
                let mut spec = self.spec_of(&plan, package, attempt)?;
                if let Some(step) = install {
                    spec.set_install(step.clone());
                }
                let outcome = self.runner.run(&spec, tree, cancel.clone()).await?;
                if outcome.cancelled {
                    return Err(PipelineError::Cancelled);
                }
                out.push(DryRunRun {
                    script: script.clone(),
                    args,
                    outcome,
                });
            }
        }
        Ok(out)
    }

    /// Stage 2: runs the package's test in a fresh container.
    #[tracing::instrument(skip_all, fields(job_id = %attempt.job, attempt = attempt.attempt))]
    pub async fn run(
        &self,
        attempt: Attempt,
        package: Package,
        cancel: CancellationToken,
    ) -> Result<Ran, PipelineError> {
        let started_at = OffsetDateTime::now_utc();
        let mut spec = self.spec(&package, attempt)?;
        let scan = self.scan(&package).await?;
        let deps = self.dependencies(&package, &spec, &cancel).await?;
        // With requirements, the tree travels with its distributions (a scratch tar, removed
        // when `_scratch` drops) and the container installs them first.
        let (deps, failed, tree, install, _scratch) = match deps {
            Some(Staged::Ready {
                run,
                step,
                tree,
                scratch,
            }) => (Some(run), false, tree, Some(step), Some(scratch)),
            Some(Staged::Failed(run)) => (Some(run), true, package.tar.clone(), None, None),
            None => (None, false, package.tar.clone(), None, None),
        };
        if let Some(step) = &install {
            spec.set_install(step.clone());
        }
        if failed {
            let run = deps.expect("a failed stage has its run");
            // The skill's requirements cannot be met: the test does not run, and the signed
            // result says why.
            tracing::info!(
                reason = run.failure.as_deref().unwrap_or(""),
                "dependencies failed"
            );
            let outcome = RunOutcome::not_run(
                &spec,
                &self
                    .runner
                    .image_digest(&spec.image)
                    .await
                    .unwrap_or_default(),
            );
            return Ok(Ran {
                attempt,
                package,
                spec,
                outcome,
                scan,
                dry_run: Vec::new(),
                deps: Some(run),
                started_at,
                finished_at: OffsetDateTime::now_utc(),
            });
        }
        let clock = Instant::now();
        let outcome = self.runner.run(&spec, &tree, cancel.clone()).await?;
        tracing::info!(
            exit_code = outcome.exit_code,
            timed_out = outcome.timed_out,
            oom_killed = outcome.oom_killed,
            elapsed_ms = clock.elapsed().as_millis() as u64,
            "test ran"
        );
        if outcome.cancelled {
            return Err(PipelineError::Cancelled);
        }
        let dry_run = if self.dry_run_applies(&package) {
            self.dry_run(attempt, &package, &tree, install.as_ref(), &cancel)
                .await?
        } else {
            Vec::new()
        };
        Ok(Ran {
            attempt,
            package,
            spec,
            outcome,
            scan,
            dry_run,
            deps,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
        })
    }

    /// The dependency stage for `package` run under `spec`: `None` without requirements (or
    /// when its test does not run in the python runtime), the distributions staged with the
    /// tree, or the skill's failure. Our failures are errors.
    async fn dependencies(
        &self,
        package: &Package,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Option<Staged>, PipelineError> {
        let Some(requirements) = package
            .requirements
            .as_ref()
            .filter(|_| package.test.runtime == crate::package::Runtime::Python)
        else {
            return Ok(None);
        };
        let settings = &self.deps.settings;
        let mut run = DepsRun {
            requirements: requirements.path.clone(),
            set: None,
            cached: false,
            fetch_ms: 0,
            failure: None,
            index: settings.python_index.clone(),
            limits: settings.limits(),
        };
        let prepared = match self
            .deps
            .prepare(
                self.runner.as_ref(),
                spec,
                &self.policy,
                requirements,
                cancel,
            )
            .await
        {
            Ok(p) => p,
            Err(crate::deps::DepsError::Skill(message)) => {
                run.failure = Some(message);
                return Ok(Some(Staged::Failed(run)));
            }
            Err(crate::deps::DepsError::Ours(message)) => {
                if cancel.is_cancelled() {
                    return Err(PipelineError::Cancelled);
                }
                return Err(PipelineError::Deps(message));
            }
        };
        tracing::info!(
            distributions = prepared.set.files.len(),
            bytes = prepared.set.bytes(),
            cached = prepared.cached,
            fetch_ms = prepared.fetch_ms,
            "dependencies ready"
        );
        let step = crate::sandbox::InstallStep::new(settings.install_timeout_secs);
        let dir = self.deps.cache().scratch();
        let folder = step.folder();
        let (tree_path, set) = (package.tar.path.clone(), prepared.set.clone());
        let staged = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let scratch = tempfile::tempdir_in(&dir)?;
            let out = scratch.path().join("tree.tar");
            let tree = crate::deps::tree_with_dists(&tree_path, &set, &folder, &out)?;
            Ok::<_, std::io::Error>((tree, scratch))
        })
        .await
        .map_err(|e| PipelineError::Deps(format!("staging the distributions: {e}")))?
        .map_err(|e| PipelineError::Deps(format!("staging the distributions: {e}")))?;
        run.cached = prepared.cached;
        run.fetch_ms = prepared.fetch_ms;
        run.set = Some(prepared.set);
        Ok(Some(Staged::Ready {
            run,
            step,
            tree: staged.0,
            scratch: staged.1,
        }))
    }

    /// The scan stage: the package's tree through the rule pack and native checks (pure, on a
    /// blocking thread). Runs before the sandbox; the tests run whatever it finds.
    #[tracing::instrument(skip_all, fields(skill = %package.manifest.name))]
    pub async fn scan(&self, package: &Package) -> Result<crate::scan::ScanReport, PipelineError> {
        let stage = self.scan.clone();
        // Only what the scan reads moves to the blocking thread, not the file list.
        let (manifest, tar) = (package.manifest.clone(), package.tar.path.clone());
        let clock = Instant::now();
        let mut report = tokio::task::spawn_blocking(move || stage.scan_tar_file(&manifest, &tar))
            .await
            .map_err(|e| PipelineError::Scan(crate::scan::ScanError::ReadTree(e.to_string())))??;
        if let Some(r) = &package.requirements {
            report.findings.extend(crate::scan::requirement_findings(r));
            if package.test.runtime != crate::package::Runtime::Python {
                report.findings.push(crate::scan::Finding {
                    code: "requirements_not_installed".into(),
                    category: crate::scan::Category::Dependencies,
                    severity: Severity::Info,
                    message: format!(
                        "{} is declared but the test runs in the {} runtime; requirements are \
                         installed for python tests only",
                        r.path,
                        package.test.runtime.as_str()
                    ),
                    path: r.path.clone(),
                    line: None,
                    excerpt: String::new(),
                });
            }
        }
        tracing::info!(
            findings = report.findings.len(),
            endpoints = report.endpoints.len(),
            elapsed_us = clock.elapsed().as_micros() as u64,
            "scanned"
        );
        Ok(report)
    }

    /// Stage 3: builds the statement, binds the quote, signs the envelope.
    #[tracing::instrument(skip_all, fields(job_id = %ran.attempt.job, attempt = ran.attempt.attempt))]
    pub async fn attest(&self, ran: &Ran) -> Result<Attested, PipelineError> {
        let statement = build_statement(ran, &self.signer.key_id(), &self.scan);
        let statement_observed = statement.predicate.observed.clone();
        let status = statement.predicate.result.status;
        let verdict = statement
            .predicate
            .verdict
            .as_ref()
            .map(|v| v.status)
            .unwrap_or(VerdictStatus::Failed);
        let counts = crate::scan::SeverityCounts::of(
            &statement
                .predicate
                .findings
                .iter()
                .map(Finding::to_scan)
                .collect::<Vec<_>>(),
        );
        let envelope =
            crate::attest::sign_statement(statement, &self.signer, self.quotes.as_ref()).await?;
        let envelope_json =
            serde_json::to_vec_pretty(&envelope).map_err(PipelineError::Envelope)?;
        let o = &ran.outcome;
        let summary = ResultSummary {
            status,
            exit_code: o.exit_code,
            duration_ms: o.duration_ms,
            timed_out: o.timed_out,
            oom_killed: o.oom_killed,
            output_truncated: o.output_truncated,
            verdict: Some(verdict),
            findings: counts,
            network: Some(crate::store::NetworkSummary {
                mode: ran.spec.network.clone(),
                observed: statement_observed
                    .as_ref()
                    .map(|o| o.network.clone())
                    .unwrap_or_default(),
                dropped: statement_observed.map_or(0, |o| o.network_dropped),
            }),
        };
        let logs_json = serde_json::to_vec(&serde_json::json!({
            "stdout": String::from_utf8_lossy(&o.stdout),
            "stderr": String::from_utf8_lossy(&o.stderr),
            "stdout_sha256": o.stdout_sha256,
            "stderr_sha256": o.stderr_sha256,
            "output_truncated": o.output_truncated,
            "limit_bytes": o.limits.output_bytes,
        }))
        .expect("plain data serializes");
        Ok(Attested {
            envelope_json,
            envelope,
            status,
            verdict,
            summary,
            logs_json,
        })
    }
}

/// The dependency stage's result before the run.
enum Staged {
    /// Distributions staged with the tree in a scratch tar.
    Ready {
        run: DepsRun,
        step: crate::sandbox::InstallStep,
        tree: crate::package::TreeTar,
        scratch: tempfile::TempDir,
    },
    /// The skill's requirements cannot be met.
    Failed(DepsRun),
}

/// The verdict of an outcome: exit 0 without timeout or OOM kill passes; a smoke plan that
/// passes is WARNED (no tests were declared); anything else fails.
pub fn verdict(outcome: &RunOutcome, source: TestSource) -> Status {
    let clean = outcome.exit_code == 0 && !outcome.timed_out && !outcome.oom_killed;
    match (clean, source) {
        (false, _) => Status::Failed,
        (true, TestSource::Smoke) => Status::Warned,
        (true, _) => Status::Passed,
    }
}

fn tail_excerpt(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(EXCERPT_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The findings a reader of the attestation must see.
pub fn findings(ran: &Ran) -> Vec<Finding> {
    let mut out = Vec::new();
    let o = &ran.outcome;
    let plan = &ran.package.test;
    match plan.source {
        TestSource::Smoke => out.push(Finding::test(
            "no_tests_declared",
            Severity::Low,
            "the skill declares no tests and none were detected; only built-in smoke \
             checks ran (every script parses in its runtime)"
                .into(),
        )),
        TestSource::Detected => out.push(Finding::test(
            "tests_detected",
            Severity::Info,
            format!(
                "no verify-test in SKILL.md metadata; ran the detected command `{}`",
                plan.command
            ),
        )),
        TestSource::Declared => {}
    }
    if let Some(asked) = plan.timeout_secs {
        if asked > o.limits.timeout_secs {
            out.push(Finding::test(
                "timeout_capped",
                Severity::Info,
                format!(
                    "verify-timeout {asked}s exceeds the policy; capped at {}s",
                    o.limits.timeout_secs
                ),
            ));
        }
    }
    if o.timed_out {
        out.push(Finding::test(
            "timed_out",
            Severity::Medium,
            format!(
                "the test exceeded its {}s timeout and was killed",
                o.limits.timeout_secs
            ),
        ));
    }
    if o.oom_killed {
        out.push(Finding::test(
            "oom_killed",
            Severity::Medium,
            format!(
                "the test exceeded its {} byte memory limit and was killed",
                o.limits.memory_bytes
            ),
        ));
    }
    out.extend(network_findings(ran));
    if let Some(reason) = dependency_failure(ran) {
        out.push(Finding {
            code: reason.code,
            message: reason.message,
            category: Some(crate::scan::Category::Dependencies),
            severity: Some(Severity::High),
            path: ran.deps.as_ref().map(|d| d.requirements.clone()),
            line: None,
            excerpt: None,
        });
    }
    if o.output_truncated {
        out.push(Finding::test(
            "output_truncated",
            Severity::Info,
            format!(
                "output beyond {} bytes per stream was dropped (digests cover the captured bytes)",
                o.limits.output_bytes
            ),
        ));
    }
    out
}

/// Most `network_undeclared` findings listed one by one; the rest are summed up in one.
const MAX_NETWORK_FINDINGS: usize = 50;

/// Every network attempt of the run and its dry run, aggregated by destination; `None` when
/// the run had no network.
pub fn observed(ran: &Ran) -> Option<crate::attest::statement::Observed> {
    let reports: Vec<&crate::sink::record::Report> = std::iter::once(&ran.outcome)
        .chain(ran.dry_run.iter().map(|d| &d.outcome))
        .filter_map(|o| o.network.as_ref())
        .collect();
    if reports.is_empty() {
        return None;
    }
    let recorder = crate::sink::record::Recorder::default();
    let mut dropped = 0u64;
    for r in reports {
        dropped = dropped.saturating_add(r.dropped);
        for o in &r.observed {
            recorder.record(o.clone());
        }
    }
    let report = recorder.report();
    Some(crate::attest::statement::Observed {
        network: report.observed,
        network_dropped: dropped.saturating_add(report.dropped),
    })
}

/// Whether an observed attempt is covered by the declared names.
fn declared(o: &crate::sink::record::Observation, names: &[String]) -> bool {
    o.host
        .as_deref()
        .is_some_and(|h| crate::sink::egress::allowed(names, h))
        || o.address
            .as_deref()
            .is_some_and(|a| names.iter().any(|n| n == a))
}

/// `network_undeclared` for every attempt the skill did not declare (and that was not let
/// through), `network_endpoint_undeclared` for every statically named endpoint it did not
/// declare.
pub fn network_findings(ran: &Ran) -> Vec<Finding> {
    let names = crate::package::plan::declared_network(&ran.package.manifest).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(seen) = observed(ran) {
        let undeclared: Vec<_> = seen
            .network
            .iter()
            .filter(|o| !o.allowed && !declared(o, &names))
            .collect();
        for o in undeclared.iter().take(MAX_NETWORK_FINDINGS) {
            out.push(Finding {
                category: Some(crate::scan::Category::Network),
                ..Finding::test(
                    "network_undeclared",
                    Severity::High,
                    format!(
                        "the skill tried {} ({} time{}), which it does not declare in \
                         metadata.verify-network",
                        o.describe(),
                        o.count,
                        if o.count == 1 { "" } else { "s" }
                    ),
                )
            });
        }
        if undeclared.len() > MAX_NETWORK_FINDINGS {
            out.push(Finding {
                category: Some(crate::scan::Category::Network),
                ..Finding::test(
                    "network_undeclared",
                    Severity::High,
                    format!(
                        "and {} more undeclared destinations (see predicate.observed.network)",
                        undeclared.len() - MAX_NETWORK_FINDINGS
                    ),
                )
            });
        }
        if seen.network_dropped > 0 {
            out.push(Finding {
                category: Some(crate::scan::Category::Network),
                // High: flooding the sink with destinations is how a test would hide the
                // one that matters.
                ..Finding::test(
                    "network_observations_truncated",
                    Severity::High,
                    format!(
                        "{} attempts past the sink's bound of distinct destinations were \
                         counted but not itemised",
                        seen.network_dropped
                    ),
                )
            });
        }
    }
    for e in &ran.scan.endpoints {
        let host_declared =
            crate::sink::egress::allowed(&names, &e.host) || names.iter().any(|n| n == &e.host);
        if !host_declared {
            out.push(Finding {
                category: Some(crate::scan::Category::NetworkEndpoint),
                path: Some(e.path.clone()),
                line: Some(e.line),
                ..Finding::test(
                    "network_endpoint_undeclared",
                    Severity::Low,
                    format!(
                        "the skill names {} ({}), which it does not declare in \
                         metadata.verify-network",
                        e.host, e.value
                    ),
                )
            });
        }
    }
    out
}

/// The verdict of a run under the scan stage's policy: FAILED when the tests failed (exit
/// code, timeout, OOM kill) or when the policy blocks any finding (the scan's or the run's).
pub fn judge(ran: &Ran, findings: &[Finding], scan: &crate::scan::Stage) -> Verdict {
    let o = &ran.outcome;
    let test_failure = dependency_failure(ran).or_else(|| {
        (verdict(o, ran.package.test.source) == Status::Failed).then(|| crate::scan::Reason {
            code: "tests_failed".into(),
            message: if o.timed_out {
                format!("the test timed out after {}s", o.limits.timeout_secs)
            } else if o.oom_killed {
                "the test was killed for exceeding its memory limit".into()
            } else {
                format!("the test exited with code {}", o.exit_code)
            },
        })
    });
    let all: Vec<crate::scan::Finding> = findings.iter().map(Finding::to_scan).collect();
    scan.policy.verdict(&all, test_failure)
}

/// `predicate.policy` for the scan stage.
pub fn policy_info(scan: &crate::scan::Stage) -> PolicyInfo {
    PolicyInfo {
        name: scan.policy.name.clone(),
        version: scan.policy.version.clone(),
        sha256: scan.policy.sha256(),
        rules_sha256: scan.scanner.rules_sha256(),
    }
}

/// Builds the in-toto statement for a run (without the TEE quote, which signing binds).
pub fn build_statement(ran: &Ran, verifier_id: &str, scan: &crate::scan::Stage) -> Statement {
    let p = &ran.package;
    let o = &ran.outcome;
    let mut all_findings = findings(ran);
    all_findings.extend(ran.scan.findings.iter().cloned().map(Finding::from));
    let judged = judge(ran, &all_findings, scan);
    let mut subject = vec![Subject {
        name: p.manifest.name.clone(),
        digest: BTreeMap::from([("sha256".to_string(), p.tree_sha256.to_hex())]),
    }];
    if let Some(archive) = p.archive_sha256 {
        subject.push(Subject {
            name: format!("{}.archive", p.manifest.name),
            digest: BTreeMap::from([("sha256".to_string(), archive.to_hex())]),
        });
    }
    Statement {
        type_: STATEMENT_TYPE.to_string(),
        subject,
        predicate_type: PREDICATE_TYPE.to_string(),
        predicate: Predicate {
            verifier: VerifierInfo {
                id: verifier_id.to_string(),
                version: crate::VERSION.to_string(),
            },
            job: JobInfo {
                id: ran.attempt.job.to_string(),
                attempt: ran.attempt.attempt,
                started_at: rfc3339(ran.started_at),
                finished_at: rfc3339(ran.finished_at),
            },
            package: PackageInfo {
                name: p.manifest.name.clone(),
                tree_sha256: p.tree_sha256,
                archive_sha256: p.archive_sha256,
                files: p.files,
                bytes: p.bytes,
            },
            environment: Environment {
                image: o.image.clone(),
                image_digest: o.image_digest.clone(),
                runtime: ran.spec.runtime,
                network: ran.spec.network.clone(),
                declared_network: crate::package::plan::declared_network(&p.manifest)
                    .unwrap_or_default(),
                isolation: Some(crate::attest::statement::Isolation {
                    runtime: o.oci_runtime.clone(),
                }),
                engine: o.engine.clone(),
                limits: o.limits.clone(),
            },
            test: TestInfo {
                command: p.test.command.clone(),
                source: p.test.source,
            },
            result: ResultInfo {
                status: verdict(o, p.test.source),
                exit_code: o.exit_code,
                duration_ms: o.duration_ms,
                timed_out: o.timed_out,
                oom_killed: o.oom_killed,
                output_truncated: o.output_truncated,
                stdout_sha256: o.stdout_sha256,
                stderr_sha256: o.stderr_sha256,
                stdout_excerpt: tail_excerpt(&o.stdout),
                stderr_excerpt: tail_excerpt(&o.stderr),
            },
            findings: all_findings,
            verdict: Some(judged),
            policy: Some(policy_info(scan)),
            observed: observed(ran),
            dry_run: (!ran.dry_run.is_empty()).then(|| {
                ran.dry_run
                    .iter()
                    .map(|d| crate::attest::statement::DryRun {
                        script: d.script.clone(),
                        args: d.args.clone(),
                        exit_code: d.outcome.exit_code,
                        duration_ms: d.outcome.duration_ms,
                        timed_out: d.outcome.timed_out,
                    })
                    .collect()
            }),
            dependencies: ran
                .deps
                .as_ref()
                .map(|d| d.set.as_ref().map(|s| s.dependencies()).unwrap_or_default()),
            install: ran
                .deps
                .as_ref()
                .map(|d| install_info(d, o.install.as_ref())),
            tee: None,
        },
    }
}

/// `predicate.install` of a run's dependency stage.
fn install_info(
    d: &DepsRun,
    install: Option<&crate::sandbox::InstallOutcome>,
) -> crate::attest::statement::Install {
    crate::attest::statement::Install {
        duration_ms: install.map_or(0, |i| i.duration_ms),
        exit_code: install.and_then(|i| i.exit_code),
        timed_out: install.is_some_and(|i| i.timed_out),
        requirements: d.requirements.clone(),
        index: d.index.clone(),
        cached: d.cached,
        fetch_ms: d.fetch_ms,
        python: d.set.as_ref().map(|s| s.python.clone()).unwrap_or_default(),
        platform: d
            .set
            .as_ref()
            .map(|s| s.platform.clone())
            .unwrap_or_default(),
        error: d.failure.clone(),
        limits: d.limits,
    }
}

/// Why the dependency stage fails the run, if it does: the skill's requirements could not
/// be fetched, or the install in the container failed or timed out.
pub fn dependency_failure(ran: &Ran) -> Option<crate::scan::Reason> {
    let d = ran.deps.as_ref()?;
    if let Some(failure) = &d.failure {
        return Some(crate::scan::Reason {
            code: "dependencies_failed".into(),
            message: failure.clone(),
        });
    }
    let install = ran.outcome.install?;
    if install.timed_out {
        return Some(crate::scan::Reason {
            code: "dependencies_install_failed".into(),
            message: format!(
                "installing the requirements of {} exceeded [deps] install_timeout_secs = {} s",
                d.requirements, d.limits.install_timeout_secs
            ),
        });
    }
    match install.exit_code {
        Some(0) => None,
        Some(code) => Some(crate::scan::Reason {
            code: "dependencies_install_failed".into(),
            message: format!(
                "installing the fetched distributions of {} failed (pip exited with {code})",
                d.requirements
            ),
        }),
        None => Some(crate::scan::Reason {
            code: "dependencies_install_failed".into(),
            message: format!(
                "installing the requirements of {} did not finish (the container ended first)",
                d.requirements
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{spec_for, Policy};

    fn outcome(exit_code: i64, timed_out: bool, oom_killed: bool) -> RunOutcome {
        let plan = crate::package::TestPlan {
            command: "true".into(),
            runtime: crate::package::Runtime::Shell,
            timeout_secs: None,
            source: TestSource::Declared,
        };
        let spec = spec_for(&plan, &Policy::default(), BTreeMap::new()).unwrap();
        RunOutcome {
            exit_code,
            duration_ms: 5,
            timed_out,
            oom_killed,
            oci_runtime: "runc".into(),
            ..RunOutcome::not_run(&spec, "sha256:00")
        }
    }

    #[test]
    fn verdicts_follow_exit_code_timeout_oom_and_source() {
        use TestSource::*;
        assert_eq!(verdict(&outcome(0, false, false), Declared), Status::Passed);
        assert_eq!(verdict(&outcome(0, false, false), Detected), Status::Passed);
        assert_eq!(verdict(&outcome(0, false, false), Smoke), Status::Warned);
        assert_eq!(verdict(&outcome(1, false, false), Declared), Status::Failed);
        assert_eq!(verdict(&outcome(1, false, false), Smoke), Status::Failed);
        assert_eq!(
            verdict(&outcome(137, true, false), Declared),
            Status::Failed
        );
        // An OOM kill fails even if the init process reported 0.
        assert_eq!(verdict(&outcome(0, false, true), Declared), Status::Failed);
        assert_eq!(verdict(&outcome(0, true, false), Declared), Status::Failed);
    }

    #[test]
    fn excerpts_keep_the_tail_and_survive_invalid_utf8() {
        let mut bytes = vec![b'a'; EXCERPT_BYTES + 10];
        bytes.extend_from_slice(&[0xff, b'z']);
        let ex = tail_excerpt(&bytes);
        assert!(ex.ends_with("\u{fffd}z"));
        assert!(ex.len() <= EXCERPT_BYTES + 2);
    }
}
