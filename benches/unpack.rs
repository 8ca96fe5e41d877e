//! Benchmark: `skill-verifier inspect` (the whole process) on a ~58 MB, 1,401-file tar.gz,
//! against `tar -xzf` + `sha256sum` of the same archive on the same file system, on an ext4
//! directory and on a tmpfs, in the same run; `package::read` writing the normalised tar
//! (what a job does) alongside; then the peak RSS of `inspect` on a ~100 MB archive.
//!
//! Run: `cargo bench --bench unpack` (a plain binary, `harness = false`). Runs of ours and of
//! the baseline are interleaved so background load hits both alike; medians are reported.
//! `BENCH_RUNS` sets the number of runs (default 7); `BENCH_DISK_DIR` / `BENCH_TMPFS_DIR`
//! choose the directories (default: the system temp dir, which must be on ext4 for the ext4
//! figure, and /dev/shm).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use skill_verifier::package::{self, Limits};

/// xorshift64*: deterministic content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "skill",
    "verify",
    "sandbox",
    "archive",
    "digest",
    "the",
    "a",
    "of",
    "and",
    "test",
    "python",
    "node",
    "shell",
    "container",
    "limit",
    "manifest",
    "README",
    "data",
    "x",
    "42",
];

/// Writes a skill tree: `text_files` text files and `bin_files` binary files, about
/// `total` bytes in all, `text_pct` percent of them text. Returns the bytes written.
fn make_tree(
    dir: &Path,
    text_files: usize,
    bin_files: usize,
    total: u64,
    text_pct: u64,
    seed: u64,
) -> u64 {
    let mut rng = Rng(seed);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("SKILL.md"),
        "---\nname: bench\ndescription: Benchmark skill.\n---\n# bench\n",
    )
    .unwrap();
    let mut written = 0u64;
    let text_each = (total * text_pct / 100) / text_files.max(1) as u64;
    let bin_each = (total * (100 - text_pct) / 100) / bin_files.max(1) as u64;
    for i in 0..text_files {
        let sub = dir.join(format!("docs/part{:02}", i % 40));
        std::fs::create_dir_all(&sub).unwrap();
        let mut s = String::new();
        while (s.len() as u64) < text_each {
            s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
            s.push(if rng.next() % 12 == 0 { '\n' } else { ' ' });
        }
        written += s.len() as u64;
        std::fs::write(sub.join(format!("doc{i:04}.md")), s).unwrap();
    }
    for i in 0..bin_files {
        let sub = dir.join(format!("assets/set{:02}", i % 20));
        std::fs::create_dir_all(&sub).unwrap();
        let mut buf = vec![0u8; bin_each as usize];
        rng.fill(&mut buf);
        written += buf.len() as u64;
        std::fs::write(sub.join(format!("blob{i:04}.bin")), buf).unwrap();
    }
    written
}

