//! The hostile corpus: one archive per attack, built in code, each refused with its own
//! error, leaving the temp root exactly as it was and no work dir behind.

mod package_support;

use package_support::*;
use skill_verifier::package::Limits;

fn limits() -> Limits {
    Limits::default()
}

/// A tar with a valid skill, then `attack` appended (attacks come after a good prefix so the
/// refusal also proves the partial tree is removed).
fn tar_after_skill(attack: impl FnOnce(Tar) -> Tar) -> Vec<u8> {
    attack(Tar::new().file("SKILL.md", &skill_md("evil"))).finish()
}

fn zip_after_skill(mut attack: Vec<ZipEntry>) -> Vec<u8> {
    let mut entries = vec![ZipEntry::file("SKILL.md", &skill_md("evil"))];
    entries.append(&mut attack);
    zip(&entries)
}

// ------------------------------------------------------------------ paths (tar)

#[test]
fn tar_absolute_path() {
    let world = World::new();
    let target = world.outside().join("pwned");
    let bytes = tar_after_skill(|t| t.file(target.to_str().unwrap(), b"x"));
    assert_refused(&bytes, &limits(), "absolute_path");
}

#[test]
fn tar_parent_dir() {
    let bytes = tar_after_skill(|t| t.file("../outside/victim.txt", b"overwritten"));
    assert_refused(&bytes, &limits(), "parent_dir");
}

#[test]
fn tar_parent_dir_inside_path() {
    let bytes = tar_after_skill(|t| t.file("a/../../outside/pwned", b"x"));
    assert_refused(&bytes, &limits(), "parent_dir");
}

#[test]
fn tar_windows_drive_prefix() {
    let bytes = tar_after_skill(|t| t.file("C:/Windows/evil.dll", b"x"));
    assert_refused(&bytes, &limits(), "windows_prefix");
}

#[test]
fn tar_backslash_separator() {
    let bytes = tar_after_skill(|t| t.file("..\\outside\\pwned", b"x"));
    assert_refused(&bytes, &limits(), "backslash");
}

#[test]
fn tar_control_character_in_name() {
    let bytes = tar_after_skill(|t| t.file("scripts/\x1b[31mred.sh", b"x"));
    assert_refused(&bytes, &limits(), "control_character");
}

#[test]
fn tar_newline_in_name() {
    let bytes = tar_after_skill(|t| t.file("a\nb", b"x"));
    assert_refused(&bytes, &limits(), "control_character");
}

#[test]
fn tar_invalid_utf8_name() {
    let bytes = tar_after_skill(|t| t.entry(b"caf\xe9.txt", kind::FILE, 0o644, b"x"));
    assert_refused(&bytes, &limits(), "invalid_name");
}

#[test]
fn tar_path_deeper_than_32() {
    let deep = format!("{}f", "d/".repeat(32));
    let bytes = tar_after_skill(|t| t.long_name_file(deep.as_bytes(), b"x"));
    assert_refused(&bytes, &limits(), "path_too_deep");
}

#[test]
fn tar_component_longer_than_255() {
    let long = "n".repeat(256);
    let bytes = tar_after_skill(|t| t.long_name_file(long.as_bytes(), b"x"));
    assert_refused(&bytes, &limits(), "component_too_long");
}

#[test]
fn tar_pax_path_smuggles_parent_dir() {
    // The ustar name looks harmless; the PAX `path` (which every modern tar honours) is not.
    let bytes =
        tar_after_skill(|t| t.pax_file(&[("path", b"../outside/pwned")], "harmless.txt", b"x"));
    assert_refused(&bytes, &limits(), "parent_dir");
}

// ------------------------------------------------------------------ links and specials (tar)

#[test]
fn tar_symlink() {
    let bytes = tar_after_skill(|t| t.link("etc", kind::SYMLINK, "/etc"));
    assert_refused(&bytes, &limits(), "symlink");
}

#[test]
fn tar_symlink_then_write_through_it() {
    let bytes = tar_after_skill(|t| {
        t.link("escape", kind::SYMLINK, "../outside")
            .file("escape/victim.txt", b"overwritten")
    });
    assert_refused(&bytes, &limits(), "symlink");
}

