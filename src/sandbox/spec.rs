//! [`ContainerSpec`] as plain data: a pure function of (test plan, policy). No Docker here.
//!
//! The spec says everything about one run: the image for the runtime, the argv, the
//! environment, the user, the labels and every limit. [`super::docker`] turns it into a
//! Docker create request field by field and adds nothing of its own except the size of the
//! skill's tree (which the working-copy tmpfs must hold on top of `work_bytes`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::package::{Runtime, TestPlan};

use super::{ImageMap, SandboxError};

/// Where the skill's working copy lives inside the container (a tmpfs, the working directory).
pub const WORKDIR: &str = "/work";

/// Exit code of the unpack step when `tar` could not unpack the skill's tree.
pub const UNPACK_FAILED_EXIT: i64 = 125;

/// The line the unpack step prints on stderr when `tar` fails; the runner turns it into
/// [`SandboxError::Unpack`](super::SandboxError::Unpack).
pub const UNPACK_FAILED_MARKER: &str = "skill-verifier: unpacking the skill's files failed";

/// The line a warm container prints on stderr when it could not read its command; the
/// runner turns it into [`SandboxError::Unpack`](super::SandboxError::Unpack) too.
pub const READ_COMMAND_FAILED_MARKER: &str = "skill-verifier: reading the test command failed";

/// The container's argv runs this script with `sh -c`: unpack the tar of the skill's tree
/// that the runner streams into stdin, then replace itself with `sh -c <test>` in the skill
/// root, stdin from `/dev/null`. The test command arrives as `$1`, never spliced into the
/// script, so no quoting can go wrong.
const UNPACK_AND_RUN: &str = concat!(
    "tar -x -f - -C /work || { echo \"skill-verifier: unpacking the skill's files failed\" >&2; exit 125; }; ",
    "cd /work && exec sh -c \"$1\" sh </dev/null"
);

/// The entrypoint of a container created ahead of demand (the warm pool), when the test
/// command is not yet known: stdin carries the command first, as a line with its count of
/// lines followed by those lines ([`command_lines`]), then the tree's tar as usual. Only
/// shell builtins read it (`read -r` with an empty `IFS` keeps every byte but NUL and
/// newline, and the newlines are put back), so no process is forked before `tar`: each
/// fork costs the run about a millisecond here. `read` takes a pipe byte by byte, so it
/// never swallows the tar's first bytes.
pub const READ_COMMAND_UNPACK_AND_RUN: &str = concat!(
    "fail() { echo \"skill-verifier: reading the test command failed\" >&2; exit 125; }; ",
    "IFS= read -r n || fail; case $n in ''|*[!0-9]*) fail;; esac; ",
    "nl='\n'; cmd=; i=0; ",
    "while [ \"$i\" -lt \"$n\" ]; do IFS= read -r line || fail; ",
    "if [ \"$i\" -gt 0 ]; then cmd=\"$cmd$nl\"; fi; cmd=\"$cmd$line\"; i=$((i + 1)); done; ",
    "tar -x -f - -C /work || { echo \"skill-verifier: unpacking the skill's files failed\" >&2; exit 125; }; ",
    "cd /work && exec sh -c \"$cmd\" sh </dev/null"
);

/// What a warm container reads before the tar ([`READ_COMMAND_UNPACK_AND_RUN`]): the count
/// of `script`'s lines, then `script`, each ended by a newline. `script` holds no NUL
/// ([`spec_for`] refuses one).
pub fn command_lines(script: &str) -> Vec<u8> {
    let lines = script.split('\n').count();
    format!("{lines}\n{script}\n").into_bytes()
}

impl ContainerSpec {
    /// The job-independent form of this spec, for a container created before its job is
    /// known: the command comes through stdin ([`READ_COMMAND_UNPACK_AND_RUN`]) and only the
    /// instance label is kept (the reaper finds pooled containers by it). Everything the
    /// sandbox enforces (limits, user, network, mounts) is unchanged; the timeout is enforced
    /// by the runner, not the container, so it is left out of the pool key.
    pub fn pooled(&self) -> ContainerSpec {
        let mut generic = self.clone();
        generic.command = String::new();
        generic.cmd = vec![
            "sh".into(),
            "-c".into(),
            READ_COMMAND_UNPACK_AND_RUN.into(),
            "skill-verifier".into(),
        ];
        generic
            .labels
            .retain(|k, _| k.as_str() == super::LABEL_INSTANCE);
        generic.limits.timeout_secs = 0;
        generic.install = None;
        // The allowlist reaches the sink with the job, not at its start.
        generic.allow = Vec::new();
        generic
    }

