//! The YARA-X rule pack: the built-in `rules/*.yar` (embedded in the binary) plus operator rule
//! files, compiled once, and the digest that names the pack in attestations.
//!
//! ## Rule contract
//! Every rule must carry three metadata strings: `category` (a [`Category`] name), `severity`
//! (`info|low|medium|high|critical`) and `message`. The rule identifier is the finding's
//! stable `code`, so identifiers must be unique across the whole pack (built-in and operator
//! files alike). A rule file that does not compile, or a rule that breaks this contract, stops
//! start-up with the file, the line and the reason.
//!
//! Rules see four external variables describing the file being scanned: `file_name` (path
//! relative to the skill root), `is_skill_md`, `is_markdown` (`.md`, `.markdown`, `.txt`,
//! `.rst`) and `is_script` (a script extension or a `#!` first line). Rules use them to tell
//! an instruction in prose from the same words in code.
//!
//! ## Digest (`predicate.policy.rules_sha256`)
//! The SHA-256 of the text formed by the lowercase hex SHA-256 of each rule file followed by
//! `\n`, in load order: the built-in files in byte order of their names, then the operator's
//! `[scan] rules` in configured order. From a checkout:
//! `sha256sum rules/*.yar /etc/extra.yar | cut -d' ' -f1 | sha256sum` (with `LC_ALL=C`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::native::FileKind;
use super::{text, Category, Finding, ScanError, ScanLimits, Severity};
use crate::digest::Sha256Digest;

/// The built-in rule files, in load order (byte order of their names). A unit test checks
/// this list against `rules/`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "credential_harvest.yar",
        include_str!("../../rules/credential_harvest.yar"),
    ),
    (
        "destructive.yar",
        include_str!("../../rules/destructive.yar"),
    ),
    (
        "download_exec.yar",
        include_str!("../../rules/download_exec.yar"),
    ),
    (
        "encoded_exec.yar",
        include_str!("../../rules/encoded_exec.yar"),
    ),
    (
        "exfiltration.yar",
        include_str!("../../rules/exfiltration.yar"),
    ),
    ("malware.yar", include_str!("../../rules/malware.yar")),
    (
        "obfuscation.yar",
        include_str!("../../rules/obfuscation.yar"),
    ),
    (
        "persistence.yar",
        include_str!("../../rules/persistence.yar"),
    ),
    (
        "prompt_injection.yar",
        include_str!("../../rules/prompt_injection.yar"),
    ),
    (
        "remote_access.yar",
        include_str!("../../rules/remote_access.yar"),
    ),
    (
        "remote_instruction.yar",
        include_str!("../../rules/remote_instruction.yar"),
    ),
    ("secrets.yar", include_str!("../../rules/secrets.yar")),
];

/// One rule's metadata, as the findings and SARIF show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMeta {
    /// The rule identifier: the finding code.
    pub code: String,
    /// Its category.
    pub category: Category,
    /// Its severity.
    pub severity: Severity,
    /// Its message.
    pub message: String,
    /// The file it came from (`builtin:<name>` or the operator's path).
    pub source: String,
}

/// The compiled pack.
pub struct RulePack {
    rules: yara_x::Rules,
    meta: BTreeMap<String, RuleMeta>,
    sha256: Sha256Digest,
    files: Vec<String>,
}

/// The pack's sources in load order, built-in first: `(origin, text)`.
fn sources(extra: &[PathBuf]) -> Result<Vec<(String, String)>, ScanError> {
    let mut sources: Vec<(String, String)> = BUILTIN
        .iter()
        .map(|(name, text)| (format!("builtin:{name}"), (*text).to_string()))
        .collect();
    for path in extra {
        let text = std::fs::read_to_string(path).map_err(|source| ScanError::ReadRules {
            path: path.clone(),
            source,
        })?;
        sources.push((path.display().to_string(), text));
    }
    Ok(sources)
}

