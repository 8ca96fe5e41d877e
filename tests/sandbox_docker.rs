//! The runner against the real engine: exit codes, output, the copied tree, isolation,
//! cancellation, the reaper, the drop guard, concurrency.

mod sandbox_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::{Runner, SandboxError, LABEL_INSTANCE};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn exit_codes_0_1_137_are_outcomes() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let ok = sh(&r, &inst, "true", Some(20)).await;
    assert_eq!(ok.exit_code, 0);
    assert!(!ok.timed_out && !ok.oom_killed && !ok.cancelled && !ok.output_truncated);
    let failed = sh(&r, &inst, "echo nope >&2; exit 1", Some(20)).await;
    assert_eq!(failed.exit_code, 1);
    assert_eq!(text(&failed.stderr), "nope\n");
    let killed = sh(&r, &inst, "kill -9 $$", Some(20)).await;
    assert_eq!(killed.exit_code, 137);
    assert!(!killed.timed_out);
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn the_tree_is_copied_in_with_modes_and_output_is_hashed() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[
        ("scripts/run.sh", "#!/bin/sh\necho ran \"$(pwd)\"\n", true),
        ("data/deep/er/file name.txt", "hello\n", false),
    ]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "./scripts/run.sh && cat 'data/deep/er/file name.txt' && test ! -x 'data/deep/er/file name.txt' && cat SKILL.md | head -2",
        Some(20),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran /work\nhello\n---\nname: t\n");
    assert_eq!(
        out.stdout_sha256,
        skill_verifier::digest::Sha256Digest::of(&out.stdout)
    );
    assert_eq!(
        out.image,
        skill_verifier::sandbox::images::default_image(Runtime::Shell)
    );
    assert_eq!(out.image_digest, r.image_digest(&out.image).await.unwrap());
    assert!(out.image_digest.starts_with("sha256:"));
    assert_eq!(out.limits.timeout_secs, 20);
    assert_no_leftovers(&r, &inst).await;
}

/// Paths past the 100 bytes of a plain tar header travel as GNU long names; every runner
/// image's `tar` must unpack them.
#[tokio::test]
async fn long_paths_survive_the_copy_in_every_image() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let long = format!("{}/{}/f.txt", "d".repeat(120), "e".repeat(150));
    let t = tree(&[(long.as_str(), "deep\n", false)]);
    for runtime in [Runtime::Shell, Runtime::Python, Runtime::Node] {
        let out = run_in(
            &r,
            &inst,
            runtime,
            &format!("cat '{long}'"),
            Some(30),
            &policy(),
            t.path(),
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, 0, "{runtime:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "deep\n");
    }
    assert_no_leftovers(&r, &inst).await;
}

