//! Shared helpers for the package tests: archives built byte by byte (so hostile shapes that
//! no well-behaved library would write can be expressed), and a sandbox that proves a
//! refused package left nothing behind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use skill_verifier::package::{self, Limits, Package, PackageError};

// ---------------------------------------------------------------- tar

/// A raw tar writer: every header field is under the test's control.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
}

/// Tar type flags.
pub mod kind {
    pub const FILE: u8 = b'0';
    pub const HARDLINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const LONGNAME: u8 = b'L';
    pub const PAX: u8 = b'x';
    pub const PAX_GLOBAL: u8 = b'g';
    pub const SPARSE: u8 = b'S';
    pub const VOLUME: u8 = b'V';
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// A header block (ustar magic, name truncated to 100 bytes) with `size` declared.
    pub fn header(name: &[u8], typeflag: u8, mode: u32, size: u64, link: &[u8]) -> [u8; 512] {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 1000);
        octal(&mut h[116..124], 1000);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        Self::fix_checksum(&mut h);
        h
    }

    pub fn fix_checksum(h: &mut [u8; 512]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
    }

    /// Appends a raw block.
    pub fn raw(mut self, block: &[u8]) -> Self {
        self.out.extend_from_slice(block);
        self
    }

    fn data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// An entry of any type with its data.
    pub fn entry(mut self, name: &[u8], typeflag: u8, mode: u32, data: &[u8]) -> Self {
        let h = Self::header(name, typeflag, mode, data.len() as u64, b"");
        self.out.extend_from_slice(&h);
        self.data(data);
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), kind::FILE, 0o644, data)
    }

    pub fn exec(self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), kind::FILE, 0o755, data)
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(name.as_bytes(), kind::DIR, 0o755, b"")
    }

    /// A link entry (symlink or hard link) pointing at `target`.
    pub fn link(mut self, name: &str, typeflag: u8, target: &str) -> Self {
        let h = Self::header(name.as_bytes(), typeflag, 0o777, 0, target.as_bytes());
        self.out.extend_from_slice(&h);
        self
    }

    /// A GNU long-name record followed by a file entry whose real name it carries.
    pub fn long_name_file(self, name: &[u8], data: &[u8]) -> Self {
        let mut long = name.to_vec();
        long.push(0);
        self.entry(b"././@LongLink", kind::LONGNAME, 0o644, &long)
            .entry(b"placeholder", kind::FILE, 0o644, data)
    }

    /// A PAX extended header with the given records, followed by a file entry.
    pub fn pax_file(self, records: &[(&str, &[u8])], header_name: &str, data: &[u8]) -> Self {
        let body = pax_records(records);
        self.entry(b"PaxHeader", kind::PAX, 0o644, &body).entry(
            header_name.as_bytes(),
            kind::FILE,
            0o644,
            data,
        )
    }

    /// Two zero blocks: the end-of-archive marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        self.out
    }

    /// The bytes so far, without an end-of-archive marker.
    pub fn unfinished(self) -> Vec<u8> {
        self.out
    }
}

