//! Valid packages: the same skill in every container gives the same tree digest, the
//! executable bit survives, the skill root and test plan come out right.

mod package_support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use package_support::*;
use skill_verifier::package::{self, Format, Limits, PackageError, Runtime, TestSource};

const RUN_SH: &[u8] = b"#!/bin/sh\necho hello\n";

fn limits() -> Limits {
    Limits::default()
}

/// The reference tree: (path, executable, content).
fn tree() -> Vec<(&'static str, bool, Vec<u8>)> {
    vec![
        ("SKILL.md", false, skill_md("pdf-tools")),
        ("scripts/run.sh", true, RUN_SH.to_vec()),
        ("reference/notes.md", false, b"# Notes\n".to_vec()),
        ("test.sh", false, b"sh scripts/run.sh\n".to_vec()),
    ]
}

/// Anthropic's `.skill`: a zip (written by the zip crate, as a real tool would) whose
/// entries sit under one `<name>/` folder, files only (no directory entries).
fn dot_skill() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, exec, content) in tree().into_iter().rev() {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(if exec { 0o755 } else { 0o644 });
        w.start_file(format!("pdf-tools/{path}"), opts).unwrap();
        w.write_all(&content).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A flat tar.gz of the same tree, with `./` entries and directory entries, other order.
fn flat_targz() -> Vec<u8> {
    let mut t = Tar::new().dir("./").dir("./scripts/").dir("./reference/");
    for (path, exec, content) in tree() {
        let name = format!("./{path}");
        t = if exec {
            t.exec(&name, &content)
        } else {
            t.file(&name, &content)
        };
    }
    gz(&t.finish())
}

#[test]
fn dot_skill_and_flat_targz_have_the_same_tree_digest() {
    let (zip_pkg, _w1) = load_ok(&dot_skill(), &limits());
    let (tgz_pkg, _w2) = load_ok(&flat_targz(), &limits());
    assert_eq!(zip_pkg.format, Format::Zip);
    assert_eq!(tgz_pkg.format, Format::TarGz);
    assert_eq!(zip_pkg.tree_sha256, tgz_pkg.tree_sha256);
    assert_ne!(zip_pkg.archive_sha256, tgz_pkg.archive_sha256);
    assert_eq!(zip_pkg.manifest.name, "pdf-tools");
    assert_eq!((zip_pkg.files, tgz_pkg.files), (4, 4));
    assert_eq!(zip_pkg.bytes, tgz_pkg.bytes);
    // The .skill's root is its top folder, which the tar leaves out: both containers make
    // the same normalised tar, byte for byte.
    let zip_tar = std::fs::read(&zip_pkg.tar.path).unwrap();
    let tgz_tar = std::fs::read(&tgz_pkg.tar.path).unwrap();
    assert_eq!(zip_tar, tgz_tar);
    assert_eq!(zip_pkg.tar.sha256, tgz_pkg.tar.sha256);
    assert_eq!(zip_pkg.tar.len, zip_tar.len() as u64);
    assert_eq!(
        zip_pkg.tar.sha256,
        skill_verifier::digest::Sha256Digest::of(&zip_tar)
    );
    let paths: Vec<String> = tar_items(&zip_pkg.tar.path)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "canonical order");
    assert!(
        paths.iter().all(|p| !p.starts_with("pdf-tools")),
        "{paths:?}"
    );
}

#[test]
fn file_facts_point_at_each_file_in_the_tar() {
    let (pkg, _w) = load_ok(&dot_skill(), &limits());
    let tar = std::fs::read(&pkg.tar.path).unwrap();
    let files = tar_files(&pkg);
    assert_eq!(pkg.file_facts.len(), files.len());
    for fact in &pkg.file_facts {
        let at = fact.tar_offset.unwrap() as usize;
        let content = &tar[at..at + fact.len as usize];
        assert_eq!(content, files[&fact.path].1.as_slice(), "{}", fact.path);
        assert_eq!(
            fact.sha256,
            *skill_verifier::digest::Sha256Digest::of(content).as_bytes()
        );
    }
}