/// A tree far larger than any buffer on the way streams through intact.
#[tokio::test]
async fn a_large_tree_streams_in_intact() {
    use sha2::Digest;
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[]);
    let data: Vec<u8> = (0..40u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(t.path().join("blob.bin"), &data).unwrap();
    let want = hex::encode(sha2::Sha256::digest(&data));
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "sha256sum blob.bin",
        Some(60),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0, "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{want}  blob.bin\n"));
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn network_none_is_only_loopback() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let p = skill_verifier::sandbox::Policy {
        network: "none".into(),
        ..policy()
    };
    let t = tree(&[]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "ls /sys/class/net",
        Some(20),
        &p,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(text(&out.stdout), "lo\n");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn observe_gives_only_the_sinks_trap_and_the_test_cannot_change_it() {
    if isolation() == skill_verifier::sandbox::Isolation::Gvisor {
        return;
    }
    let Some(r) = runner().await else { return };
    let inst = instance();
    let p = skill_verifier::sandbox::Policy {
        network: "observe".into(),
        ..policy()
    };
    let t = tree(&[]);
    // The veth pair has no peer outside the namespace; the test has no capability to add
    // a route or touch the nftables trap.
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "ls /sys/class/net | sort | tr '\\n' ' '; ip route add 1.2.3.4 dev lo 2>/dev/null && echo ROUTED; ip link set sv0 down 2>/dev/null && echo DOWNED; true",
        Some(20),
        &p,
        t.path(),
    )
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(stdout.starts_with("lo sv0 sv1 "), "{stdout}");
    assert!(
        !stdout.contains("ROUTED") && !stdout.contains("DOWNED"),
        "{stdout}"
    );
    assert!(out.network.is_some());
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn runs_unprivileged_without_capabilities() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let out = sh(
        &r,
        &inst,
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        Some(20),
    )
    .await;
    assert_eq!(out.exit_code, 0);
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "65534", "uid must not be 0: {s}");
    assert_eq!(lines[1], "65534");
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing in {s}"))
    };
    assert_eq!(field("CapEff"), "0000000000000000");
    assert_eq!(field("CapPrm"), "0000000000000000");
    assert_eq!(field("CapBnd"), "0000000000000000");
    // Under gVisor the engine's seccomp profile filters the Sentry (runsc's user-space
    // kernel) on the host; the test's own /proc is gVisor's and has no seccomp line to show.
    // The same goes for NoNewPrivs (set on the Sentry by the engine, not shown inside).
    if isolation() == skill_verifier::sandbox::Isolation::Runc {
        assert_eq!(field("NoNewPrivs"), "1");
        assert_eq!(
            field("Seccomp"),
            "2",
            "the default seccomp profile must apply"
        );
    }
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn root_filesystem_is_read_only() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let out = sh(
        &r,
        &inst,
        "for p in /etc/x /usr/x /x /bin/x; do if touch $p 2>/dev/null; then echo WROTE $p; else echo refused $p; fi; done; \
         grep ' / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
         touch /work/ok /tmp/ok && echo writable",
        Some(20),
    )
    .await;
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "refused /etc/x\nrefused /usr/x\nrefused /x\nrefused /bin/x\nro\nwritable\n"
    );
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn cancellation_kills_the_container_quickly() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[]);
    let spec = spec(
        &inst,
        Runtime::Shell,
        "echo started; sleep 300",
        Some(600),
        &policy(),
    );
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trigger.cancel();
    });
    let begun = Instant::now();
    let (_tar_dir, tar) = tar_of(t.path());
    let out = r.run(&spec, &tar, cancel).await.unwrap();
    let took = begun.elapsed();
    assert!(out.cancelled);
    assert!(!out.timed_out);
    assert_eq!(out.exit_code, 137);
    assert_eq!(text(&out.stdout), "started\n");
    assert!(took < Duration::from_secs(8), "cancellation took {took:?}");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn the_reaper_removes_what_an_earlier_run_left() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    // Leave two containers behind the way a crashed daemon would: created by hand with the
    // label, one running, one never started.
    let docker = bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for start in [true, false] {
        let body = bollard::models::ContainerCreateBody {
            image: Some(skill_verifier::sandbox::images::default_image(
                Runtime::Shell,
            )),
            cmd: Some(vec!["sleep".into(), "300".into()]),
            labels: Some([(LABEL_INSTANCE.to_string(), inst.clone())].into()),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .unwrap();
        if start {
            docker.start_container(&c.id, None).await.unwrap();
        }
        ids.push(c.id);
    }
    // Another instance's container is not touched.
    let other = instance();
    assert_eq!(r.reap(&other).await.unwrap(), 0);
    assert_eq!(r.reap(&inst).await.unwrap(), 2);
    for id in ids {
        assert!(docker
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>
            )
            .await
            .is_err());
    }
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_dropped_run_is_removed_by_its_guard() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[]);
    let spec = spec(&inst, Runtime::Shell, "sleep 300", Some(600), &policy());
    let r2 = r.clone();
    let task = tokio::spawn(async move {
        let (_tar_dir, tar) = tar_of(t.path());
        let _ = r2.run(&spec, &tar, CancellationToken::new()).await;
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    task.abort();
    let _ = task.await;
    // The guard's removal runs on a spawned task: give it a moment.
    let begun = Instant::now();
    loop {
        let docker = bollard::Docker::connect_with_defaults().unwrap();
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={inst}")],
        )]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        if docker.list_containers(Some(opts)).await.unwrap().is_empty() {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(15),
            "the container stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_missing_image_is_a_specific_error() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let mut p = policy();
    p.images
        .insert(Runtime::Shell, "skill-verifier/does-not-exist:0".into());
    let t = tree(&[]);
    let err = run_in(&r, &inst, Runtime::Shell, "true", None, &p, t.path())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::ImageMissing { image } if image == "skill-verifier/does-not-exist:0"),
        "{err}"
    );
    assert!(matches!(
        r.image_digest("skill-verifier/does-not-exist:0").await,
        Err(SandboxError::ImageMissing { .. })
    ));
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn one_shared_runner_serves_concurrent_runs() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let shared: Arc<dyn Runner> = Arc::new(r.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4 {
        let shared = shared.clone();
        let spec = spec(
            &inst,
            Runtime::Shell,
            &format!("echo run-{i}; exit {i}"),
            Some(30),
            &policy(),
        );
        tasks.spawn(async move {
            let t = tree(&[]);
            let (_tar_dir, tar) = tar_of(t.path());
            (
                i,
                shared
                    .run(&spec, &tar, CancellationToken::new())
                    .await
                    .unwrap(),
            )
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, out) = joined.unwrap();
        assert_eq!(out.exit_code, i64::from(i));
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
    }
    assert_no_leftovers(&r, &inst).await;
}