    /// The network mode; an unknown value reads as `none`.
    pub fn network_mode(&self) -> NetworkMode {
        NetworkMode::parse(&self.network).unwrap_or(NetworkMode::None)
    }
}

/// Every limit applied to one run; recorded in the attestation's `environment.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Memory limit; swap is set equal, so no swap.
    pub memory_bytes: u64,
    /// CPU quota in CPUs.
    pub cpus: f64,
    /// Max processes/threads.
    pub pids: i64,
    /// Wall-clock timeout.
    pub timeout_secs: u64,
    /// Output captured per stream.
    pub output_bytes: u64,
    /// Total output (both streams) after which the container is killed.
    pub output_kill_bytes: u64,
    /// Writable bytes in the working copy beyond the skill's own files (tmpfs).
    pub work_bytes: u64,
    /// Size of the `/tmp` tmpfs.
    pub tmp_bytes: u64,
    /// Size of `/dev/shm`.
    pub shm_bytes: u64,
    /// `RLIMIT_NOFILE` (soft = hard).
    pub nofile: u64,
    /// `RLIMIT_FSIZE` in bytes (soft = hard): the largest file a process may write.
    pub fsize_bytes: u64,
    /// Engine-side logging driver (`none` by default: output reaches the daemon through the
    /// attach stream only, and nothing is written to the engine's disk).
    pub log_driver: String,
    /// Engine-side log cap when the driver is `json-file` or `local` (`max-size`, one file).
    pub log_bytes: u64,
    /// Seconds between SIGTERM and SIGKILL when the timeout fires.
    pub kill_grace_secs: u64,
    /// Root filesystem mounted read-only.
    pub read_only_rootfs: bool,
}

/// The sandbox policy: defaults and caps on what a skill may ask for.
///
/// Lives in the config as `[sandbox]`; every field is optional there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Runtime -> image reference.
    pub images: ImageMap,
    /// Default timeout.
    pub timeout_secs: u64,
    /// Largest timeout a skill may ask for (larger requests are clamped to it).
    pub max_timeout_secs: u64,
    /// Memory limit (and memory+swap).
    pub memory_bytes: u64,
    /// CPUs.
    pub cpus: f64,
    /// pids limit.
    pub pids: i64,
    /// Output cap per stream.
    pub output_bytes: u64,
    /// Total output after which the run is killed: past `output_bytes` the daemon only counts
    /// and discards, and this bound stops a flood from running until the timeout.
    pub output_kill_bytes: u64,
    /// Writable space in the working copy beyond the skill's own files.
    pub work_bytes: u64,
    /// `/tmp` size.
    pub tmp_bytes: u64,
    /// `/dev/shm` size (Docker mounts one writable by everyone; keep it small).
    pub shm_bytes: u64,
    /// `RLIMIT_NOFILE`.
    pub nofile: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub fsize_bytes: u64,
    /// Engine-side logging driver. `none` (the default) keeps container output off the
    /// engine's disk entirely and is much faster under a flood: `json-file` encodes every
    /// line as JSON, about 1 MB/s for `yes`. `json-file`/`local` are capped at `log_bytes`.
    pub log_driver: String,
    /// Engine-side log cap per container (for `json-file`/`local`).
    pub log_bytes: u64,
    /// SIGTERM -> SIGKILL grace on timeout.
    pub kill_grace_secs: u64,
    /// Network mode ([`NetworkMode`]): `observe` (the default: every attempt ends at a sink
    /// and is recorded, nothing leaves), `allowlist` (declared names are really reached
    /// through the sink, the rest is sunk), `none` (no network at all). Never `host` or a
    /// bridge: the test never gets a route of its own.
    pub network: String,
    /// The network sink's image (built by `images prepare` from this binary); by default
    /// tagged with the digest of the sink's sources.
    pub sink_image: String,
    /// Allowlist mode: an allowed name may resolve to a loopback, private or link-local
    /// address. Off by default: no metadata endpoints, no host services.
    pub allow_private_egress: bool,
    /// When scripts are dry-run (each entry point once with `--help`, once with no
    /// arguments, under observation): `smoke` (the default: when the skill declares no
    /// tests), `always` (beside declared tests too) or `never`. Needs a network mode with a
    /// sink; under `none` there is nothing to observe and no dry run.
    pub dry_run: String,
    /// The dry run's timeout per script invocation.
    pub dry_run_timeout_secs: u64,
    /// Most script entry points the dry run executes (two runs each).
    pub dry_run_max_scripts: usize,
    /// `uid:gid` the test runs as.
    #[serde(deserialize_with = "crate::config::string_or_number")]
    pub user: String,
    /// The isolation tier: `runc` (namespaces, cgroups, seccomp) or `gvisor` (runsc: a
    /// user-space kernel between the test and the host's).
    pub isolation: Isolation,
    /// Expert override: any OCI runtime registered with the engine, used instead of the
    /// tier's. The attestation records whichever runtime actually ran.
    pub oci_runtime: Option<String>,
    /// The Docker engines to run on (`[[sandbox.engines]]`, see
    /// [`crate::sandbox::engines`]); empty: one engine from `DOCKER_HOST`,
    /// `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`. Where a job runs is not part of the
    /// policy's identity (the result cache key), so it is never serialised.
    #[serde(skip_serializing)]
    pub engines: Vec<super::EngineSettings>,
}