#[test]
fn tar_symlink_then_same_name_directory() {
    let bytes = tar_after_skill(|t| {
        t.link("d", kind::SYMLINK, "../outside")
            .dir("d")
            .file("d/pwned", b"x")
    });
    assert_refused(&bytes, &limits(), "symlink");
}

#[test]
fn tar_hard_link_then_same_name_file() {
    let bytes = tar_after_skill(|t| {
        t.link("h", kind::HARDLINK, "../outside/victim.txt")
            .file("h", b"overwritten")
    });
    assert_refused(&bytes, &limits(), "hard_link");
}

#[test]
fn tar_character_device() {
    let bytes = tar_after_skill(|t| t.entry(b"null", kind::CHAR, 0o666, b""));
    let err = assert_refused(&bytes, &limits(), "special_file");
    assert!(err.to_string().contains("character device"));
}

#[test]
fn tar_block_device() {
    let bytes = tar_after_skill(|t| t.entry(b"sda", kind::BLOCK, 0o660, b""));
    let err = assert_refused(&bytes, &limits(), "special_file");
    assert!(err.to_string().contains("block device"));
}

#[test]
fn tar_fifo() {
    let bytes = tar_after_skill(|t| t.entry(b"pipe", kind::FIFO, 0o644, b""));
    let err = assert_refused(&bytes, &limits(), "special_file");
    assert!(err.to_string().contains("FIFO"));
}

#[test]
fn tar_volume_label() {
    let bytes = tar_after_skill(|t| t.entry(b"VOL", kind::VOLUME, 0o644, b""));
    assert_refused(&bytes, &limits(), "unsupported_entry");
}

// ------------------------------------------------------------------ duplicates (tar)

#[test]
fn tar_duplicate_path() {
    let bytes = tar_after_skill(|t| t.file("a.txt", b"1").file("a.txt", b"2"));
    assert_refused(&bytes, &limits(), "duplicate_path");
}

#[test]
fn tar_duplicate_after_normalisation() {
    let bytes = tar_after_skill(|t| t.file("a.txt", b"1").file("./a.txt", b"2"));
    assert_refused(&bytes, &limits(), "duplicate_path");
}

#[test]
fn tar_duplicate_skill_md_swaps_manifest() {
    // A second SKILL.md would let the manifest we check differ from the one a runner reads.
    let bytes = tar_after_skill(|t| t.file("SKILL.md", &skill_md("other")));
    assert_refused(&bytes, &limits(), "duplicate_path");
}

#[test]
fn tar_file_then_entry_below_it() {
    let bytes = tar_after_skill(|t| t.file("a", b"1").file("a/b", b"2"));
    assert_refused(&bytes, &limits(), "path_conflict");
}

// ------------------------------------------------------------------ budgets (tar)

#[test]
fn tar_20000_entries() {
    let mut t = Tar::new().file("SKILL.md", &skill_md("evil"));
    for i in 0..20_000 {
        t = t.file(&format!("f{i}"), b"");
    }
    assert_refused(&t.finish(), &limits(), "too_many_entries");
}

#[test]
fn tar_unpacked_bytes_over_limit() {
    let small = Limits {
        unpacked_bytes: 64 * 1024,
        ..Limits::default()
    };
    let bytes = tar_after_skill(|t| t.file("big.bin", &vec![7u8; 100 * 1024]));
    assert_refused(&bytes, &small, "unpacked_too_large");
}

#[test]
fn tar_gnu_long_name_beyond_bound() {
    let huge = vec![b'a'; 1024 * 1024];
    let bytes = tar_after_skill(|t| t.long_name_file(&huge, b"x"));
    assert_refused(&bytes, &limits(), "extension_too_large");
}

#[test]
fn tar_pax_header_beyond_bound() {
    let padding = vec![b'x'; 64 * 1024];
    let bytes = tar_after_skill(|t| t.pax_file(&[("comment", &padding)], "a.txt", b"x"));
    assert_refused(&bytes, &limits(), "extension_too_large");
}

#[test]
fn tar_gnu_sparse_entry() {
    let bytes = tar_after_skill(|t| t.entry(b"sparse.bin", kind::SPARSE, 0o644, b""));
    assert_refused(&bytes, &limits(), "sparse_entry");
}

#[test]
fn tar_pax_sparse_entry() {
    let bytes = tar_after_skill(|t| {
        t.pax_file(
            &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")],
            "GNUSparseFile.0/data",
            b"x",
        )
    });
    assert_refused(&bytes, &limits(), "sparse_entry");
}

