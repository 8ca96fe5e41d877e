//! The lifecycle of a trivial run (`true`) through [`DockerRunner`] against
//! `docker run --rm --network none` of the same image, alternating in the same process, so
//! both see the same engine and machine load.
//!
//! `cargo bench --bench runner` (env `RUNS`, default 30). Prints p50/p90 of each and the
//! median of the per-pair ratios (runner / docker CLI). Targets: ratio <= 1.0, p50 <= 250 ms.
//! With `CI` set a missing engine fails the benchmark; otherwise it is skipped loudly.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skill_verifier::package::{Runtime, TestPlan, TestSource};
use skill_verifier::sandbox::{spec_for, DockerRunner, Policy, Runner, LABEL_INSTANCE, LABEL_JOB};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runner = match rt.block_on(DockerRunner::connect()) {
        Ok(r) => r,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI set and Docker unreachable: {e}"),
        Err(e) => {
            eprintln!("!!!!!!!! SKIPPING benchmark: Docker unreachable ({e})");
            return;
        }
    };
    let policy = Policy::default();
    let image = policy.images[&Runtime::Shell].clone();
    let plan = TestPlan {
        command: "true".into(),
        runtime: Runtime::Shell,
        timeout_secs: Some(30),
        source: TestSource::Declared,
    };
    let instance = format!("sv-bench-{}", uuid::Uuid::new_v4());
    let labels = BTreeMap::from([
        (LABEL_INSTANCE.to_string(), instance.clone()),
        (LABEL_JOB.to_string(), "bench".to_string()),
    ]);
    let spec = spec_for(&plan, &policy, labels).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(
        tree.path().join("SKILL.md"),
        "---\nname: bench\ndescription: bench\n---\n",
    )
    .unwrap();

    let run_runner = || {
        let begun = Instant::now();
        let out = rt
            .block_on(runner.run(&spec, tree.path(), CancellationToken::new()))
            .unwrap();
        assert_eq!(out.exit_code, 0);
        begun.elapsed()
    };
    let run_cli = || {
        let begun = Instant::now();
        let status = Command::new("docker")
            .args(["run", "--rm", "--network", "none", &image, "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running the docker CLI");
        assert!(status.success());
        begun.elapsed()
    };

    // Warm up both paths (image metadata, page cache, the CLI binary).
    for _ in 0..3 {
        run_runner();
        run_cli();
    }
    let mut ours = Vec::with_capacity(runs);
    let mut cli = Vec::with_capacity(runs);
    let mut ratios = Vec::with_capacity(runs);
    for i in 0..runs {
        // Alternate which goes first, so neither always follows the other.
        let (a, b) = if i % 2 == 0 {
            let a = run_runner();
            (a, run_cli())
        } else {
            let b = run_cli();
            (run_runner(), b)
        };
        ours.push(a);
        cli.push(b);
        ratios.push(a.as_secs_f64() / b.as_secs_f64());
    }
    ours.sort();
    cli.sort();
    ratios.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let median_ratio = ratios[ratios.len() / 2];
    println!("runs: {runs} pairs, alternating; image {image}");
    println!(
        "runner:     p50 {:7.1} ms  p90 {:7.1} ms  min {:7.1} ms",
        ms(percentile(&ours, 0.5)),
        ms(percentile(&ours, 0.9)),
        ms(ours[0])
    );
    println!(
        "docker run: p50 {:7.1} ms  p90 {:7.1} ms  min {:7.1} ms",
        ms(percentile(&cli, 0.5)),
        ms(percentile(&cli, 0.9)),
        ms(cli[0])
    );
    println!("median ratio runner/docker-run: {median_ratio:.3} (target <= 1.0)");
    println!(
        "runner p50 {} the 250 ms target",
        if percentile(&ours, 0.5) <= Duration::from_millis(250) {
            "meets"
        } else {
            "MISSES"
        }
    );
    let left = rt.block_on(runner.reap(&instance)).unwrap();
    assert_eq!(left, 0, "the benchmark left containers behind");
}