impl RulePack {
    /// Compiles the built-in files and then `extra`, in that order.
    pub fn load(extra: &[PathBuf]) -> Result<RulePack, ScanError> {
        let sources = sources(extra)?;
        RulePack::compile(&sources)
    }

    /// Like [`RulePack::load`], but reuses compiled rules serialized under `cache_dir` (keyed
    /// by the pack digest and the YARA-X version), so a short-lived process such as `scan`
    /// skips compilation. A missing, unreadable or stale cache entry is compiled afresh and
    /// rewritten (atomically); a cache entry never changes which rules apply, because its key
    /// is the digest of the sources.
    pub fn load_cached(
        extra: &[PathBuf],
        cache_dir: &std::path::Path,
    ) -> Result<RulePack, ScanError> {
        let sources = sources(extra)?;
        let key = format!(
            "rules-{}-yarax{}-{}.bin",
            pack_digest(&sources).to_hex(),
            YARA_X_VERSION,
            crate::VERSION
        );
        let file = cache_dir.join(key);
        if let Ok(bytes) = std::fs::read(&file) {
            if let Ok(rules) = yara_x::Rules::deserialize(&bytes) {
                if let Ok(pack) = RulePack::from_rules(rules, &sources) {
                    return Ok(pack);
                }
            }
        }
        let pack = RulePack::compile(&sources)?;
        if let Ok(bytes) = pack.rules.serialize() {
            let _ = std::fs::create_dir_all(cache_dir);
            let tmp = cache_dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
            if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &file).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(pack)
    }

    /// Compiles `(label, text)` rule sources in order.
    pub fn compile(sources: &[(String, String)]) -> Result<RulePack, ScanError> {
        let mut compiler = yara_x::Compiler::new();
        for (name, default) in [
            ("file_name", ""),
            ("is_skill_md", "false"),
            ("is_markdown", "false"),
            ("is_script", "false"),
        ] {
            let defined = if default.is_empty() {
                compiler.define_global(name, "")
            } else {
                compiler.define_global(name, false)
            };
            defined.expect("fresh globals are valid");
        }
        for (i, (label, text)) in sources.iter().enumerate() {
            compiler.new_namespace(&format!("f{i}"));
            if let Err(err) = compiler.add_source(text.as_str()) {
                let line = err
                    .labels()
                    .next()
                    .map(|l| text::line_of(text.as_bytes(), l.span().start()) as usize)
                    .unwrap_or(1);
                return Err(ScanError::BadRule {
                    path: label.clone(),
                    line,
                    reason: err.title().to_string(),
                });
            }
        }
        RulePack::from_rules(compiler.build(), sources)
    }

    /// Validates the metadata of compiled `rules` (from `sources`) and builds the pack.
    fn from_rules(
        rules: yara_x::Rules,
        sources: &[(String, String)],
    ) -> Result<RulePack, ScanError> {
        let mut meta = BTreeMap::new();
        for rule in rules.iter() {
            let file: usize = rule.namespace()[1..].parse().expect("our namespace names");
            let (label, text) = &sources[file];
            let line = rule_line(text, rule.identifier());
            let bad = |reason: String| ScanError::BadRule {
                path: label.clone(),
                line,
                reason,
            };
            let mut fields: BTreeMap<&str, String> = BTreeMap::new();
            for (key, value) in rule.metadata() {
                match value {
                    yara_x::MetaValue::String(s) => {
                        fields.insert(key, s.to_string());
                    }
                    // Strings with escape sequences come back as bytes.
                    yara_x::MetaValue::Bytes(b) => {
                        fields.insert(key, String::from_utf8_lossy(b).into_owned());
                    }
                    _ => {}
                }
            }
            let get = |key: &str| {
                fields.get(key).cloned().ok_or_else(|| {
                    bad(format!(
                        "rule `{}` lacks the string metadata `{key}`",
                        rule.identifier()
                    ))
                })
            };
            let category = get("category")?;
            let category = Category::parse(&category)
                .ok_or_else(|| bad(format!("unknown category `{category}`")))?;
            let severity = get("severity")?;
            let severity = Severity::parse(&severity)
                .ok_or_else(|| bad(format!("unknown severity `{severity}`")))?;
            let message = get("message")?;
            let code = rule.identifier().to_string();
            if meta.contains_key(&code) || super::native::is_native_code(&code) {
                return Err(bad(format!(
                    "rule `{code}` is already defined (rule identifiers are finding codes and \
                     must be unique)"
                )));
            }
            meta.insert(
                code.clone(),
                RuleMeta {
                    code,
                    category,
                    severity,
                    message,
                    source: label.clone(),
                },
            );
        }
        Ok(RulePack {
            rules,
            meta,
            sha256: pack_digest(sources),
            files: sources.iter().map(|(l, _)| l.clone()).collect(),
        })
    }