/// The network mode (`[sandbox] network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network at all (the container's own loopback only).
    None,
    /// Every attempt ends at the sink and is recorded; nothing leaves.
    #[default]
    Observe,
    /// Declared names are reached through the sink; the rest is sunk and recorded.
    Allowlist,
}

impl NetworkMode {
    /// The config and contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Observe => "observe",
            NetworkMode::Allowlist => "allowlist",
        }
    }

    /// Parses a config value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(NetworkMode::None),
            "observe" => Some(NetworkMode::Observe),
            "allowlist" => Some(NetworkMode::Allowlist),
            _ => None,
        }
    }
}

/// The isolation tier (`[sandbox] isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The engine's runc.
    #[default]
    Runc,
    /// gVisor's runsc, registered with the engine as `runsc` (`scripts/setup` does it).
    Gvisor,
}

impl Isolation {
    /// The OCI runtime name this tier needs registered with the engine.
    pub fn oci_runtime(self) -> &'static str {
        match self {
            Isolation::Runc => "runc",
            Isolation::Gvisor => "runsc",
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        let images = Runtime::ALL
            .iter()
            .map(|r| (*r, super::images::default_image(*r)))
            .collect();
        Self {
            images,
            timeout_secs: 60,
            max_timeout_secs: 600,
            memory_bytes: 512 * MIB,
            cpus: 1.0,
            pids: 128,
            output_bytes: MIB,
            output_kill_bytes: 16 * MIB,
            // 128 + 120 + 8 = 256 MiB of writable space in total. All three are tmpfs, so
            // every byte written is also charged to the container's memory limit, and
            // nothing written ever reaches the host's disk.
            work_bytes: 128 * MIB,
            tmp_bytes: 120 * MIB,
            shm_bytes: 8 * MIB,
            nofile: 1024,
            // As large as all writable space, so a big write ends in ENOSPC from the tmpfs
            // (what a test can handle) before SIGXFSZ would kill the writer.
            fsize_bytes: 256 * MIB,
            log_driver: "none".into(),
            log_bytes: MIB,
            kill_grace_secs: 2,
            network: NetworkMode::Observe.as_str().into(),
            sink_image: crate::sink::image(),
            allow_private_egress: false,
            dry_run: "smoke".into(),
            dry_run_timeout_secs: 10,
            dry_run_max_scripts: 8,
            user: "65534:65534".into(),
            isolation: Isolation::Runc,
            oci_runtime: None,
            engines: Vec::new(),
        }
    }
}

impl Policy {
    /// The network mode; an unknown value (refused at load) reads as `none`.
    pub fn network_mode(&self) -> NetworkMode {
        NetworkMode::parse(&self.network).unwrap_or(NetworkMode::None)
    }

    /// The OCI runtime runs use: the expert override, else the isolation tier's.
    pub fn runtime_name(&self) -> &str {
        self.oci_runtime
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or(self.isolation.oci_runtime())
    }