/// Encodes PAX records (`"<len> key=value\n"`).
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body_len = 1 + key.len() + 1 + value.len() + 1;
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// gzip of `data`.
pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// gzip of `data` at the best compression level.
pub fn gz_best(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Raw deflate of `data`.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A raw deflate stream of `len` zero bytes, written directly with fixed Huffman codes
/// (one literal 0, then <length 258, distance 1> repeats): ~13 bits per 258 bytes, so
/// 1 GiB costs ~6.8 MB and no time to build.
pub fn deflate_zeros(len: u64) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, bits: u32) {
            self.acc |= value << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes go most significant bit first.
        fn code(&mut self, code: u64, bits: u32) {
            let mut rev = 0;
            for i in 0..bits {
                rev |= ((code >> i) & 1) << (bits - 1 - i);
            }
            self.put(rev, bits);
        }
    }
    let mut b = Bits {
        out: Vec::with_capacity((len / 150) as usize),
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    let mut left = len;
    if left > 0 {
        b.code(0x30, 8); // literal 0
        left -= 1;
    }
    while left >= 258 {
        b.code(0xC5, 8); // length code 285 = 258
        b.code(0, 5); // distance code 0 = 1
        left -= 258;
    }
    for _ in 0..left {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block
    b.put(0, 7); // flush
    b.out
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

// ---------------------------------------------------------------- zip

/// One zip entry, with every field the tests lie about.
#[derive(Clone)]
pub struct ZipEntry {
    pub name: Vec<u8>,
    /// 0 stored, 8 deflate, anything else as given.
    pub method: u16,
    /// Bytes as stored (already compressed for method 8).
    pub stored: Vec<u8>,
    pub crc: u32,
    pub uncompressed: u64,
    /// Unix mode including the type bits, e.g. `0o100644`.
    pub mode: u32,
    pub flags: u16,
}

impl ZipEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            method: 8,
            stored: deflate(data),
            crc: crc32(data),
            uncompressed: data.len() as u64,
            mode: 0o100644,
            flags: 0,
        }
    }

    pub fn exec(name: &str, data: &[u8]) -> Self {
        Self {
            mode: 0o100755,
            ..Self::file(name, data)
        }
    }

    pub fn dir(name: &str) -> Self {
        Self {
            name: name.as_bytes().to_vec(),
            method: 0,
            stored: Vec::new(),
            crc: 0,
            uncompressed: 0,
            mode: 0o40755,
            flags: 0,
        }
    }

    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            method: 0,
            mode: 0o120777,
            ..Self::file(name, target.as_bytes())
        }
        .stored_as_is(target.as_bytes())
    }

    fn stored_as_is(mut self, data: &[u8]) -> Self {
        self.method = 0;
        self.stored = data.to_vec();
        self.crc = crc32(data);
        self.uncompressed = data.len() as u64;
        self
    }

    pub fn raw_name(mut self, name: &[u8]) -> Self {
        self.name = name.to_vec();
        self
    }
}

/// Writes a zip (no zip64): local headers + data, central directory, end record.
/// `overlap_with` lets central entries point at an earlier local header.
pub fn zip(entries: &[ZipEntry]) -> Vec<u8> {
    zip_with_offsets(entries, &[])
}

/// Like [`zip`], but central entry `i` may point at the local header of entry
/// `offsets[i]` (for overlapping-entry bombs).
pub fn zip_with_offsets(entries: &[ZipEntry], offsets: &[(usize, usize)]) -> Vec<u8> {
    fn u16le(v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn u32le(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    const TIME: u16 = 0;
    const DATE: u16 = (40 << 9) | (1 << 5) | 1;
    let mut out = Vec::new();
    let mut local_offsets = Vec::new();
    for e in entries {
        local_offsets.push(out.len() as u32);
        u32le(&mut out, 0x0403_4b50);
        u16le(&mut out, 20);
        u16le(&mut out, e.flags);
        u16le(&mut out, e.method);
        u16le(&mut out, TIME);
        u16le(&mut out, DATE);
        u32le(&mut out, e.crc);
        u32le(&mut out, e.stored.len() as u32);
        u32le(&mut out, e.uncompressed as u32);
        u16le(&mut out, e.name.len() as u16);
        u16le(&mut out, 0);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.stored);
    }
    let cd_start = out.len() as u32;
    for (i, e) in entries.iter().enumerate() {
        let target = offsets
            .iter()
            .find(|(from, _)| *from == i)
            .map_or(i, |(_, to)| *to);
        u32le(&mut out, 0x0201_4b50);
        u16le(&mut out, (3 << 8) | 20); // made by Unix
        u16le(&mut out, 20);
        u16le(&mut out, e.flags);
        u16le(&mut out, e.method);
        u16le(&mut out, TIME);
        u16le(&mut out, DATE);
        u32le(&mut out, e.crc);
        u32le(&mut out, e.stored.len() as u32);
        u32le(&mut out, e.uncompressed as u32);
        u16le(&mut out, e.name.len() as u16);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u32le(&mut out, e.mode << 16);
        u32le(&mut out, local_offsets[target]);
        out.extend_from_slice(&e.name);
    }
    let cd_len = out.len() as u32 - cd_start;
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, entries.len() as u16);
    u16le(&mut out, entries.len() as u16);
    u32le(&mut out, cd_len);
    u32le(&mut out, cd_start);
    u16le(&mut out, 0);
    out
}

// ---------------------------------------------------------------- skills

/// A minimal valid `SKILL.md` for `name`.
pub fn skill_md(name: &str) -> Vec<u8> {
    format!("---\nname: {name}\ndescription: A test skill.\n---\n# {name}\n").into_bytes()
}