fn tar_gz(tree_parent: &Path, name: &str, out: &Path) {
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(tree_parent)
        .arg(name)
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar -czf failed");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User + system CPU time of this process (`RUSAGE_SELF`) or of waited-for children.
fn cpu(who: i32) -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `skill-verifier inspect --no-scan` on the archive, as a user runs it (whole process:
/// start-up, config, the one read, JSON out). `--no-scan` keeps this the package stage's
/// figure; the scan's own cost is `benches/scan.rs`.
fn run_inspect(binary: &Path, archive: &Path, cpu_used: &mut Vec<Duration>) -> Duration {
    let cpu_before = cpu(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let out = Command::new(binary)
        .arg("inspect")
        .arg("--no-scan")
        .arg(archive)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    cpu_used.push(cpu(libc::RUSAGE_CHILDREN) - cpu_before);
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// `package::read` in process, writing the normalised tar (what a job's worker does).
fn run_read(archive: &Path, scratch: &Path, i: usize) -> Duration {
    let out = scratch.join(format!("ours{i}.tar"));
    let start = Instant::now();
    let pkg = package::read(archive, &out, &Limits::default()).expect("bench package reads");
    let elapsed = start.elapsed();
    assert!(pkg.files > 1000);
    std::fs::remove_file(&out).unwrap();
    elapsed
}

fn run_shell(
    script: &str,
    scratch: &Path,
    i: usize,
    archive: &Path,
    cpu_used: &mut Vec<Duration>,
) -> Duration {
    let dir = scratch.join(format!("base{i}"));
    std::fs::create_dir(&dir).unwrap();
    let cpu_before = cpu(libc::RUSAGE_CHILDREN);
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(archive)
        .arg(&dir)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    cpu_used.push(cpu(libc::RUSAGE_CHILDREN) - cpu_before);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    elapsed
}

fn peak_rss_kib(binary: &Path, archive: &Path) -> Option<u64> {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .arg("inspect")
        .arg("--no-scan")
        .arg(archive)
        .env("RUST_LOG", "off")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
}

/// One file system's figures, all from the same interleaved runs.
fn bench_on(label: &str, base: &Path, runs: usize, binary: &Path, src: &Path) {
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-bench-")
        .tempdir_in(base)
        .unwrap();
    let s = scratch.path();
    let archive = s.join("bench.tar.gz");
    tar_gz(src, "bench", &archive);
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    println!(
        "\n== {label} ({}): archive {:.1} MB tar.gz",
        base.display(),
        archive_len as f64 / 1e6
    );

    const BASELINE: &str = r#"tar -xzf "$1" -C "$2" && sha256sum "$1" >/dev/null"#;

    // Warm the page cache once.
    let mut ignore = Vec::new();
    run_inspect(binary, &archive, &mut ignore);
    run_read(&archive, s, 999);
    run_shell(BASELINE, s, 999, &archive, &mut ignore);

    let (mut ours, mut read, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_cpu, mut base_cpu) = (Vec::new(), Vec::new());
    for i in 0..runs {
        ours.push(run_inspect(binary, &archive, &mut ours_cpu));
        base.push(run_shell(BASELINE, s, i, &archive, &mut base_cpu));
        read.push(run_read(&archive, s, i));
    }
    let (o, r, b) = (median(ours.clone()), median(read), median(base));
    println!("runs: {runs} (interleaved), medians:");
    println!(
        "  `skill-verifier inspect` (whole process):           {:>7.1} ms (min {:.1})",
        ms(o),
        ms(*ours.iter().min().unwrap())
    );
    println!(
        "  baseline `tar -xzf` + `sha256sum archive`:          {:>7.1} ms",
        ms(b)
    );
    println!(
        "  `package::read` in process, writing the tar (+fsync): {:>5.1} ms",
        ms(r)
    );
    println!(
        "  CPU (user+sys): inspect {:.1} ms, baseline {:.1} ms",
        ms(median(ours_cpu)),
        ms(median(base_cpu))
    );
    let ratio = o.as_secs_f64() / b.as_secs_f64();
    println!(
        "  inspect / baseline = {ratio:.2}x (goal <= 0.30x: {}; stretch <= 0.20x: {}); read+tar / baseline = {:.2}x",
        if ratio <= 0.30 { "met" } else { "NOT met" },
        if ratio <= 0.20 { "met" } else { "NOT met" },
        r.as_secs_f64() / b.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke() { 1 } else { 7 });
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_skill-verifier"));
    // The same archive on an ext4 directory (BENCH_DISK_DIR, default the system temp dir)
    // and on a tmpfs (BENCH_TMPFS_DIR, default /dev/shm).
    let disk = std::env::var_os("BENCH_DISK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmpfs = std::env::var_os("BENCH_TMPFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let src_dir = tempfile::Builder::new()
        .prefix("skill-verifier-bench-src-")
        .tempdir_in(&disk)
        .unwrap();
    let src = src_dir.path();

    // ~58 MB tar.gz, 1,401 files.
    let bytes = if smoke() {
        make_tree(&src.join("bench"), 1000, 400, 2_000_000, 20, 1)
    } else {
        make_tree(&src.join("bench"), 1000, 400, 69_500_000, 20, 1)
    };
    println!("tree: 1,401 files, {:.1} MB unpacked", bytes as f64 / 1e6);
    bench_on("ext4", &disk, runs, &binary, src);
    if tmpfs.is_dir() {
        bench_on("tmpfs", &tmpfs, runs, &binary, src);
    } else {
        println!("tmpfs: {} missing, skipped", tmpfs.display());
    }

    // Peak RSS on a ~100 MB archive (mostly incompressible, so the archive is ~100 MB).
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-bench-")
        .tempdir_in(&disk)
        .unwrap();
    let s = scratch.path();
    let archive = s.join("bench.tar.gz");
    tar_gz(src, "bench", &archive);
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    let big_total = if smoke() { 4_000_000 } else { 103_000_000 };
    let big_bytes = make_tree(&s.join("big/bench"), 200, 800, big_total, 3, 2);
    let big = s.join("big.tar.gz");
    tar_gz(&s.join("big"), "bench", &big);
    let big_len = std::fs::metadata(&big).unwrap().len();
    match (peak_rss_kib(&binary, &archive), peak_rss_kib(&binary, &big)) {
        (Some(small), Some(large)) => {
            println!(
                "\npeak RSS of `skill-verifier inspect`: {:.1} MiB for the {:.0} MB archive, {:.1} MiB for a {:.0} MB archive ({:.0} MB unpacked)",
                small as f64 / 1024.0,
                archive_len as f64 / 1e6,
                large as f64 / 1024.0,
                big_len as f64 / 1e6,
                big_bytes as f64 / 1e6
            );
        }
        _ => println!("peak RSS: /usr/bin/time -v not available"),
    }
}

/// `BENCH_SMOKE=1` (CI): run every path once, at a small size, and report nothing worth
/// reading; the point is that the bench still builds and runs.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}
