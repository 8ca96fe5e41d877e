//! Property-based fuzzing of the unpacker and the frontmatter parser.
//!
//! The default case counts keep `cargo test` quick; a long run is
//! `PROPTEST_CASES=20000 cargo nextest run --release --test package_fuzz` (see
//! docs/packages.md for the figures).
//!
//! Properties, for any input:
//! - `read` returns (never panics, never hangs);
//! - on error nothing at all was written (no output, no spool);
//! - on success only the output tar was written; it holds only regular files and
//!   directories with fixed metadata, and reading it again gives the same tree digest and a
//!   byte-identical tar.

mod package_support;

use package_support::*;
use proptest::prelude::*;
use skill_verifier::package::{self, manifest, Limits};

fn small_limits() -> Limits {
    Limits {
        unpacked_bytes: 4 << 20,
        entries: 200,
        ..Limits::default()
    }
}

fn check_any_input(bytes: &[u8]) -> Result<(), TestCaseError> {
    let world = World::new();
    let input = world.archive(bytes);
    let before = world.snapshot();
    let result = package::read(&input, &world.tar_out(), &small_limits());
    match result {
        Ok(pkg) => {
            // Only regular files and directories, fixed metadata (checked by `tar_items`).
            let items = tar_items(&pkg.tar.path);
            prop_assert_eq!(
                items.iter().filter(|(_, i)| i.kind == 'f').count() as u64,
                pkg.files
            );
            // The normalised tar read again is a fixed point: same digest, same bytes.
            let again_out = world.root().join("again.tar");
            let again = package::read(&pkg.tar.path, &again_out, &small_limits())
                .map_err(|e| TestCaseError::fail(format!("re-reading the tar failed: {e}")))?;
            prop_assert_eq!(again.tree_sha256, pkg.tree_sha256);
            prop_assert_eq!(again.tar.sha256, pkg.tar.sha256);
            // Nothing else was written.
            let mut after = world.snapshot();
            prop_assert!(after.0.remove(&world.tar_out()).is_some());
            prop_assert!(after.0.remove(&again_out).is_some());
            prop_assert_eq!(after, before);
        }
        Err(e) => {
            prop_assert!(!world.tar_out().exists(), "output left after {}", e);
            prop_assert_eq!(world.snapshot(), before);
        }
    }
    Ok(())
}

fn seed_archives() -> Vec<Vec<u8>> {
    let tar = Tar::new()
        .dir("s/")
        .file("s/SKILL.md", &skill_md("s"))
        .exec("s/run.sh", b"#!/bin/sh\necho hi\n")
        .long_name_file(format!("s/{}", "l".repeat(120)).as_bytes(), b"long")
        .pax_file(&[("path", b"s/pax.txt")], "x", b"pax")
        .finish();
    let zip = zip(&[
        ZipEntry::dir("s/"),
        ZipEntry::file("s/SKILL.md", &skill_md("s")),
        ZipEntry::exec("s/run.sh", b"#!/bin/sh\necho hi\n"),
        ZipEntry::file("s/data.txt", &[b'a'; 3000]),
    ]);
    vec![gz(&tar), tar, zip]
}

/// A mutation: flip bytes, overwrite a range, truncate, or splice in bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Overwrite(usize, Vec<u8>),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::Flip(i, x) => bytes[i % len] ^= x,
            Mutation::Overwrite(i, v) => {
                let at = i % len;
                for (k, b) in v.iter().enumerate() {
                    if at + k < len {
                        bytes[at + k] = *b;
                    }
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::Insert(i, v) => {
                let at = i % len;
                bytes.splice(at..at, v.iter().copied());
            }
        }
    }
    bytes
}