    /// The limits a run under this policy gets, with `timeout_secs` already decided.
    pub fn limits(&self, timeout_secs: u64) -> RunLimits {
        RunLimits {
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            pids: self.pids,
            timeout_secs,
            output_bytes: self.output_bytes,
            output_kill_bytes: self.output_kill_bytes.max(self.output_bytes),
            work_bytes: self.work_bytes,
            tmp_bytes: self.tmp_bytes,
            shm_bytes: self.shm_bytes,
            nofile: self.nofile,
            fsize_bytes: self.fsize_bytes,
            log_driver: self.log_driver.clone(),
            log_bytes: self.log_bytes,
            kill_grace_secs: self.kill_grace_secs,
            read_only_rootfs: true,
        }
    }
}

/// The default policy's limits with its default timeout; handy for test doubles of
/// [`Runner`](super::Runner) (`RunLimits { timeout_secs: 5, ..RunLimits::default() }`).
impl Default for RunLimits {
    fn default() -> Self {
        let policy = Policy::default();
        policy.limits(policy.timeout_secs)
    }
}

/// Everything needed to create one container: plain data, golden-testable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference.
    pub image: String,
    /// The runtime the image serves.
    pub runtime: Runtime,
    /// The test command as declared (what the attestation records).
    pub command: String,
    /// The full container command (argv).
    pub cmd: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    /// Working directory (the skill root inside the container).
    pub workdir: String,
    /// Network mode: `none`, `observe` or `allowlist` ([`NetworkMode`]).
    pub network: String,
    /// The sink's image, when the mode needs a sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_image: Option<String>,
    /// Allowlist mode: the names this job may reach (its declared network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Allowlist mode: allowed names may resolve to private addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private: bool,
    /// Labels (instance, job).
    pub labels: BTreeMap<String, String>,
    /// Every limit.
    pub limits: RunLimits,
    /// Alternative OCI runtime, if any.
    pub oci_runtime: Option<String>,
    /// Dependencies to install before the test ([`InstallStep`]); `None` for most runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallStep>,
}

/// An install before the test, in the test's own container: the distributions arrive in the
/// tree's tar under `/work/.skill-verifier-deps-<nonce>/` (a name the package cannot
/// predict), are installed offline (`pip --no-index --no-deps`, exactly those files) into a
/// venv in `/tmp` (the size-limited writable space), removed from the working copy, and
/// then the test runs with the venv first on `PATH`.
///
/// The install has its own deadline: the run loop starts the test's timeout when the
/// install's marker line (carrying the nonce, so neither a package nor its test can forge
/// it before the install ends) appears on stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallStep {
    /// Random hex: names the distributions' folder and the marker line.
    pub nonce: String,
    /// The install's own deadline, from command delivery.
    pub timeout_secs: u64,
}

impl InstallStep {
    /// A fresh step with a random nonce.
    pub fn new(timeout_secs: u64) -> Self {
        Self {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            timeout_secs,
        }
    }

    /// The folder of the working copy the distributions arrive in (relative to `/work`).
    pub fn folder(&self) -> String {
        format!(".skill-verifier-deps-{}", self.nonce)
    }

    /// The marker's prefix on stderr: `skill-verifier: install <nonce> exited <code>`.
    pub fn marker(&self) -> String {
        format!("skill-verifier: install {} exited ", self.nonce)
    }

    /// The script the container runs instead of the bare test command: the install, the
    /// marker, then the test (quoted, never spliced unquoted).
    pub fn script(&self, test_command: &str) -> String {
        let dir = format!("/work/{}", self.folder());
        format!(
            "d={dir}\n\
             python3 -m venv --system-site-packages --without-pip /tmp/.venv >&2 && \
             /tmp/.venv/bin/python -m pip install --no-index --no-deps --no-cache-dir \
             --disable-pip-version-check --no-input --progress-bar off --no-compile \"$d\"/* >&2\n\
             rc=$?\n\
             rm -rf \"$d\"\n\
             printf '\\n{marker}%s\\n' \"$rc\" >&2\n\
             [ \"$rc\" -eq 0 ] || exit \"$rc\"\n\
             export VIRTUAL_ENV=/tmp/.venv PATH=\"/tmp/.venv/bin:$PATH\"\n\
             exec sh -c {test} sh\n",
            marker = self.marker(),
            test = crate::package::plan::shell_quote(test_command),
        )
    }
}

impl ContainerSpec {
    /// What the container's shell runs: the test command, or with an install step the
    /// install followed by the test ([`InstallStep::script`]).
    pub fn run_script(&self) -> String {
        match &self.install {
            Some(step) => step.script(&self.command),
            None => self.command.clone(),
        }
    }