#[test]
fn archive_sha256_is_the_plain_hash_of_the_upload() {
    let bytes = flat_targz();
    let (pkg, _w) = load_ok(&bytes, &limits());
    assert_eq!(
        pkg.archive_sha256,
        Some(skill_verifier::digest::Sha256Digest::of(&bytes))
    );
}

#[test]
fn executable_bit_survives_and_special_bits_do_not() {
    let bytes = Tar::new()
        .file("SKILL.md", &skill_md("x"))
        .entry(b"run.sh", kind::FILE, 0o4755, RUN_SH) // setuid
        .entry(b"data.txt", kind::FILE, 0o2666, b"d") // setgid, world-writable
        .finish();
    let (pkg, _w) = load_ok(&bytes, &limits());
    let files = tar_files(&pkg);
    assert_eq!(files["run.sh"].0, 0o755);
    assert_eq!(files["data.txt"].0, 0o644);
    let run = pkg.file_facts.iter().find(|e| e.path == "run.sh").unwrap();
    assert!(run.executable);
}

#[test]
fn zip_executable_bit_survives() {
    let (pkg, _w) = load_ok(&dot_skill(), &limits());
    assert_eq!(tar_files(&pkg)["scripts/run.sh"].0, 0o755);
}

#[test]
fn the_executable_bit_is_part_of_the_digest() {
    let a = Tar::new()
        .file("SKILL.md", &skill_md("x"))
        .exec("run.sh", RUN_SH)
        .finish();
    let b = Tar::new()
        .file("SKILL.md", &skill_md("x"))
        .file("run.sh", RUN_SH)
        .finish();
    let (pa, _w1) = load_ok(&a, &limits());
    let (pb, _w2) = load_ok(&b, &limits());
    assert_ne!(pa.tree_sha256, pb.tree_sha256);
}