// ------------------------------------------------------------------ broken streams (tar)

#[test]
fn tar_truncated_inside_file_data() {
    let mut bytes = Tar::new()
        .file("SKILL.md", &skill_md("evil"))
        .file("data.bin", &vec![1u8; 4096])
        .unfinished();
    bytes.truncate(bytes.len() - 2000);
    assert_refused(&bytes, &limits(), "truncated");
}

#[test]
fn tar_missing_end_of_archive() {
    let bytes = Tar::new().file("SKILL.md", &skill_md("evil")).unfinished();
    assert_refused(&bytes, &limits(), "truncated");
}

#[test]
fn tar_bad_header_checksum() {
    let mut h = Tar::header(b"b.txt", kind::FILE, 0o644, 0, b"");
    h[0] = b'c'; // name changed after the checksum was computed
    let bytes = tar_after_skill(|t| t.raw(&h));
    assert_refused(&bytes, &limits(), "corrupt");
}

// ------------------------------------------------------------------ tar.gz

#[test]
fn targz_symlink() {
    let bytes = gz(&tar_after_skill(|t| t.link("l", kind::SYMLINK, "/")));
    assert_refused(&bytes, &limits(), "symlink");
}

#[test]
fn targz_absolute_path() {
    let bytes = gz(&tar_after_skill(|t| t.file("/tmp/pwned", b"x")));
    assert_refused(&bytes, &limits(), "absolute_path");
}

/// A tar.gz whose one file is `mib` MiB of zeros: the header, then `mib` identical gzip
/// members of 1 MiB of zeros each (gzip allows concatenated members), then the end marker.
fn gzip_bomb(mib: u64) -> Vec<u8> {
    let mut out = gz(&Tar::new().file("SKILL.md", &skill_md("evil")).unfinished());
    out.extend(gz(&Tar::header(
        b"bomb.bin",
        kind::FILE,
        0o644,
        mib << 20,
        b"",
    )));
    let chunk = gz_best(&vec![0u8; 1 << 20]);
    for _ in 0..mib {
        out.extend_from_slice(&chunk);
    }
    out.extend(gz(&[0u8; 1024]));
    out
}

#[test]
fn targz_1gib_bomb_is_refused_before_inflating() {
    // A tar must declare the size it frames, so a 1 GiB member is over the 512 MiB budget
    // before a single byte is inflated.
    let bytes = gzip_bomb(1024);
    assert!(bytes.len() < 2 << 20, "the bomb is small: {}", bytes.len());
    assert_refused(&bytes, &limits(), "unpacked_too_large");
}

