//! The lifecycle of a trivial run (`true`) through [`DockerRunner`], each path against
//! `docker run --rm --network none IMAGE sh -c true` of the same image, alternating in the
//! same process so all see the same engine and machine load:
//!
//! - `runc cold`: no warm pool (create, attach, start, run, remove before returning);
//! - `runc warm`: the warm pool (a started container waits for the command; removal in the
//!   background, as in the daemon);
//! - `gvisor cold`: as `runc cold` under runsc (skipped, loudly, if the engine has no runsc):
//!   the per-run cost of the gVisor tier against runc.
//!
//! `cargo bench --bench runner` (env `RUNS`, default 20). Prints p50 of each and the median
//! of the per-round ratios against the docker CLI (and gvisor/runc).
//! With `CI` set a missing engine fails the benchmark; otherwise it is skipped loudly.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skill_verifier::package::{Runtime, TestPlan, TestSource, TreeTar};
use skill_verifier::sandbox::{
    spec_for, ContainerSpec, DockerRunner, Isolation, Policy, Runner, LABEL_INSTANCE, LABEL_JOB,
};
use tokio_util::sync::CancellationToken;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke() { 1 } else { 20 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cold = match rt.block_on(DockerRunner::connect()) {
        Ok(r) => r,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI set and Docker unreachable: {e}"),
        Err(e) => {
            eprintln!("!!!!!!!! SKIPPING benchmark: Docker unreachable ({e})");
            return;
        }
    };
    let warm = cold.clone().with_warm_pool(2);
    let gvisor_ok = rt.block_on(cold.require_runtime("runsc")).is_ok();
    if !gvisor_ok {
        eprintln!("!!!!!!!! gvisor path SKIPPED: the engine has no runsc (run scripts/setup)");
    }
    let instance = format!("sv-bench-{}", uuid::Uuid::new_v4());
    let spec_under = |isolation: Isolation| -> ContainerSpec {
        // Network none: the sandbox's own cost (benches/network.rs measures the sink's).
        let policy = Policy {
            isolation,
            network: "none".into(),
            ..Policy::default()
        };
        let plan = TestPlan {
            command: "true".into(),
            runtime: Runtime::Shell,
            timeout_secs: Some(30),
            source: TestSource::Declared,
        };
        let labels = BTreeMap::from([
            (LABEL_INSTANCE.to_string(), instance.clone()),
            (LABEL_JOB.to_string(), "bench".to_string()),
        ]);
        spec_for(&plan, &policy, labels).unwrap()
    };
    let (runc, gvisor) = (spec_under(Isolation::Runc), spec_under(Isolation::Gvisor));
    let image = runc.image.clone();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(
        tree.path().join("SKILL.md"),
        "---\nname: bench\ndescription: bench\n---\n",
    )
    .unwrap();
    let tar_dir = tempfile::tempdir().unwrap();
    let tar = TreeTar::write_from_dir(tree.path(), &tar_dir.path().join("tree.tar")).unwrap();

    let run = |runner: &DockerRunner, spec: &ContainerSpec| {
        let begun = Instant::now();
        let out = rt
            .block_on(runner.run(spec, &tar, CancellationToken::new()))
            .unwrap();
        assert_eq!(out.exit_code, 0);
        ms(begun.elapsed())
    };
    let cli = || {
        let begun = Instant::now();
        let status = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                &image,
                "sh",
                "-c",
                "true",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running the docker CLI");
        assert!(status.success());
        ms(begun.elapsed())
    };
    let settle_pool = || {
        // Give the refill time to land, as between real jobs.
        std::thread::sleep(Duration::from_millis(400));
    };

    // Warm up every path (image metadata, page cache, the CLI binary, the pool).
    for _ in 0..2 {
        run(&cold, &runc);
        run(&warm, &runc);
        if gvisor_ok {
            run(&cold, &gvisor);
        }
        cli();
    }
    settle_pool();
    let (mut t_cli, mut t_cold, mut t_warm, mut t_gv) = (vec![], vec![], vec![], vec![]);
    let (mut r_cold, mut r_warm, mut r_gv) = (vec![], vec![], vec![]);
    for i in 0..runs {
        // Rotate the order so no path always follows the same one.
        let mut got = [0.0f64; 4];
        for k in 0..4 {
            match (i + k) % 4 {
                0 => got[0] = cli(),
                1 => got[1] = run(&cold, &runc),
                2 => {
                    got[2] = run(&warm, &runc);
                    settle_pool();
                }
                _ if gvisor_ok => got[3] = run(&cold, &gvisor),
                _ => {}
            }
        }
        t_cli.push(got[0]);
        t_cold.push(got[1]);
        t_warm.push(got[2]);
        r_cold.push(got[1] / got[0]);
        r_warm.push(got[2] / got[0]);
        if gvisor_ok {
            t_gv.push(got[3]);
            r_gv.push(got[3] / got[1]);
        }
    }
    println!("runs: {runs} rounds, rotating order; image {image}");
    println!(
        "docker run --rm sh -c true: p50 {:7.1} ms",
        median(&mut t_cli)
    );
    println!(
        "runner, runc, cold:         p50 {:7.1} ms  median ratio vs docker run {:.2}",
        median(&mut t_cold),
        median(&mut r_cold)
    );
    println!(
        "runner, runc, warm pool:    p50 {:7.1} ms  median ratio vs docker run {:.2}",
        median(&mut t_warm),
        median(&mut r_warm)
    );
    if gvisor_ok {
        println!(
            "runner, gvisor, cold:       p50 {:7.1} ms  median ratio vs runc cold {:.2}",
            median(&mut t_gv),
            median(&mut r_gv)
        );
    }
    rt.block_on(warm.settle());
    let left = rt.block_on(cold.reap(&instance)).unwrap();
    assert_eq!(left, 0, "the benchmark left containers behind");
}

/// `BENCH_SMOKE=1` (CI): run every path once, at a small size, and report nothing worth
/// reading; the point is that the bench still builds and runs.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}