    /// Adds an install step before the test: the container's command becomes
    /// [`ContainerSpec::run_script`] (the attested `command` stays the test's).
    pub fn set_install(&mut self, step: InstallStep) {
        self.install = Some(step);
        let script = self.run_script();
        if let Some(last) = self.cmd.last_mut() {
            *last = script;
        }
    }
}

/// [`spec_for`] labelled with `instance` (the reaper's label) and nothing job-specific: the
/// spec a container launched ahead of its job is made for (the warm pool's prewarm, the
/// CLI's prelaunch); a job's own spec adds its job label to it.
pub fn spec_for_instance(
    plan: &TestPlan,
    policy: &Policy,
    instance: &str,
) -> Result<ContainerSpec, SandboxError> {
    let labels = BTreeMap::from([(super::LABEL_INSTANCE.to_string(), instance.to_string())]);
    spec_for(plan, policy, labels)
}

/// Derives the container spec for `plan` under `policy`.
///
/// The timeout is the plan's (`verify-timeout`) or the policy's default, clamped to
/// `1..=max_timeout_secs`; everything else comes from the policy, never from the skill.
pub fn spec_for(
    plan: &TestPlan,
    policy: &Policy,
    labels: BTreeMap<String, String>,
) -> Result<ContainerSpec, SandboxError> {
    let image = policy
        .images
        .get(&plan.runtime)
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            SandboxError::Spec(format!(
                "no image configured for runtime {:?}",
                plan.runtime.as_str()
            ))
        })?
        .clone();
    if plan.command.trim().is_empty() {
        return Err(SandboxError::Spec("the test command is empty".into()));
    }
    // Docker passes argv through C strings: a NUL would be cut silently.
    if plan.command.contains('\0') {
        return Err(SandboxError::Spec(
            "the test command contains a NUL byte".into(),
        ));
    }
    check_policy(policy)?;

    let max_timeout = policy.max_timeout_secs.max(1);
    let timeout_secs = plan
        .timeout_secs
        .unwrap_or(policy.timeout_secs)
        .clamp(1, max_timeout);

    let limits = policy.limits(timeout_secs);

    Ok(ContainerSpec {
        image,
        runtime: plan.runtime,
        command: plan.command.clone(),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            UNPACK_AND_RUN.into(),
            "skill-verifier".into(),
            plan.command.clone(),
        ],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            // The only writable places are /work and /tmp.
            "HOME=/tmp".into(),
            "TMPDIR=/tmp".into(),
            "LANG=C.UTF-8".into(),
            "CI=true".into(),
        ],
        user: policy.user.clone(),
        workdir: WORKDIR.into(),
        network: policy.network.clone(),
        sink_image: (policy.network_mode() != NetworkMode::None).then(|| policy.sink_image.clone()),
        allow: Vec::new(),
        allow_private: policy.allow_private_egress,
        labels,
        limits,
        oci_runtime: Some(policy.runtime_name().to_string()),
        install: None,
    })
}

