//! Benchmark: hardened unpack + digest of a ~50 MB, ~1,400-file tar.gz, against
//! `tar -xzf` + `sha256sum` of the same archive, in the same run; then the peak RSS of
//! `skill-verifier inspect` on a ~100 MB archive.
//!
//! Run: `cargo bench --bench unpack` (a plain binary, `harness = false`). Runs of ours and of
//! the baseline are interleaved so background load hits both alike; medians are reported.
//! `BENCH_RUNS` sets the number of runs (default 7).

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

fn run_ours(archive: &Path, scratch: &Path, i: usize, cpu_used: &mut Vec<Duration>) -> Duration {
    let work = scratch.join(format!("ours{i}"));
    let cpu_before = cpu(libc::RUSAGE_SELF);
    let start = Instant::now();
    let pkg = package::load(archive, &work, &Limits::default()).expect("bench package loads");
    let elapsed = start.elapsed();
    cpu_used.push(cpu(libc::RUSAGE_SELF) - cpu_before);
    assert!(pkg.files > 1000);
    std::fs::remove_dir_all(&work).unwrap();
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

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    // Unpacking 1,400 files is dominated by inode creation, which on a busy ext4 costs more
    // than everything else together (and equally for the baseline). Work dirs belong on a
    // tmpfs in production too, so use /dev/shm when there is one; BENCH_DIR overrides.
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("skill-verifier-bench-")
        .tempdir_in(&base)
        .unwrap();
    println!("scratch dir: {}", base.display());
    let s = scratch.path();

    // ~50 MB, ~1,400 files.
    let bytes = make_tree(&s.join("src/bench"), 1000, 400, 50_000_000, 40, 1);
    let archive = s.join("bench.tar.gz");
    tar_gz(&s.join("src"), "bench", &archive);
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    println!(
        "archive: {:.1} MB tar.gz, 1,401 files, {:.1} MB unpacked",
        archive_len as f64 / 1e6,
        bytes as f64 / 1e6
    );

    const BASELINE: &str = r#"tar -xzf "$1" -C "$2" && sha256sum "$1" >/dev/null"#;
    const BASELINE_ALL: &str = r#"tar -xzf "$1" -C "$2" && sha256sum "$1" >/dev/null && find "$2" -type f -exec sha256sum {} + >/dev/null"#;

    // Warm the page cache and the allocator once.
    let mut ignore = Vec::new();
    run_ours(&archive, s, 999, &mut ignore);
    run_shell(BASELINE, s, 999, &archive, &mut ignore);

    let (mut ours, mut base, mut base_all) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_cpu, mut base_cpu, mut base_all_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        ours.push(run_ours(&archive, s, i, &mut ours_cpu));
        base.push(run_shell(BASELINE, s, i, &archive, &mut base_cpu));
        base_all.push(run_shell(
            BASELINE_ALL,
            s,
            i + 1000,
            &archive,
            &mut base_all_cpu,
        ));
    }
    let (o, b, ba) = (median(ours.clone()), median(base), median(base_all));
    let (oc, bc, bac) = (median(ours_cpu), median(base_cpu), median(base_all_cpu));
    println!("runs: {runs} (interleaved), medians:");
    println!(
        "  skill-verifier load (unpack + validate + per-file + archive + tree digest): {:.1} ms (min {:.1})",
        ms(o),
        ms(*ours.iter().min().unwrap())
    );
    println!(
        "  baseline `tar -xzf` + `sha256sum archive`:                               {:.1} ms",
        ms(b)
    );
    println!(
        "  baseline + `sha256sum` of every extracted file:                          {:.1} ms",
        ms(ba)
    );
    println!(
        "  CPU time (user+sys) medians: ours {:.1} ms, baseline {:.1} ms, baseline hashing every file {:.1} ms",
        ms(oc),
        ms(bc),
        ms(bac)
    );
    println!(
        "  speed-up vs baseline: {:.2}x; vs baseline hashing every file: {:.2}x",
        b.as_secs_f64() / o.as_secs_f64(),
        ba.as_secs_f64() / o.as_secs_f64()
    );
    println!(
        "  target <= 250 ms: {}; target >= 1.5x: {}",
        if ms(o) <= 250.0 { "met" } else { "NOT met" },
        if b.as_secs_f64() / o.as_secs_f64() >= 1.5 {
            "met"
        } else {
            "NOT met"
        }
    );

    // Peak RSS on a ~100 MB archive (mostly incompressible, so the archive is ~100 MB).
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_skill-verifier"));
    let big_bytes = make_tree(&s.join("big/bench"), 200, 800, 103_000_000, 3, 2);
    let big = s.join("big.tar.gz");
    tar_gz(&s.join("big"), "bench", &big);
    let big_len = std::fs::metadata(&big).unwrap().len();
    match (peak_rss_kib(&binary, &archive), peak_rss_kib(&binary, &big)) {
        (Some(small), Some(large)) => {
            println!(
                "peak RSS of `skill-verifier inspect`: {:.1} MiB for the {:.0} MB archive, {:.1} MiB for a {:.0} MB archive ({:.0} MB unpacked)",
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