#[test]
fn targz_400mib_bomb_hits_the_ratio_limit() {
    // Within the size budget, so the per-file ratio check (real bytes out vs compressed
    // bytes consumed) is what stops it, after about a buffer's worth.
    let started = std::time::Instant::now();
    assert_refused(&gzip_bomb(400), &limits(), "compression_ratio");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn targz_bomb_with_ratio_lifted_hits_the_unpacked_limit() {
    let lax = Limits {
        ratio: 1_000_000,
        unpacked_bytes: 32 << 20,
        ..Limits::default()
    };
    assert_refused(
        &gzip_bomb(16),
        &Limits {
            unpacked_bytes: 8 << 20,
            ..lax
        },
        "unpacked_too_large",
    );
}

#[test]
fn targz_truncated_stream() {
    let mut bytes = gz(&tar_after_skill(|t| t.file("data.bin", &[5u8; 10_000])));
    bytes.truncate(bytes.len() - 12);
    assert_refused(&bytes, &limits(), "truncated");
}

#[test]
fn targz_corrupt_deflate_data() {
    let data: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut bytes = gz(&tar_after_skill(|t| t.file("noise.bin", &data)));
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    assert_refused(&bytes, &limits(), "corrupt");
}

#[test]
fn targz_not_a_tar_inside() {
    let bytes = gz(b"just some text, not a tar archive at all");
    assert_refused(&bytes, &limits(), "unsupported_format");
}

#[test]
fn targz_megabytes_hidden_after_the_tar_end() {
    let mut tar = tar_after_skill(|t| t);
    tar.extend(vec![0x42u8; 2 << 20]);
    assert_refused(&gz(&tar), &limits(), "corrupt");
}

// ------------------------------------------------------------------ zip

#[test]
fn zip_symlink_then_file_under_it() {
    let bytes = zip_after_skill(vec![
        ZipEntry::symlink("escape", "../outside"),
        ZipEntry::file("escape/victim.txt", b"overwritten"),
    ]);
    assert_refused(&bytes, &limits(), "symlink");
}

#[test]
fn zip_parent_dir() {
    let bytes = zip_after_skill(vec![ZipEntry::file("../outside/victim.txt", b"x")]);
    assert_refused(&bytes, &limits(), "parent_dir");
}

#[test]
fn zip_absolute_path() {
    let bytes = zip_after_skill(vec![ZipEntry::file("/tmp/pwned", b"x")]);
    assert_refused(&bytes, &limits(), "absolute_path");
}

#[test]
fn zip_backslash_path() {
    let bytes = zip_after_skill(vec![ZipEntry::file("..\\..\\pwned", b"x")]);
    assert_refused(&bytes, &limits(), "backslash");
}

#[test]
fn zip_windows_drive_prefix() {
    let bytes = zip_after_skill(vec![ZipEntry::file("C:/pwned", b"x")]);
    assert_refused(&bytes, &limits(), "windows_prefix");
}

#[test]
fn zip_control_character_in_name() {
    let bytes = zip_after_skill(vec![ZipEntry::file("a\rb", b"x")]);
    assert_refused(&bytes, &limits(), "control_character");
}

#[test]
fn zip_invalid_utf8_name() {
    let bytes = zip_after_skill(vec![ZipEntry::file("x", b"x").raw_name(b"\xff\xfe.txt")]);
    assert_refused(&bytes, &limits(), "invalid_name");
}

#[test]
fn zip_fifo_mode() {
    let mut e = ZipEntry::file("pipe", b"");
    e.mode = 0o010644;
    assert_refused(&zip_after_skill(vec![e]), &limits(), "special_file");
}

#[test]
fn zip_duplicate_names() {
    let bytes = zip_after_skill(vec![
        ZipEntry::file("a.txt", b"1"),
        ZipEntry::file("a.txt", b"2"),
    ]);
    assert_refused(&bytes, &limits(), "duplicate_path");
}

#[test]
fn zip_duplicate_after_normalisation() {
    let bytes = zip_after_skill(vec![
        ZipEntry::file("a.txt", b"1"),
        ZipEntry::file("./a.txt", b"2"),
    ]);
    assert_refused(&bytes, &limits(), "duplicate_path");
}

#[test]
fn zip_20000_entries() {
    let mut entries = vec![ZipEntry::file("SKILL.md", &skill_md("evil"))];
    for i in 0..20_000 {
        entries.push(ZipEntry::file(&format!("f{i}"), b""));
    }
    assert_refused(&zip(&entries), &limits(), "too_many_entries");
}

#[test]
fn zip_1gib_bomb_hits_the_ratio_limit() {
    let e = ZipEntry {
        name: b"bomb.bin".to_vec(),
        method: 8,
        stored: deflate_zeros(1 << 30),
        crc: 0,
        uncompressed: (1u64 << 30) - 1, // fits the 32-bit field
        mode: 0o100644,
        flags: 0,
    };
    assert_refused(&zip_after_skill(vec![e]), &limits(), "compression_ratio");
}

#[test]
fn zip_1gib_bomb_that_lies_about_its_size() {
    // Declares 1,000 bytes, inflates to 1 GiB: the real byte count decides.
    let e = ZipEntry {
        name: b"liar.bin".to_vec(),
        method: 8,
        stored: deflate_zeros(1 << 30),
        crc: 0,
        uncompressed: 1000,
        mode: 0o100644,
        flags: 0,
    };
    assert_refused(&zip_after_skill(vec![e]), &limits(), "corrupt");
}

#[test]
fn zip_overlapping_entries() {
    // Two central entries share one local header and its data: a "better zip bomb".
    let a = ZipEntry::file("a.bin", &[0u8; 5000]);
    let b = ZipEntry::file("b.bin", &[0u8; 5000]);
    let bytes = zip_with_offsets(
        &[ZipEntry::file("SKILL.md", &skill_md("evil")), a, b],
        &[(2, 1)],
    );
    assert_refused(&bytes, &limits(), "corrupt");
}

#[test]
fn zip_encrypted_entry() {
    let mut e = ZipEntry::file("secret.txt", b"x");
    e.flags = 1;
    assert_refused(&zip_after_skill(vec![e]), &limits(), "encrypted_entry");
}

#[test]
fn zip_unsupported_compression_method() {
    let mut e = ZipEntry::file("x.bz2", b"x");
    e.method = 12; // bzip2
    assert_refused(
        &zip_after_skill(vec![e]),
        &limits(),
        "unsupported_compression",
    );
}

#[test]
fn zip_truncated_before_central_directory() {
    let mut bytes = zip_after_skill(vec![ZipEntry::file("a.txt", &[3u8; 3000])]);
    bytes.truncate(bytes.len() / 2);
    assert_refused(&bytes, &limits(), "corrupt");
}

#[test]
fn zip_crc_mismatch() {
    let mut e = ZipEntry::file("a.txt", b"hello");
    e.crc ^= 1;
    assert_refused(&zip_after_skill(vec![e]), &limits(), "corrupt");
}

// ------------------------------------------------------------------ format and input

#[test]
fn unsupported_format() {
    assert_refused(b"%PDF-1.7\n...", &limits(), "unsupported_format");
}

#[test]
fn archive_larger_than_limit() {
    let small = Limits {
        archive_bytes: 4096,
        ..Limits::default()
    };
    let bytes = tar_after_skill(|t| t.file("pad.bin", &[0u8; 8192]));
    assert_refused(&bytes, &small, "archive_too_large");
}

// ------------------------------------------------------------------ manifest

#[test]
fn missing_skill_md() {
    let bytes = Tar::new().file("README.md", b"hi").finish();
    assert_refused(&bytes, &limits(), "missing_skill_md");
}

#[test]
fn skill_md_over_1_mib() {
    let mut md = skill_md("big");
    md.extend(vec![b'x'; 1 << 20]);
    let bytes = Tar::new().file("SKILL.md", &md).finish();
    assert_refused(&bytes, &limits(), "skill_md_too_large");
}

#[test]
fn skill_md_billion_laughs() {
    let mut yaml = String::from("---\nname: lol\ndescription: d\nmetadata:\n  l0: &l0 \"lol\"\n");
    for i in 1..12 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        yaml.push_str(&format!("  l{i}: &l{i} [{refs}]\n"));
    }
    yaml.push_str("---\n");
    let bytes = Tar::new().file("SKILL.md", yaml.as_bytes()).finish();
    assert_refused(&bytes, &limits(), "invalid_yaml");
}