/// Refuses policies that would make the sandbox meaningless or that Docker would reject.
fn check_policy(policy: &Policy) -> Result<(), SandboxError> {
    let bad = |what: &str| Err(SandboxError::Spec(format!("policy: {what}")));
    // Docker refuses memory limits under 6 MiB.
    if policy.memory_bytes < 6 * 1024 * 1024 || policy.memory_bytes > i64::MAX as u64 {
        return bad("memory_bytes must be at least 6 MiB");
    }
    if !(policy.cpus > 0.0 && policy.cpus <= 1024.0) {
        return bad("cpus must be above 0");
    }
    if policy.pids < 8 {
        return bad("pids must be at least 8");
    }
    if policy.output_bytes == 0 {
        return bad("output_bytes must be above 0");
    }
    if policy.work_bytes == 0 || policy.tmp_bytes == 0 {
        return bad("work_bytes and tmp_bytes must be above 0");
    }
    if policy.nofile < 16 || policy.fsize_bytes == 0 {
        return bad("nofile must be at least 16 and fsize_bytes above 0");
    }
    if policy.user.is_empty()
        || policy.user.starts_with("0:")
        || policy.user == "0"
        || policy.user.starts_with("root")
    {
        return bad("user must not be root");
    }
    if policy.log_driver.is_empty() {
        return bad("log_driver must be set (`none` keeps logs off the engine's disk)");
    }
    if NetworkMode::parse(&policy.network).is_none() {
        return bad("network must be one of none, observe, allowlist");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warm_containers_command_is_its_line_count_then_its_lines() {
        assert_eq!(command_lines("true"), b"1\ntrue\n");
        assert_eq!(command_lines("a\n\nb\n"), b"4\na\n\nb\n\n");
        assert_eq!(command_lines(""), b"1\n\n");
    }
    use crate::package::TestSource;

    fn plan(runtime: Runtime, timeout: Option<u64>) -> TestPlan {
        TestPlan {
            command: "python3 -m unittest -v".into(),
            runtime,
            timeout_secs: timeout,
            source: TestSource::Declared,
        }
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                super::super::LABEL_INSTANCE.to_string(),
                "inst-1".to_string(),
            ),
            (super::super::LABEL_JOB.to_string(), "job-1".to_string()),
        ])
    }

    /// The whole spec for the default policy, pinned as JSON: any change to what the
    /// sandbox does shows up here and must be deliberate.
    #[test]
    fn golden_default_policy_python() {
        let spec = spec_for(&plan(Runtime::Python, None), &Policy::default(), labels()).unwrap();
        let got = serde_json::to_value(&spec).unwrap();
        let want = serde_json::json!({
            "image": crate::sandbox::images::default_image(Runtime::Python),
            "runtime": "python",
            "command": "python3 -m unittest -v",
            "cmd": [
                "sh", "-c",
                "tar -x -f - -C /work || { echo \"skill-verifier: unpacking the skill's files failed\" >&2; exit 125; }; cd /work && exec sh -c \"$1\" sh </dev/null",
                "skill-verifier",
                "python3 -m unittest -v"
            ],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/tmp", "TMPDIR=/tmp", "LANG=C.UTF-8", "CI=true"
            ],
            "user": "65534:65534",
            "workdir": "/work",
            "network": "observe",
            "sink_image": crate::sink::image(),
            "labels": {
                "dev.skill-verifier.instance": "inst-1",
                "dev.skill-verifier.job": "job-1"
            },
            "limits": {
                "memory_bytes": 536870912u64,
                "cpus": 1.0,
                "pids": 128,
                "timeout_secs": 60,
                "output_bytes": 1048576,
                "output_kill_bytes": 16777216,
                "work_bytes": 134217728u64,
                "tmp_bytes": 125829120u64,
                "shm_bytes": 8388608,
                "nofile": 1024,
                "fsize_bytes": 268435456u64,
                "log_driver": "none",
                "log_bytes": 1048576,
                "kill_grace_secs": 2,
                "read_only_rootfs": true
            },
            "oci_runtime": "runc"
        });
        assert_eq!(got, want);
    }

    #[test]
    fn the_isolation_tier_picks_the_runtime_and_the_override_wins() {
        let gvisor = Policy {
            isolation: Isolation::Gvisor,
            ..Policy::default()
        };
        let spec = spec_for(&plan(Runtime::Shell, None), &gvisor, labels()).unwrap();
        assert_eq!(spec.oci_runtime.as_deref(), Some("runsc"));
        let expert = Policy {
            oci_runtime: Some("kata".into()),
            ..gvisor
        };
        assert_eq!(expert.runtime_name(), "kata");
        let parsed: Policy = serde_json::from_str(r#"{"isolation":"gvisor"}"#).unwrap();
        assert_eq!(parsed.isolation, Isolation::Gvisor);
        assert!(serde_json::from_str::<Policy>(r#"{"isolation":"kvm"}"#).is_err());
    }

    #[test]
    fn an_install_step_wraps_the_test_and_stays_out_of_the_pool_key() {
        let mut spec =
            spec_for(&plan(Runtime::Python, None), &Policy::default(), labels()).unwrap();
        let plain = spec.clone();
        let step = InstallStep::new(30);
        spec.set_install(step.clone());
        // The attested command is still the test's; the container runs the install first.
        assert_eq!(spec.command, "python3 -m unittest -v");
        let script = spec.cmd.last().unwrap();
        assert_eq!(*script, spec.run_script());
        assert!(script.contains(&step.folder()));
        assert!(script.contains("--no-index --no-deps"));
        assert!(script.contains(&step.marker()));
        assert!(script.ends_with("exec sh -c 'python3 -m unittest -v' sh\n"));
        assert_eq!(spec.pooled(), plain.pooled(), "pool members are generic");
        let other = InstallStep::new(30);
        assert_ne!(step.nonce, other.nonce);
        assert!(step.nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn golden_images_per_runtime() {
        let policy = Policy::default();
        for runtime in [Runtime::Shell, Runtime::Python, Runtime::Node] {
            let spec = spec_for(&plan(runtime, None), &policy, labels()).unwrap();
            assert_eq!(spec.image, crate::sandbox::images::default_image(runtime));
            assert!(spec
                .image
                .starts_with(&format!("skill-verifier/runner-{}:", runtime.as_str())));
            assert_eq!(spec.runtime, runtime);
        }
    }

    #[test]
    fn timeout_is_the_skills_request_clamped_to_the_cap() {
        let policy = Policy::default();
        let t = |asked| {
            spec_for(&plan(Runtime::Shell, asked), &policy, labels())
                .unwrap()
                .limits
                .timeout_secs
        };
        assert_eq!(t(None), 60);
        assert_eq!(t(Some(5)), 5);
        assert_eq!(t(Some(600)), 600);
        assert_eq!(t(Some(601)), 600);
        assert_eq!(t(Some(u64::MAX)), 600);
        assert_eq!(t(Some(0)), 1);
    }

    #[test]
    fn the_command_is_an_argument_never_part_of_the_script() {
        let mut p = plan(Runtime::Shell, None);
        p.command = "echo '$1' \"; rm -rf /\" `id`".into();
        let spec = spec_for(&p, &Policy::default(), labels()).unwrap();
        assert_eq!(spec.cmd[2], UNPACK_AND_RUN);
        assert_eq!(spec.cmd.last().unwrap(), &p.command);
        assert_eq!(spec.command, p.command);
    }

    #[test]
    fn policy_overrides_flow_into_the_spec() {
        let policy = Policy {
            memory_bytes: 64 * 1024 * 1024,
            cpus: 0.5,
            pids: 32,
            oci_runtime: Some("runsc".into()),
            ..Policy::default()
        };
        let spec = spec_for(&plan(Runtime::Node, Some(7)), &policy, labels()).unwrap();
        assert_eq!(spec.limits.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(spec.limits.cpus, 0.5);
        assert_eq!(spec.limits.pids, 32);
        assert_eq!(spec.limits.timeout_secs, 7);
        assert_eq!(spec.oci_runtime.as_deref(), Some("runsc"));
    }

    #[test]
    fn refuses_what_cannot_run() {
        let policy = Policy::default();
        let mut empty = plan(Runtime::Shell, None);
        empty.command = "  ".into();
        assert!(matches!(
            spec_for(&empty, &policy, labels()),
            Err(SandboxError::Spec(_))
        ));
        let mut nul = plan(Runtime::Shell, None);
        nul.command = "true\0false".into();
        assert!(matches!(
            spec_for(&nul, &policy, labels()),
            Err(SandboxError::Spec(_))
        ));
        let mut no_image = policy.clone();
        no_image.images.remove(&Runtime::Node);
        assert!(matches!(
            spec_for(&plan(Runtime::Node, None), &no_image, labels()),
            Err(SandboxError::Spec(_))
        ));
        let root = Policy {
            user: "0:0".into(),
            ..Policy::default()
        };
        assert!(matches!(
            spec_for(&plan(Runtime::Shell, None), &root, labels()),
            Err(SandboxError::Spec(_))
        ));
    }

    #[test]
    fn policy_is_serde_friendly_with_partial_config() {
        let p: Policy = serde_json::from_str(r#"{"timeout_secs": 9}"#).unwrap();
        assert_eq!(p.timeout_secs, 9);
        assert_eq!(p.memory_bytes, Policy::default().memory_bytes);
        let round: Policy = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(round, p);
    }

    #[test]
    fn images_map_reads_from_toml_by_runtime_name() {
        use figment::providers::{Format, Serialized, Toml};
        let p: Policy = figment::Figment::from(Serialized::defaults(Policy::default()))
            .merge(Toml::string(
                "images = { python = \"registry.example/py:3\" }\noci_runtime = \"runsc\"",
            ))
            .extract()
            .unwrap();
        assert_eq!(p.images[&Runtime::Python], "registry.example/py:3");
        assert_eq!(
            p.images[&Runtime::Shell],
            crate::sandbox::images::default_image(Runtime::Shell)
        );
        assert!(p.images[&Runtime::Shell].starts_with("skill-verifier/runner-shell:"));
        assert_eq!(p.oci_runtime.as_deref(), Some("runsc"));
    }
}