    /// The pack's digest (module docs).
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.meta.len()
    }

    /// Every rule's metadata, by code.
    pub fn rules(&self) -> impl Iterator<Item = &RuleMeta> {
        self.meta.values()
    }

    /// The files compiled, in load order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// A YARA-X scanner over this pack for one scan.
    pub(crate) fn scanner(&self, limits: ScanLimits) -> FileScanner<'_> {
        let mut scanner = yara_x::Scanner::new(&self.rules);
        scanner.set_timeout(Duration::from_millis(limits.yara_timeout_ms.max(1)));
        // One finding per rule per file is kept; a few matches per pattern are enough to
        // find the first, and bound the work on a file full of matches.
        scanner.max_matches_per_pattern(8);
        FileScanner {
            scanner,
            pack: self,
        }
    }
}

/// The YARA-X version compiled rules are serialized with (part of the cache key).
const YARA_X_VERSION: &str = "1.22.1";

/// The pack digest (module docs) of `(label, text)` sources.
fn pack_digest(sources: &[(String, String)]) -> Sha256Digest {
    let mut text = String::new();
    for (_, body) in sources {
        text.push_str(&Sha256Digest::of(body.as_bytes()).to_hex());
        text.push('\n');
    }
    Sha256Digest::of(text.as_bytes())
}

/// The 1-based line of `rule <ident>` in `text` (1 when not found).
fn rule_line(text: &str, ident: &str) -> usize {
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "rule" {
                if let Some(name) = words.next() {
                    if name.trim_end_matches(['{', ':']) == ident {
                        return i + 1;
                    }
                }
            }
        }
    }
    1
}

/// A YARA-X scanner bound to the pack, reused across the files of one package.
pub(crate) struct FileScanner<'r> {
    scanner: yara_x::Scanner<'r>,
    pack: &'r RulePack,
}

impl FileScanner<'_> {
    /// Runs the rules over `bytes` of `path`, appending one finding per matching rule. With
    /// `decoded_at`, `bytes` is a payload decoded from the line `decoded_at` of `path`.
    pub(crate) fn scan(
        &mut self,
        path: &str,
        kind: FileKind,
        bytes: &[u8],
        decoded_at: Option<u64>,
        out: &mut Vec<Finding>,
    ) {
        let globals = [
            ("is_skill_md", path == "SKILL.md"),
            ("is_markdown", kind == FileKind::Markdown),
            ("is_script", kind == FileKind::Script),
        ];
        for (var, value) in globals {
            self.scanner
                .set_global(var, value)
                .expect("globals defined at compile time");
        }
        self.scanner
            .set_global("file_name", path)
            .expect("globals defined at compile time");
        let results = match self.scanner.scan(bytes) {
            Ok(results) => results,
            Err(yara_x::errors::ScanError::Timeout) => {
                out.push(coverage(
                    "scan_timeout",
                    path,
                    "the rule scan of this file hit its timeout; rule findings may be missing",
                ));
                return;
            }
            Err(e) => {
                out.push(coverage(
                    "scan_error",
                    path,
                    &format!("the rule scan of this file failed: {e}"),
                ));
                return;
            }
        };
        for rule in results.matching_rules() {
            let Some(meta) = self.pack.meta.get(rule.identifier()) else {
                continue;
            };
            let mut first: Option<std::ops::Range<usize>> = None;
            let mut count = 0usize;
            for pattern in rule.patterns() {
                for m in pattern.matches() {
                    count += 1;
                    let r = m.range();
                    if first.as_ref().is_none_or(|f| r.start < f.start) {
                        first = Some(r);
                    }
                }
            }
            let (line, excerpt) = match &first {
                Some(r) => (
                    text::line_of(bytes, r.start),
                    text::excerpt(bytes, r.start, r.end),
                ),
                None => (1, String::new()),
            };
            let mut message = meta.message.clone();
            if count > 1 {
                message.push_str(&format!(" ({count} matches)"));
            }
            let line = match decoded_at {
                Some(at) => {
                    message.push_str(" [inside a base64 payload decoded from this line]");
                    at
                }
                None => line,
            };
            out.push(Finding {
                code: meta.code.clone(),
                category: meta.category,
                severity: meta.severity,
                message,
                path: path.to_string(),
                line: first.is_some().then_some(line),
                excerpt,
            });
        }
    }
}

