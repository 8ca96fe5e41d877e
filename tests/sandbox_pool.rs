//! The warm pool against the real engine: containers created ahead of demand run the right
//! command over the right tree, keep every limit, and are all gone after `settle`.

mod sandbox_support;

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::Runner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_containers_run_each_jobs_command_and_are_removed_on_settle() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(2);
    let instance = instance();
    let t = tree(&[("data.txt", "from the tree\n", false)]);
    let policy = policy();
    // Quotes, newlines (an empty line and a trailing one), leading blanks, a tab, a
    // backslash and shell metacharacters survive the trip through stdin.
    let tricky = "printf '%s|' \"it's\" 'a \"test\"'; echo\n\n  cat data.txt\t\necho 'back\\slash'; id -u; exit 7\n";
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let o = run_in(
            &runner,
            &instance,
            Runtime::Shell,
            tricky,
            Some(30),
            &policy,
            t.path(),
        )
        .await
        .unwrap();
        outcomes.push(o);
        // Let the refill land, so the next run takes a warm container.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    for o in &outcomes {
        assert_eq!(o.exit_code, 7);
        assert_eq!(
            text(&o.stdout),
            "it's|a \"test\"|\nfrom the tree\nback\\slash\n65534\n"
        );
        assert!(!o.timed_out && !o.oom_killed);
    }
    // The same limits apply in a warm container: no network, read-only root.
    let o = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "ls /sys/class/net; touch /etc/x 2>/dev/null && echo writable || echo read-only",
        Some(30),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    // No route out: loopback only with `none`; with a sink, its trap's veth pair.
    let links = if policy.network == "none" {
        "lo\n"
    } else {
        "lo\nsv0\nsv1\n"
    };
    assert_eq!(text(&o.stdout), format!("{links}read-only\n"));
    // The pool holds created containers until settle removes them.
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_still_apply_per_job_in_warm_containers() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(1);
    let instance = instance();
    let t = tree(&[]);
    let policy = policy();
    let quick = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "true",
        Some(30),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(quick.exit_code, 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Same pool key (the timeout is not part of it), a different deadline.
    let slow = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "sleep 30",
        Some(1),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!(slow.limits.timeout_secs, 1);
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_containers_deadline_starts_when_its_command_arrives() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(1);
    let instance = instance();
    let t = tree(&[]);
    let policy = policy();
    // The first run fills the pool behind it.
    let first = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "true",
        Some(30),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(first.exit_code, 0);
    // The warm container now sits idle, started, for longer than the next job's timeout
    // (the margins leave room for a loaded machine: the job itself needs 2 s of its 5).
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let begun = std::time::Instant::now();
    let out = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "sleep 2; echo done",
        Some(5),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert!(!out.timed_out, "idle time was charged to the job: {out:?}");
    assert_eq!(text(&out.stdout), "done\n");
    assert!(out.duration_ms >= 2000 && out.duration_ms < 5000, "{out:?}");
    assert!(begun.elapsed() < bound(5, &policy));
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_holds_started_containers_and_settle_removes_them() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(2);
    let instance = instance();
    let t = tree(&[]);
    let policy = policy();
    run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "true",
        Some(30),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    // Let the refill finish: two warm entries, started and waiting for a command (each a
    // test container and, with a network mode that has one, its sink). Polled: under load
    // the refill takes longer; the pool must then hold exactly that many, no more.
    let want = if policy.network == "none" { 2 } else { 4 };
    let running = || {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=dev.skill-verifier.instance={instance}"),
                "--format",
                "{{.State}}",
            ])
            .output()
            .unwrap();
        let states = String::from_utf8_lossy(&out.stdout).into_owned();
        (states.lines().filter(|l| *l == "running").count(), states)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running().0 < want && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (count, states) = running();
    assert_eq!(count, want, "{states}");
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarming_starts_containers_before_any_job_and_a_job_takes_one() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(1);
    let instance = instance();
    let policy = policy();
    runner.prewarm(&spec(&instance, Runtime::Shell, "true", None, &policy));
    let begun = std::time::Instant::now();
    let running = || labelled_containers(&instance, false);
    while running() < 1 {
        assert!(begun.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let t = tree(&[]);
    let out = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "echo warm",
        Some(10),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "warm\n");
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

/// Containers (any state) carrying this instance label.
fn containers_of(instance: &str) -> usize {
    labelled_containers(instance, true)
}

/// Containers carrying this instance label: running ones, or with `all` any state.
fn labelled_containers(instance: &str, all: bool) -> usize {
    let out = std::process::Command::new("docker")
        .args(["ps", if all { "-aq" } else { "-q" }, "--filter"])
        .arg(format!("label=dev.skill-verifier.instance={instance}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prelaunched_container_serves_the_next_run_of_its_shape_and_nothing_else_is_made() {
    let Some(runner) = runner().await else { return };
    let instance = instance();
    let policy = policy();
    // As `verify` does: launched before the job is ready (the command is not yet known).
    runner.prelaunch(&spec(&instance, Runtime::Shell, "true", None, &policy));
    let t = tree(&[("data.txt", "prelaunched\n", false)]);
    let begun = std::time::Instant::now();
    // Quotes and newlines reach the prelaunched container as they do a pooled one.
    let out = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "cat data.txt\nprintf '%s\\n' \"it's\"",
        Some(10),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "prelaunched\nit's\n");
    assert_eq!(out.exit_code, 0);
    assert!(begun.elapsed() < bound(10, &policy));
    // The run took the prelaunched container and removed it: nothing is left even before
    // `settle` (a second, unused container would still be there). With a sink mode the
    // sink goes with it.
    assert_eq!(containers_of(&instance), 0);
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prelaunched_containers_deadline_starts_when_it_runs_and_holds() {
    let Some(runner) = runner().await else { return };
    let instance = instance();
    let policy = policy();
    runner.prelaunch(&spec(&instance, Runtime::Shell, "true", None, &policy));
    let begun = std::time::Instant::now();
    let out = sh(&runner, &instance, "sleep 60", Some(2)).await;
    assert!(out.timed_out, "{out:?}");
    assert!(begun.elapsed() < bound(2, &policy), "{:?}", begun.elapsed());
    // The timeout is the test's own: at least the 2 s it was given.
    assert!(out.duration_ms >= 2000, "{}", out.duration_ms);
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_prelaunched_container_is_removed_by_settle() {
    let Some(runner) = runner().await else { return };
    let instance = instance();
    let policy = policy();
    runner.prelaunch(&spec(&instance, Runtime::Shell, "true", None, &policy));
    // A run of another shape (a different memory limit) launches its own container.
    let mut other = policy.clone();
    other.memory_bytes /= 2;
    let t = tree(&[]);
    let out = run_in(
        &runner,
        &instance,
        Runtime::Shell,
        "echo own",
        Some(10),
        &other,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "own\n");
    // `settle` waits for the prelaunch (whatever stage it is in) and removes it.
    runner.settle().await;
    assert_eq!(containers_of(&instance), 0);
    assert_no_leftovers(&runner, &instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarmed_shape_keeps_one_until_a_job_uses_it_then_the_full_pool() {
    let Some(runner) = runner().await else { return };
    let runner = runner.with_warm_pool(3);
    let instance = instance();
    let policy = policy();
    // With a sink mode each warm entry is two containers (the test's and its sink).
    let per = if policy.network == "none" { 1 } else { 2 };
    let settled = |want: usize| {
        let instance = instance.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while containers_of(&instance) < want && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            // No more than that arrives.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            containers_of(&instance)
        }
    };
    runner.prewarm(&spec(&instance, Runtime::Shell, "true", None, &policy));
    assert_eq!(settled(per).await, per, "a prewarmed shape keeps one");
    let out = sh(&runner, &instance, "echo used", Some(10)).await;
    assert_eq!(text(&out.stdout), "used\n");
    assert_eq!(
        settled(3 * per).await,
        3 * per,
        "a used shape keeps the full pool"
    );
    runner.settle().await;
    assert_no_leftovers(&runner, &instance).await;
}