/// Names built from the pieces attackers use.
fn hostile_name() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"..".to_vec()),
        Just(b".".to_vec()),
        Just(b"".to_vec()),
        Just(b"s".to_vec()),
        Just(b"SKILL.md".to_vec()),
        Just(b"a\\b".to_vec()),
        Just(b"C:".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\xff".to_vec()),
        Just(vec![b'n'; 256]),
        "[a-z]{1,8}".prop_map(String::into_bytes),
    ];
    (any::<bool>(), prop::collection::vec(piece, 1..6)).prop_map(|(abs, parts)| {
        let mut name = if abs { b"/".to_vec() } else { Vec::new() };
        name.extend(parts.join(&b'/'));
        name
    })
}

fn tar_entry() -> impl Strategy<Value = (Vec<u8>, u8, u32, Vec<u8>)> {
    let typeflag = prop_oneof![
        4 => Just(kind::FILE),
        2 => Just(kind::DIR),
        1 => Just(kind::SYMLINK),
        1 => Just(kind::HARDLINK),
        1 => Just(kind::FIFO),
        1 => Just(kind::SPARSE),
        1 => Just(b'Z'),
    ];
    (
        hostile_name(),
        typeflag,
        prop_oneof![Just(0o644u32), Just(0o755), Just(0o4777)],
        prop::collection::vec(any::<u8>(), 0..200),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES overrides the quick default for long runs.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn mutated_archives_never_escape_or_leak(
        seed in 0usize..3,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let bytes = apply(seed_archives().swap_remove(seed), &mutations);
        check_any_input(&bytes)?;
    }

    #[test]
    fn generated_tar_streams_never_escape_or_leak(
        entries in prop::collection::vec(tar_entry(), 0..12),
        gzip in any::<bool>(),
    ) {
        let mut t = Tar::new().file("SKILL.md", &skill_md("s"));
        for (name, typeflag, mode, data) in &entries {
            let data = if *typeflag == kind::FILE { data.as_slice() } else { &[] };
            t = t.entry(name, *typeflag, *mode, data);
        }
        let bytes = t.finish();
        check_any_input(&if gzip { gz(&bytes) } else { bytes })?;
    }

    #[test]
    fn generated_zips_never_escape_or_leak(
        entries in prop::collection::vec(
            (hostile_name(), prop_oneof![Just(0o100644u32), Just(0o100755), Just(0o120777), Just(0o40755), Just(0o10644)], prop::collection::vec(any::<u8>(), 0..200)),
            0..12,
        ),
    ) {
        let mut list = vec![ZipEntry::file("SKILL.md", &skill_md("s"))];
        for (name, mode, data) in entries {
            let mut e = ZipEntry::file("x", &data).raw_name(&name);
            e.mode = mode;
            list.push(e);
        }
        check_any_input(&zip(&list))?;
    }

    #[test]
    fn frontmatter_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = manifest::parse_skill_md(text.as_bytes(), None);
        let _ = manifest::parse_skill_md(format!("---\n{text}\n---\n").as_bytes(), Some("s"));
    }

    #[test]
    fn frontmatter_parser_never_panics_on_yaml_shapes(
        lines in prop::collection::vec(
            prop_oneof![
                Just("name: s".to_string()),
                Just("description: d".to_string()),
                Just("metadata:".to_string()),
                Just("  verify-test: x".to_string()),
                Just("  k: &a [*a]".to_string()),
                Just("x: &x [*x, *x]".to_string()),
                Just("- item".to_string()),
                Just("<<: {a: 1}".to_string()),
                Just("allowed-tools: [a, 1, {b: c}]".to_string()),
                Just("license: !!binary aGk=".to_string()),
                "[a-z-]{1,10}: [ -~]{0,20}",
                "  [a-z-]{1,10}: [ -~]{0,20}",
            ],
            0..12,
        ),
    ) {
        let yaml = lines.join("\n");
        if let Ok(m) = manifest::parse_frontmatter(&yaml, None) {
            // Whatever is accepted satisfies the documented invariants.
            prop_assert!(!m.name.is_empty() && m.name.len() <= 64);
            prop_assert!(m.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!m.description.is_empty());
            prop_assert!(!m.description.contains('<') && !m.description.contains('>'));
        }
    }
}
