//! The per-job cost of the network sink: a trivial run (`true`) through the warm-pooled
//! [`DockerRunner`] with `network = "observe"` against the same with `"none"`, alternating in
//! one process so both see the same engine and load; then bursts of 24 such runs, 4 at a
//! time (as the daemon's workers take them), observe against none.
//!
//! `cargo bench --bench network` (env `RUNS`, default 20 single rounds and 3 bursts each).
//! Prints p50s, the median per-round difference in ms and ratio. With `CI` set a missing
//! engine fails the benchmark; otherwise it is skipped loudly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skill_verifier::package::{Runtime, TestPlan, TestSource, TreeTar};
use skill_verifier::sandbox::{
    spec_for, ContainerSpec, DockerRunner, Policy, Runner, LABEL_INSTANCE, LABEL_JOB,
};
use tokio_util::sync::CancellationToken;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke() { 1 } else { 20 });
    let bursts = if smoke() { 1 } else { 3 };
    let burst_size = if smoke() { 4 } else { 24 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = match rt.block_on(DockerRunner::connect()) {
        Ok(r) => r,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI set and Docker unreachable: {e}"),
        Err(e) => {
            eprintln!("!!!!!!!! SKIPPING benchmark: Docker unreachable ({e})");
            return;
        }
    };
    // The daemon's default pool size.
    let runner = Arc::new(base.clone().with_warm_pool(4));
    let instance = format!("sv-bench-{}", uuid::Uuid::new_v4());
    let spec_for_mode = |network: &str| -> ContainerSpec {
        let policy = Policy {
            network: network.into(),
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
    let (none, observe) = (spec_for_mode("none"), spec_for_mode("observe"));
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(
        tree.path().join("SKILL.md"),
        "---\nname: bench\ndescription: bench\n---\n",
    )
    .unwrap();
    let tar_dir = tempfile::tempdir().unwrap();
    let tar =
        Arc::new(TreeTar::write_from_dir(tree.path(), &tar_dir.path().join("tree.tar")).unwrap());

    let run_one = |spec: &ContainerSpec| {
        let begun = Instant::now();
        let out = rt
            .block_on(runner.run(spec, &tar, CancellationToken::new()))
            .unwrap();
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.network.is_some(), spec.network == "observe");
        ms(begun.elapsed())
    };
    let settle_pool = || std::thread::sleep(Duration::from_millis(600));
    let burst = |spec: &ContainerSpec| {
        let begun = Instant::now();
        rt.block_on(async {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut workers = Vec::new();
            for _ in 0..4 {
                let (runner, spec, tar, next) =
                    (runner.clone(), spec.clone(), tar.clone(), next.clone());
                workers.push(tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < burst_size {
                        let out = runner
                            .run(&spec, &tar, CancellationToken::new())
                            .await
                            .unwrap();
                        assert_eq!(out.exit_code, 0);
                    }
                }));
            }
            for w in workers {
                w.await.unwrap();
            }
        });
        ms(begun.elapsed())
    };

    // Warm up both pools.
    rt.block_on(async {
        runner.prewarm(&none);
        runner.prewarm(&observe);
    });
    for _ in 0..2 {
        run_one(&none);
        run_one(&observe);
    }
    settle_pool();
    let (mut t_none, mut t_obs, mut diff, mut ratio) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let (a, b) = if i % 2 == 0 {
            let a = run_one(&none);
            settle_pool();
            (a, run_one(&observe))
        } else {
            let b = run_one(&observe);
            settle_pool();
            (run_one(&none), b)
        };
        settle_pool();
        t_none.push(a);
        t_obs.push(b);
        diff.push(b - a);
        ratio.push(b / a);
    }
    let (mut b_none, mut b_obs, mut b_ratio) = (vec![], vec![], vec![]);
    for i in 0..bursts {
        let (a, b) = if i % 2 == 0 {
            let a = burst(&none);
            settle_pool();
            (a, burst(&observe))
        } else {
            let b = burst(&observe);
            settle_pool();
            (burst(&none), b)
        };
        settle_pool();
        b_none.push(a);
        b_obs.push(b);
        b_ratio.push(b / a);
    }
    println!("single runs: {runs} rounds, alternating; warm pool of 4 per shape");
    println!("  none:    p50 {:7.1} ms", median(&mut t_none));
    println!("  observe: p50 {:7.1} ms", median(&mut t_obs));
    println!(
        "  observe - none: median {:+.1} ms per job, median ratio {:.2}",
        median(&mut diff),
        median(&mut ratio)
    );
    println!("bursts of {burst_size}, 4 at a time: {bursts} rounds each, alternating");
    println!("  none:    median {:7.0} ms", median(&mut b_none));
    println!("  observe: median {:7.0} ms", median(&mut b_obs));
    println!("  observe / none: median ratio {:.2}", median(&mut b_ratio));
    rt.block_on(runner.settle());
    let left = rt.block_on(base.reap(&instance)).unwrap();
    assert_eq!(left, 0, "the benchmark left containers behind");
}
