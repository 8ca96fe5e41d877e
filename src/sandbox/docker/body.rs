//! The container create body: the [`ContainerSpec`] turned into the engine's create request
//! field by field. Nothing is added here but the size of the skill's tree, which the working
//! copy's tmpfs must hold on top of `work_bytes`.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};

use crate::sandbox::{ContainerSpec, RunLimits, SandboxError};

/// Turns the spec into the engine's create request. `tree_bytes` is added to the working
/// copy's tmpfs so `work_bytes` stays what the test itself may write. `sink` is the network
/// sink's container ID when the mode has one: the test joins its network namespace.
pub(super) fn create_body(
    spec: &ContainerSpec,
    tree_bytes: u64,
    sink: Option<&str>,
) -> Result<ContainerCreateBody, SandboxError> {
    let l = &spec.limits;
    let (uid, gid) = spec
        .user
        .split_once(':')
        .unwrap_or((&spec.user, &spec.user));
    let to_i64 = |what: &str, v: u64| {
        i64::try_from(v).map_err(|_| SandboxError::Spec(format!("{what} is too large")))
    };
    let work_size = l.work_bytes.saturating_add(tree_bytes);
    let tmpfs = HashMap::from([
        (
            spec.workdir.clone(),
            // Owned by the test user so its tar can unpack there; exec so scripts run.
            format!("size={work_size},uid={uid},gid={gid},mode=0700,exec,nosuid,nodev"),
        ),
        (
            "/tmp".to_string(),
            format!("size={},mode=1777,exec,nosuid,nodev", l.tmp_bytes),
        ),
    ]);
    let ulimit = |name: &str, v: i64| ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(v),
        hard: Some(v),
    };
    let host_config = HostConfig {
        memory: Some(to_i64("memory_bytes", l.memory_bytes)?),
        // Equal to memory: no swap, so the memory limit is the real limit.
        memory_swap: Some(to_i64("memory_bytes", l.memory_bytes)?),
        nano_cpus: Some((l.cpus * 1e9).round() as i64),
        pids_limit: Some(l.pids),
        ulimits: Some(vec![
            ulimit("nofile", to_i64("nofile", l.nofile)?),
            ulimit("fsize", to_i64("fsize_bytes", l.fsize_bytes)?),
            // No core dumps: they would land in the working copy and eat its space.
            ulimit("core", 0),
        ]),
        network_mode: Some(match sink {
            Some(id) => format!("container:{id}"),
            None => "none".to_string(),
        }),
        cap_drop: Some(vec!["ALL".to_string()]),
        // The default seccomp profile applies because none is named here.
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(l.read_only_rootfs),
        // tini as PID 1: reaps zombies and forwards SIGTERM to the test.
        init: Some(true),
        tmpfs: Some(tmpfs),
        shm_size: Some(to_i64("shm_bytes", l.shm_bytes)?),
        ipc_mode: Some("private".to_string()),
        log_config: Some(log_config(l)),
        runtime: spec.oci_runtime.clone(),
        auto_remove: Some(false),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The argv goes in as the entrypoint, so an image's own ENTRYPOINT and CMD never
        // wrap or replace it.
        entrypoint: Some(spec.cmd.clone()),
        cmd: None,
        env: Some(spec.env.clone()),
        user: Some(spec.user.clone()),
        working_dir: Some(spec.workdir.clone()),
        // A container that joins another's network namespace takes its hostname too (the
        // engine refuses both).
        hostname: sink.is_none().then(|| "sandbox".to_string()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Closing our side of stdin closes the container's: tar sees EOF.
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The engine-side log settings: `none` needs no options; file drivers get one capped file.
fn log_config(l: &RunLimits) -> HostConfigLogConfig {
    let config = match l.log_driver.as_str() {
        "json-file" | "local" => Some(HashMap::from([
            ("max-size".to_string(), l.log_bytes.to_string()),
            ("max-file".to_string(), "1".to_string()),
        ])),
        _ => None,
    };
    HostConfigLogConfig {
        typ: Some(l.log_driver.clone()),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Runtime, TestPlan, TestSource};
    use crate::sandbox::{spec_for, Policy};

    #[test]
    fn the_create_request_carries_every_limit() {
        let plan = TestPlan {
            command: "true".into(),
            runtime: Runtime::Shell,
            timeout_secs: None,
            source: TestSource::Declared,
        };
        let policy = Policy {
            network: "none".into(),
            ..Policy::default()
        };
        let spec = spec_for(&plan, &policy, Default::default()).unwrap();
        let body = create_body(&spec, 8192, None).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(128));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.init, Some(true));
        let tmpfs = hc.tmpfs.unwrap();
        assert_eq!(
            tmpfs["/work"],
            format!(
                "size={},uid=65534,gid=65534,mode=0700,exec,nosuid,nodev",
                128 * 1024 * 1024 + 8192
            )
        );
        assert!(tmpfs["/tmp"].starts_with("size=125829120,"));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.entrypoint, Some(spec.cmd.clone()));
        assert_eq!(body.hostname.as_deref(), Some("sandbox"));
    }

    #[test]
    fn with_a_sink_the_test_joins_its_network_namespace() {
        let plan = TestPlan {
            command: "true".into(),
            runtime: Runtime::Shell,
            timeout_secs: None,
            source: TestSource::Declared,
        };
        let spec = spec_for(&plan, &Policy::default(), Default::default()).unwrap();
        assert_eq!(spec.network, "observe");
        let body = create_body(&spec, 0, Some("abc")).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert!(hc.cap_add.is_none());
        assert_eq!(body.hostname, None);
    }
}
