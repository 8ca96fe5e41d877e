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
    Environment, Finding, JobInfo, PackageInfo, Predicate, ResultInfo, Statement, Status, Subject,
    TestInfo, VerifierInfo, PREDICATE_TYPE, STATEMENT_TYPE,
};
use crate::ids::JobId;
use crate::package::{Package, TestSource};
use crate::sandbox::{
    spec_for, ContainerSpec, Policy, RunOutcome, Runner, LABEL_INSTANCE, LABEL_JOB,
};
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
    /// When the attempt started.
    pub started_at: OffsetDateTime,
    /// When the container was done.
    pub finished_at: OffsetDateTime,
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
    #[error("signing the attestation: {0}")]
    Attest(String),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
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
            PipelineError::Attest(_) => "attestation_failed",
            PipelineError::Cancelled => "cancelled",
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
        let labels = BTreeMap::from([
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_JOB.to_string(), attempt.job.to_string()),
        ]);
        Ok(spec_for(&package.test, &self.policy, labels)?)
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
        let spec = self.spec(&package, attempt)?;
        let clock = Instant::now();
        let outcome = self.runner.run(&spec, &package.root, cancel).await?;
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
        Ok(Ran {
            attempt,
            package,
            spec,
            outcome,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
        })
    }

    /// Stage 3: builds the statement, binds the quote, signs the envelope.
    #[tracing::instrument(skip_all, fields(job_id = %ran.attempt.job, attempt = ran.attempt.attempt))]
    pub async fn attest(&self, ran: &Ran) -> Result<Attested, PipelineError> {
        let statement = build_statement(ran, &self.signer.key_id());
        let status = statement.predicate.result.status;
        let envelope = crate::attest::sign_statement(statement, &self.signer, self.quotes.as_ref())
            .await
            .map_err(|e| PipelineError::Attest(e.to_string()))?;
        let envelope_json = serde_json::to_vec_pretty(&envelope)
            .map_err(|e| PipelineError::Attest(e.to_string()))?;
        let o = &ran.outcome;
        let summary = ResultSummary {
            status: status_name(status).to_string(),
            exit_code: o.exit_code,
            duration_ms: o.duration_ms,
            timed_out: o.timed_out,
            oom_killed: o.oom_killed,
            output_truncated: o.output_truncated,
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
            summary,
            logs_json,
        })
    }
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

/// PASSED / FAILED / WARNED.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Passed => "PASSED",
        Status::Failed => "FAILED",
        Status::Warned => "WARNED",
    }
}

/// declared / detected / smoke.
pub fn source_name(source: TestSource) -> &'static str {
    match source {
        TestSource::Declared => "declared",
        TestSource::Detected => "detected",
        TestSource::Smoke => "smoke",
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
        TestSource::Smoke => out.push(Finding {
            code: "no_tests_declared".into(),
            message: "the skill declares no tests and none were detected; only built-in smoke \
                      checks ran (every script parses in its runtime)"
                .into(),
        }),
        TestSource::Detected => out.push(Finding {
            code: "tests_detected".into(),
            message: format!(
                "no verify-test in SKILL.md metadata; ran the detected command `{}`",
                plan.command
            ),
        }),
        TestSource::Declared => {}
    }
    if let Some(asked) = plan.timeout_secs {
        if asked > o.limits.timeout_secs {
            out.push(Finding {
                code: "timeout_capped".into(),
                message: format!(
                    "verify-timeout {asked}s exceeds the policy; capped at {}s",
                    o.limits.timeout_secs
                ),
            });
        }
    }
    if o.timed_out {
        out.push(Finding {
            code: "timed_out".into(),
            message: format!(
                "the test exceeded its {}s timeout and was killed",
                o.limits.timeout_secs
            ),
        });
    }
    if o.oom_killed {
        out.push(Finding {
            code: "oom_killed".into(),
            message: format!(
                "the test exceeded its {} byte memory limit and was killed",
                o.limits.memory_bytes
            ),
        });
    }
    if o.output_truncated {
        out.push(Finding {
            code: "output_truncated".into(),
            message: format!(
                "output beyond {} bytes per stream was dropped (digests cover the captured bytes)",
                o.limits.output_bytes
            ),
        });
    }
    out
}

/// Builds the in-toto statement for a run (without the TEE quote, which signing binds).
pub fn build_statement(ran: &Ran, verifier_id: &str) -> Statement {
    let p = &ran.package;
    let o = &ran.outcome;
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
                runtime: ran.spec.runtime.as_str().to_string(),
                network: ran.spec.network.clone(),
                limits: o.limits.clone(),
            },
            test: TestInfo {
                command: p.test.command.clone(),
                source: source_name(p.test.source).to_string(),
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
            findings: findings(ran),
            tee: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Policy;

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
            output_truncated: false,
            cancelled: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_sha256: crate::digest::Sha256Digest::of(b""),
            stderr_sha256: crate::digest::Sha256Digest::of(b""),
            image: spec.image.clone(),
            image_digest: "sha256:00".into(),
            limits: spec.limits,
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