#[test]
fn system_tar_and_a_directory_agree_with_the_built_archives() {
    let world = World::new();
    let dir = world.root().join("pdf-tools");
    for (path, exec, content) in tree() {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let tgz = world.root().join("s.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(world.root())
        .arg("pdf-tools")
        .status()
        .unwrap();
    assert!(status.success());
    let before = world.snapshot();
    let from_tar = package::read(&tgz, &world.root().join("w1.tar"), &limits()).unwrap();
    let from_dir = package::read(&dir, &world.root().join("w2.tar"), &limits()).unwrap();
    let (from_zip, _w) = load_ok(&dot_skill(), &limits());
    assert_eq!(from_tar.tree_sha256, from_zip.tree_sha256);
    assert_eq!(from_dir.tree_sha256, from_zip.tree_sha256);
    assert_eq!(from_dir.format, Format::Directory);
    assert_eq!(from_dir.archive_sha256, None);
    // Every input format makes the same normalised tar.
    let zip_tar = std::fs::read(&from_zip.tar.path).unwrap();
    assert_eq!(std::fs::read(&from_tar.tar.path).unwrap(), zip_tar);
    assert_eq!(std::fs::read(&from_dir.tar.path).unwrap(), zip_tar);
    // A directory is read in place: nothing but the two output tars was written.
    let mut after = world.snapshot();
    assert!(after.0.remove(&world.root().join("w1.tar")).is_some());
    assert!(after.0.remove(&world.root().join("w2.tar")).is_some());
    assert_eq!(after, before);
}

#[test]
fn plain_tar_is_accepted() {
    let bytes = Tar::new().file("SKILL.md", &skill_md("x")).finish();
    let (pkg, _w) = load_ok(&bytes, &limits());
    assert_eq!(pkg.format, Format::Tar);
}

#[test]
fn long_names_via_gnu_and_pax_and_a_git_archive_global_header_are_accepted() {
    let long = format!("{}/file.txt", "d".repeat(150));
    let longer = format!("{}/other.txt", "e".repeat(200));
    let bytes = Tar::new()
        .entry(
            b"pax_global_header",
            kind::PAX_GLOBAL,
            0o644,
            &pax_records(&[("comment", b"0123456789abcdef")]),
        )
        .file("SKILL.md", &skill_md("x"))
        .long_name_file(long.as_bytes(), b"gnu")
        .pax_file(&[("path", longer.as_bytes())], "short", b"pax")
        .finish();
    let (pkg, _w) = load_ok(&bytes, &limits());
    let files = tar_files(&pkg);
    assert_eq!(files[&long].1, b"gnu");
    assert_eq!(files[&longer].1, b"pax");
}

#[test]
fn pax_size_overrides_the_header_size() {
    // GNU tar and the tar crate let PAX `size` win; so must we, or a smuggled entry would be
    // read differently here than by the tools a reviewer uses.
    let mut t = Tar::new().file("SKILL.md", &skill_md("x"));
    let body = pax_records(&[("size", b"5")]);
    t = t.entry(b"PaxHeader", kind::PAX, 0o644, &body);
    let mut h = Tar::header(b"a.txt", kind::FILE, 0o644, 0, b"");
    Tar::fix_checksum(&mut h);
    let mut data = b"hello".to_vec();
    data.resize(512, 0);
    let bytes = t.raw(&h).raw(&data).finish();
    let (pkg, _w) = load_ok(&bytes, &limits());
    assert_eq!(tar_files(&pkg)["a.txt"].1, b"hello");
}

#[test]
fn archive_root_wins_when_there_is_more_than_one_top_level_entry() {
    let bytes = Tar::new()
        .file("SKILL.md", &skill_md("x"))
        .file("x/SKILL.md", &skill_md("x"))
        .file("other.txt", b"o")
        .finish();
    let (pkg, _w) = load_ok(&bytes, &limits());
    assert!(tar_files(&pkg).contains_key("x/SKILL.md"));
    assert_eq!(pkg.files, 3);
}

#[test]
fn single_top_folder_without_skill_md_is_not_a_root() {
    let bytes = Tar::new().file("x/README.md", b"r").finish();
    let world = World::new();
    let input = world.archive(&bytes);
    let err = package::read(&input, &world.tar_out(), &limits()).unwrap_err();
    assert_eq!(err.code(), "missing_skill_md");
    assert!(!world.tar_out().exists());
}

#[test]
fn an_existing_output_is_refused_and_left_alone() {
    let world = World::new();
    std::fs::write(world.tar_out(), b"keep").unwrap();
    let input = world.archive(&flat_targz());
    let err = package::read(&input, &world.tar_out(), &limits()).unwrap_err();
    assert!(matches!(err, PackageError::OutputExists { .. }));
    assert!(!err.is_invalid_package());
    assert_eq!(std::fs::read(world.tar_out()).unwrap(), b"keep");
}

#[test]
fn a_directory_with_a_symlink_is_refused_in_place() {
    let world = World::new();
    let dir = world.root().join("s");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("SKILL.md"), skill_md("s")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    let err = package::read(&dir, &world.tar_out(), &limits()).unwrap_err();
    assert_eq!(err.code(), "symlink");
    assert!(!world.tar_out().exists());
    assert!(
        dir.join("passwd").exists(),
        "validation must not modify the directory"
    );
}

// ------------------------------------------------------------------ test plans

fn plan_of(files: &[(&str, &[u8])]) -> skill_verifier::package::TestPlan {
    let mut t = Tar::new();
    for (p, c) in files {
        t = t.file(p, c);
    }
    load_ok(&t.finish(), &limits()).0.test
}

#[test]
fn declared_test_plan() {
    let md = b"---\nname: x\ndescription: d\nmetadata:\n  verify-test: python3 check.py\n  verify-runtime: python\n  verify-timeout: 120\n---\n";
    let plan = plan_of(&[("SKILL.md", md)]);
    assert_eq!(plan.command, "python3 check.py");
    assert_eq!(plan.runtime, Runtime::Python);
    assert_eq!(plan.timeout_secs, Some(120));
    assert_eq!(plan.source, TestSource::Declared);
}

#[test]
fn pytest_layout_is_detected() {
    let plan = plan_of(&[
        ("SKILL.md", &skill_md("x")),
        (
            "tests/test_calc.py",
            b"def test_add():\n    assert 1 + 1 == 2\n",
        ),
    ]);
    assert_eq!(plan.runtime, Runtime::Python);
    assert_eq!(plan.source, TestSource::Detected);
    assert_eq!(plan.command, "python3 -B -m pytest -q -p no:cacheprovider");
}

#[test]
fn unittest_layout_is_detected() {
    let plan = plan_of(&[
        ("SKILL.md", &skill_md("x")),
        (
            "tests/test_calc.py",
            b"import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n        pass\n",
        ),
    ]);
    assert_eq!(plan.command, "python3 -B -m unittest discover -s tests -v");
}

#[test]
fn node_test_script_is_detected() {
    let plan = plan_of(&[
        ("SKILL.md", &skill_md("x")),
        (
            "package.json",
            br#"{"scripts": {"test": "node --test test/"}}"#,
        ),
    ]);
    assert_eq!(plan.runtime, Runtime::Node);
    assert_eq!(plan.source, TestSource::Detected);
    assert!(plan.command.ends_with("node --test test/"));
}

#[test]
fn npm_placeholder_script_is_not_a_test() {
    let plan = plan_of(&[
        ("SKILL.md", &skill_md("x")),
        (
            "package.json",
            br#"{"scripts": {"test": "echo \"Error: no test specified\" && exit 1"}}"#,
        ),
        ("index.js", b"console.log(1)\n"),
    ]);
    assert_eq!(plan.source, TestSource::Smoke);
    assert_eq!(plan.runtime, Runtime::Node);
    assert!(plan.command.contains("node --check"));
}

#[test]
fn test_sh_is_detected() {
    let plan = plan_of(&[("SKILL.md", &skill_md("x")), ("test.sh", b"true\n")]);
    assert_eq!(
        (plan.command.as_str(), plan.runtime),
        ("sh test.sh", Runtime::Shell)
    );
}

#[test]
fn smoke_plan_checks_python_without_writing_bytecode() {
    let plan = plan_of(&[
        ("SKILL.md", &skill_md("x")),
        ("scripts/tool.py", b"print(1)\n"),
    ]);
    assert_eq!(plan.source, TestSource::Smoke);
    assert_eq!(plan.runtime, Runtime::Python);
    assert!(plan.command.contains("compile("));
    assert!(!plan.command.contains("py_compile"));
}

/// The smoke commands really work (with the local sh/python3/node when present): a good
/// tree passes and a broken script fails, and nothing is written into the tree.
#[test]
fn smoke_commands_run_and_catch_syntax_errors() {
    fn run(dir: &Path, command: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .output()
            .unwrap()
            .status
            .success()
    }
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap()
            .status
            .success()
    };
    use skill_verifier::package::plan::{SMOKE_NODE, SMOKE_PYTHON, SMOKE_SHELL};
    let world = World::new();
    let d = world.root().join("t");
    std::fs::create_dir_all(d.join("sub dir")).unwrap();
    std::fs::write(d.join("sub dir/ok.sh"), "echo ok\n").unwrap();
    assert!(run(&d, SMOKE_SHELL));
    std::fs::write(d.join("sub dir/bad.sh"), "if then fi (\n").unwrap();
    assert!(!run(&d, SMOKE_SHELL));
    if have("python3") {
        std::fs::write(d.join("ok.py"), "print(1)\n").unwrap();
        assert!(run(&d, SMOKE_PYTHON));
        std::fs::write(d.join("bad.py"), "def (:\n").unwrap();
        assert!(!run(&d, SMOKE_PYTHON));
        assert!(!d.join("__pycache__").exists());
    } else {
        eprintln!("WARNING: python3 not found; python smoke command not exercised");
    }
    if have("node") {
        std::fs::write(d.join("ok.js"), "console.log(1)\n").unwrap();
        assert!(run(&d, SMOKE_NODE));
        std::fs::write(d.join("bad.mjs"), "function (\n").unwrap();
        assert!(!run(&d, SMOKE_NODE));
    } else {
        eprintln!("WARNING: node not found; node smoke command not exercised");
    }
}