// ---------------------------------------------------------------- sandbox

/// A fresh temp root holding the archive, an `outside/` directory with a victim file that
/// attacks aim at, and the (not yet existing) output tar. [`World::snapshot`] records every
/// path, type, mode and content under the root so a test can prove nothing changed.
pub struct World {
    pub temp: tempfile::TempDir,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<PathBuf, String>);

impl World {
    pub fn new() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("pkg-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(temp.path().join("outside")).unwrap();
        std::fs::write(temp.path().join("outside/victim.txt"), b"original").unwrap();
        Self { temp }
    }

    pub fn root(&self) -> &Path {
        self.temp.path()
    }

    pub fn outside(&self) -> PathBuf {
        self.root().join("outside")
    }

    /// Where the normalised tar goes.
    pub fn tar_out(&self) -> PathBuf {
        self.root().join("out.tar")
    }

    pub fn archive(&self, bytes: &[u8]) -> PathBuf {
        let p = self.root().join("upload.bin");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut map = BTreeMap::new();
        let mut stack = vec![self.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for item in std::fs::read_dir(&dir).unwrap() {
                let item = item.unwrap();
                let path = item.path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let mode = meta.permissions().mode();
                let desc = if meta.is_dir() {
                    stack.push(path.clone());
                    format!("dir {mode:o}")
                } else if meta.file_type().is_symlink() {
                    format!("link -> {:?}", std::fs::read_link(&path).unwrap())
                } else {
                    let content = std::fs::read(&path).unwrap();
                    format!("file {mode:o} {}", hex::encode(sha2_of(&content)))
                };
                map.insert(path, desc);
            }
        }
        Snapshot(map)
    }
}

fn sha2_of(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Reads `bytes` as a package in a fresh [`World`] and asserts it is refused with `code`,
/// that no output tar (nor anything else: no spool, no partial file) was written, and that
/// nothing under the temp root changed. Returns the error for further checks.
pub fn assert_refused(bytes: &[u8], limits: &Limits, code: &str) -> PackageError {
    let world = World::new();
    let input = world.archive(bytes);
    let before = world.snapshot();
    let result = package::read(&input, &world.tar_out(), limits);
    let err = match result {
        Ok(p) => panic!("expected {code}, but the package loaded: {:?}", p.manifest),
        Err(e) => e,
    };
    assert_eq!(err.code(), code, "wrong refusal: {err}");
    assert!(
        err.is_invalid_package(),
        "{err} should be the package's fault"
    );
    assert!(!world.tar_out().exists(), "output left behind after {code}");
    assert_eq!(world.snapshot(), before, "file system changed after {code}");
    let root = world.root().to_path_buf();
    drop(world);
    assert!(!root.exists(), "temp root not removed");
    err
}

/// Reads `bytes` in a fresh world and returns the package and the world (kept alive).
/// Asserts that the only thing written is the output tar.
pub fn load_ok(bytes: &[u8], limits: &Limits) -> (Package, World) {
    let world = World::new();
    let input = world.archive(bytes);
    let before = world.snapshot();
    let pkg = package::read(&input, &world.tar_out(), limits)
        .unwrap_or_else(|e| panic!("package refused: {e}"));
    let mut after = world.snapshot();
    assert!(after.0.remove(&world.tar_out()).is_some(), "no output tar");
    assert_eq!(
        after, before,
        "something besides the output tar was written"
    );
    (pkg, world)
}

/// One entry of a normalised tar, as read back with the `tar` crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarItem {
    /// `'d'` or `'f'`.
    pub kind: char,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Reads a normalised tar back, in its order, asserting the fixed metadata on every entry.
pub fn tar_items(path: &Path) -> Vec<(String, TarItem)> {
    use std::io::Read;
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            other => panic!("unexpected entry type {other:?}"),
        };
        let mode = h.mode().unwrap();
        let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((path, TarItem { kind, mode, data }));
    }
    out
}

/// The files of a package's tar: path -> (mode, content).
pub fn tar_files(pkg: &Package) -> BTreeMap<String, (u32, Vec<u8>)> {
    tar_items(&pkg.tar.path)
        .into_iter()
        .filter(|(_, i)| i.kind == 'f')
        .map(|(p, i)| (p, (i.mode, i.data)))
        .collect()
}
