//! The scan stage's cost (issue 11), two figures, each against a baseline measured in the
//! same run:
//!
//! 1. `skill-verifier scan DIR` as a whole process on a real-sized skill (SKILL.md, eight
//!    scripts, three references, ~150 KiB; shaped like the public document skills), against
//!    `skill-verifier --version` (the process floor: start, parse, exit). Target: p50 of
//!    `scan` <= 50 ms.
//! 2. The scan inside the pipeline: `Stage::scan_tree` on `examples/hello-world` (a trivial
//!    job) in-process with the rules already compiled, against `package::load` of the same
//!    tree. Target: <= 10 ms added.
//!
//! Also printed: the one-off cost of compiling the built-in rule pack (paid at daemon start,
//! and by every `scan`/`verify` process).
//!
//! Run: `cargo bench --bench scan` (no Docker needed).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use skill_verifier::package::Limits;
use skill_verifier::scan::Stage;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A skill the size of the public document skills: prose, Python scripts, references.
fn real_sized_skill(dir: &Path) {
    let w = |p: &str, s: String| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    let prose = "Use the scripts in `scripts/` to extract text and tables from PDF files, fill \
                 forms, and merge or split documents. See https://pypi.org/project/pypdf/ for \
                 the library. Run `python scripts/extract.py input.pdf` and check the output.\n";
    w(
        "SKILL.md",
        format!(
            "---\nname: doc-tools\ndescription: Extracts, fills and merges PDF documents.\nlicense: Apache-2.0\n---\n\n# Doc tools\n\n{}",
            prose.repeat(40)
        ),
    );
    let script = "import argparse\nimport json\nimport subprocess\nimport sys\nfrom pathlib import Path\n\n\
def run(cmd):\n    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout\n\n\
def main():\n    ap = argparse.ArgumentParser()\n    ap.add_argument('input')\n    args = ap.parse_args()\n    data = Path(args.input).read_bytes()\n    print(json.dumps({'bytes': len(data)}))\n\n";
    for i in 0..8 {
        w(
            &format!("scripts/tool_{i}.py"),
            format!(
                "{}if __name__ == '__main__':\n    main()\n",
                script.repeat(25)
            ),
        );
    }
    for i in 0..3 {
        w(
            &format!("references/ref_{i}.md"),
            format!("# Reference {i}\n\n{}", prose.repeat(60)),
        );
    }
}

fn time_process(args: &[&str], dir: &Path, data: &Path) -> f64 {
    let t = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    cmd.args(args);
    if args != ["--version"] {
        cmd.arg(dir).arg("--data-dir").arg(data);
    }
    let status = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.code() == Some(0),
        "{args:?} exited {status}: the benchmark skill must scan clean"
    );
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let skill = tmp.path().join("doc-tools");
    real_sized_skill(&skill);
    let data = tmp.path().join("data");
    let bytes: u64 = walk_bytes(&skill);

    // 1. Whole process, alternating so drift hits both alike.
    let runs = 40;
    let (mut scan, mut inspect) = (Vec::new(), Vec::new());
    time_process(&["scan"], &skill, &data);
    time_process(&["--version"], &skill, &data);
    for _ in 0..runs {
        scan.push(time_process(&["scan"], &skill, &data));
        inspect.push(time_process(&["--version"], &skill, &data));
    }
    let (s50, s90) = (percentile(&mut scan, 0.5), percentile(&mut scan, 0.9));
    let (i50, i90) = (percentile(&mut inspect, 0.5), percentile(&mut inspect, 0.9));
    println!("real-sized skill: {} files, {bytes} bytes", 12);
    println!("scan    (whole process): p50 {s50:.1} ms, p90 {s90:.1} ms   [target p50 <= 50 ms]");
    println!("--version (process floor): p50 {i50:.1} ms, p90 {i90:.1} ms   [baseline]");
    println!(
        "scan / --version p50 ratio: {:.2}; scan costs {:.1} ms over the process floor",
        s50 / i50,
        s50 - i50
    );

    // One-off: compiling the built-in pack.
    let mut compile = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let stage = Stage::builtin().unwrap();
        compile.push(t.elapsed().as_secs_f64() * 1e3);
        drop(stage);
    }
    println!(
        "compile built-in pack ({} rules): p50 {:.1} ms",
        Stage::builtin().unwrap().scanner.pack().rule_count(),
        percentile(&mut compile, 0.5)
    );

    // 2. Inside the pipeline: a trivial job.
    let stage = Stage::builtin().unwrap();
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-world");
    let limits = Limits::default();
    let package =
        skill_verifier::package::read(&hello, &tmp.path().join("hello.tar"), &limits).unwrap();
    let (mut scan_ms, mut load_ms, mut big_ms) = (Vec::new(), Vec::new(), Vec::new());
    let big = skill_verifier::package::read(&skill, &tmp.path().join("big.tar"), &limits).unwrap();
    let iterations = if smoke() { 1 } else { 200 };
    for i in 0..iterations {
        let t = Instant::now();
        let out = tmp.path().join(format!("read-{i}.tar"));
        let _ = skill_verifier::package::read(&hello, &out, &limits).unwrap();
        load_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        let report = stage.scan_package(&package).unwrap();
        scan_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(stage.policy.blocking(&report.findings).is_empty());
        let t = Instant::now();
        let _ = stage.scan_package(&big).unwrap();
        big_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p90) = (percentile(&mut scan_ms, 0.5), percentile(&mut scan_ms, 0.9));
    let l50 = percentile(&mut load_ms, 0.5);
    println!(
        "in-pipeline scan of examples/hello-world: p50 {p50:.2} ms, p90 {p90:.2} ms   [target <= 10 ms added]"
    );
    println!(
        "package::load of the same tree: p50 {l50:.2} ms [baseline]; scan / load ratio {:.2}",
        p50 / l50
    );
    println!(
        "in-pipeline scan of the real-sized skill: p50 {:.2} ms",
        percentile(&mut big_ms, 0.5)
    );
}

fn walk_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            walk_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// `BENCH_SMOKE=1` (CI): run every path once, at a small size, and report nothing worth
/// reading; the point is that the bench still builds and runs.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}