#[test]
fn skill_name_differs_from_top_folder() {
    let bytes = Tar::new()
        .dir("folder-name")
        .file("folder-name/SKILL.md", &skill_md("other-name"))
        .finish();
    assert_refused(&bytes, &limits(), "name_mismatch");
}

#[test]
fn skill_md_unknown_top_level_key() {
    let md = b"---\nname: x\ndescription: d\nversion: 1.0\n---\n";
    assert_refused(
        &Tar::new().file("SKILL.md", md).finish(),
        &limits(),
        "unknown_field",
    );
}

#[test]
fn verify_runtime_not_in_the_list() {
    let md = b"---\nname: x\ndescription: d\nmetadata:\n  verify-test: ./run\n  verify-runtime: ruby\n---\n";
    assert_refused(
        &Tar::new().file("SKILL.md", md).finish(),
        &limits(),
        "invalid_runtime",
    );
}

#[test]
fn verify_timeout_not_a_positive_integer() {
    let md = b"---\nname: x\ndescription: d\nmetadata:\n  verify-timeout: \"-5\"\n---\n";
    assert_refused(
        &Tar::new().file("SKILL.md", md).finish(),
        &limits(),
        "invalid_timeout",
    );
}

#[test]
fn tar_drive_prefix_below_the_skill_folder() {
    // Found by cargo fuzz: `s/C:x/...` is fine as stored, but the skill root `s/` makes
    // `C:x` the first component of the normalised tar's path.
    let bytes = Tar::new()
        .file("s/SKILL.md", &skill_md("s"))
        .file("s/C:x/a.txt", b"a")
        .finish();
    assert_refused(&bytes, &limits(), "windows_prefix");
}