fn coverage(code: &str, path: &str, message: &str) -> Finding {
    Finding {
        code: code.into(),
        category: Category::Coverage,
        severity: Severity::Medium,
        message: message.into(),
        path: path.into(),
        line: None,
        excerpt: String::new(),
    }
}

/// SHA-256 of the built-in rule files alone (what `rules_sha256` is with no operator rules).
pub fn builtin_sha256() -> Sha256Digest {
    let mut text = String::new();
    for (_, body) in BUILTIN {
        text.push_str(&hex::encode(Sha256::digest(body.as_bytes())));
        text.push('\n');
    }
    Sha256Digest::of(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_matches_the_rules_folder_in_byte_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".yar"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed, on_disk);
    }

    #[test]
    fn builtin_pack_compiles_and_every_rule_has_metadata() {
        let pack = RulePack::load(&[]).unwrap();
        assert!(pack.rule_count() >= 40, "{}", pack.rule_count());
        assert_eq!(pack.sha256(), builtin_sha256());
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let src = vec![(
            "extra.yar".to_string(),
            "rule ok {\n meta:\n  category = \"malware\"\n  severity = \"low\"\n  message = \"m\"\n condition: true }\n\nrule broken {\n condition:\n   $nope\n}\n".to_string(),
        )];
        match RulePack::compile(&src) {
            Err(ScanError::BadRule { path, line, reason }) => {
                assert_eq!(path, "extra.yar");
                assert_eq!(line, 10, "{reason}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("compiled"),
        }
    }

    #[test]
    fn missing_metadata_and_duplicate_codes_are_refused_with_the_line() {
        let src = vec![(
            "extra.yar".to_string(),
            "\n\nrule nometa { condition: true }\n".to_string(),
        )];
        let Err(ScanError::BadRule { line, reason, .. }) = RulePack::compile(&src) else {
            panic!("accepted")
        };
        assert_eq!(line, 3);
        assert!(reason.contains("category"), "{reason}");

        let rule = "rule twin {\n meta:\n  category = \"malware\"\n  severity = \"low\"\n  message = \"m\"\n condition: true }\n";
        let src = vec![
            ("a.yar".to_string(), rule.to_string()),
            ("b.yar".to_string(), rule.to_string()),
        ];
        let Err(ScanError::BadRule { path, reason, .. }) = RulePack::compile(&src) else {
            panic!("accepted")
        };
        assert_eq!(path, "b.yar");
        assert!(reason.contains("already defined"), "{reason}");

        let bad_sev = "rule s {\n meta:\n  category = \"malware\"\n  severity = \"huge\"\n  message = \"m\"\n condition: true }\n";
        let Err(ScanError::BadRule { reason, .. }) =
            RulePack::compile(&[("c.yar".to_string(), bad_sev.to_string())])
        else {
            panic!("accepted")
        };
        assert!(reason.contains("huge"), "{reason}");
    }
}
