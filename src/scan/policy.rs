//! The verdict policy: a TOML file (`[scan] policy`, `--policy`; the default is
//! `rules/policy.toml`, embedded) that maps findings to *block* or *record*, and the verdict
//! that combines it with the test result.
//!
//! ```toml
//! name = "my-registry"
//! version = "3"
//!
//! [severity]            # the base action of each severity (all five required)
//! critical = "block"
//! high = "block"
//! medium = "record"
//! low = "record"
//! info = "record"
//!
//! [category]            # overrides by category (optional)
//! obfuscation = "block"
//!
//! [rule]                # overrides by finding code (optional)
//! nested_archive = "record"
//!
//! [[allow]]             # per-rule allowances by path: matching findings only record
//! rule = "embedded_elf"
//! paths = ["bin/*", "vendor/**"]
//! reason = "ships a vetted static binary"
//! ```
//!
//! Precedence, most specific first: `allow` > `rule` > `category` > `severity`. Path patterns
//! match the finding's path relative to the skill root: `*` matches within one path
//! component, `**` across components, `?` one character.
//!
//! The policy's digest (`predicate.policy.sha256`) is the SHA-256 of the file's bytes exactly
//! as read (`sha256sum rules/policy.toml` for the default). A policy that does not parse, names
//! an unknown key, category or severity, or overrides a finding code that neither the rule
//! pack nor the native checks define, is refused with the file, the line and the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Category, Finding, RulePack, ScanError, Severity};
use crate::digest::Sha256Digest;

/// The default policy's text.
pub const DEFAULT_POLICY: &str = include_str!("../../rules/policy.toml");
/// The label the default policy is reported under.
pub const DEFAULT_POLICY_LABEL: &str = "builtin:policy.toml";
/// Most verdict reasons listed (the rest are counted in one last reason).
pub const MAX_REASONS: usize = 50;

/// What the policy does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Action {
    /// The finding fails the verdict.
    Block,
    /// The finding is attested, nothing more.
    Record,
}

impl TryFrom<String> for Action {
    type Error = String;

    fn try_from(s: String) -> Result<Action, String> {
        match s.as_str() {
            "block" => Ok(Action::Block),
            "record" => Ok(Action::Record),
            other => Err(format!(
                "unknown action `{other}` (expected `block` or `record`)"
            )),
        }
    }
}

/// `predicate.verdict.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum VerdictStatus {
    /// Tests did not fail and nothing blocking was found.
    Passed,
    /// Tests failed, or the policy blocks a finding.
    Failed,
}

impl VerdictStatus {
    /// `PASSED` / `FAILED`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictStatus::Passed => "PASSED",
            VerdictStatus::Failed => "FAILED",
        }
    }
}

/// One reason for a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// A finding code, or `tests_failed`.
    pub code: String,
    /// Human text (for a finding: `path:line: message`).
    pub message: String,
}

/// `predicate.verdict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    /// PASSED | FAILED.
    pub status: VerdictStatus,
    /// Why it failed (empty when it passed).
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    severity: BTreeMap<String, Action>,
    #[serde(default)]
    category: BTreeMap<String, Action>,
    #[serde(default)]
    rule: BTreeMap<String, Action>,
    #[serde(default)]
    allow: Vec<AllowFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowFile {
    rule: String,
    paths: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// A per-rule allowance by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// The finding code it applies to.
    pub rule: String,
    /// Path patterns.
    pub paths: Vec<String>,
    /// Why (documentation only).
    pub reason: Option<String>,
}

/// A loaded, validated verdict policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: String,
    /// `description`, if any.
    pub description: Option<String>,
    severity: BTreeMap<Severity, Action>,
    category: BTreeMap<Category, Action>,
    rule: BTreeMap<String, Action>,
    allow: Vec<Allowance>,
    sha256: Sha256Digest,
    label: String,
}

fn line_at(text: &str, offset: usize) -> usize {
    super::text::line_of(text.as_bytes(), offset) as usize
}

fn line_of_word(text: &str, word: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(word) || l.contains(&format!("\"{word}\""))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

impl Policy {
    /// The embedded default (`rules/policy.toml`).
    pub fn builtin(pack: &RulePack) -> Result<Policy, ScanError> {
        Policy::parse(DEFAULT_POLICY_LABEL, DEFAULT_POLICY, pack)
    }

    /// Reads and validates the policy at `path` against the rule pack.
    pub fn load(path: &Path, pack: &RulePack) -> Result<Policy, ScanError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScanError::ReadPolicy {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&path.display().to_string(), &text, pack)
    }

    /// `path` if given, else the default.
    pub fn load_or_builtin(path: Option<&Path>, pack: &RulePack) -> Result<Policy, ScanError> {
        match path {
            Some(p) => Policy::load(p, pack),
            None => Policy::builtin(pack),
        }
    }

    /// Parses policy `text` (reported as `label` in errors), checking every finding code it
    /// names against `pack` and the native checks.
    pub fn parse(label: &str, text: &str, pack: &RulePack) -> Result<Policy, ScanError> {
        let bad = |line: usize, reason: String| ScanError::BadPolicy {
            path: label.to_string(),
            line,
            reason,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_at(text, s.start)).unwrap_or(1);
            bad(line, e.message().to_string())
        })?;
        if file.name.trim().is_empty() {
            return Err(bad(line_of_word(text, "name"), "`name` is empty".into()));
        }
        let mut severity = BTreeMap::new();
        for (k, v) in &file.severity {
            let s = Severity::parse(k)
                .ok_or_else(|| bad(line_of_word(text, k), format!("unknown severity `{k}`")))?;
            severity.insert(s, *v);
        }
        if let Some(missing) = Severity::ALL.iter().find(|s| !severity.contains_key(s)) {
            return Err(bad(
                line_of_word(text, "[severity]"),
                format!("[severity] must give an action for `{}`", missing.as_str()),
            ));
        }
        let mut category = BTreeMap::new();
        for (k, v) in &file.category {
            let c = Category::parse(k)
                .ok_or_else(|| bad(line_of_word(text, k), format!("unknown category `{k}`")))?;
            category.insert(c, *v);
        }
        let known = |code: &str| {
            super::native::is_native_code(code)
                || pack.rules().any(|r| r.code == code)
                || super::PIPELINE_CODES.contains(&code)
        };
        for k in file.rule.keys() {
            if !known(k) {
                return Err(bad(
                    line_of_word(text, k),
                    format!("unknown finding code `{k}`"),
                ));
            }
        }
        let mut allow = Vec::new();
        for a in file.allow {
            if !known(&a.rule) {
                return Err(bad(
                    line_of_word(text, &a.rule),
                    format!("[[allow]] names an unknown finding code `{}`", a.rule),
                ));
            }
            if a.paths.is_empty() {
                return Err(bad(
                    line_of_word(text, &a.rule),
                    "[[allow]] needs at least one path pattern".into(),
                ));
            }
            allow.push(Allowance {
                rule: a.rule,
                paths: a.paths,
                reason: a.reason,
            });
        }
        Ok(Policy {
            name: file.name,
            version: file.version,
            description: file.description,
            severity,
            category,
            rule: file.rule,
            allow,
            sha256: Sha256Digest::of(text.as_bytes()),
            label: label.to_string(),
        })
    }

    /// SHA-256 of the policy file's bytes.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Where it was loaded from (`builtin:policy.toml` or a path).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What the policy does with `finding`.
    pub fn action(&self, finding: &Finding) -> Action {
        if self
            .allow
            .iter()
            .any(|a| a.rule == finding.code && a.paths.iter().any(|p| glob(p, &finding.path)))
        {
            return Action::Record;
        }
        if let Some(a) = self.rule.get(&finding.code) {
            return *a;
        }
        if let Some(a) = self.category.get(&finding.category) {
            return *a;
        }
        self.severity[&finding.severity]
    }

    /// The findings the policy blocks.
    pub fn blocking<'a>(&self, findings: &'a [Finding]) -> Vec<&'a Finding> {
        findings
            .iter()
            .filter(|f| self.action(f) == Action::Block)
            .collect()
    }

    /// The verdict: FAILED when `test_failure` is given or any finding blocks; the reasons
    /// list the test failure first, then each blocking finding (bounded by [`MAX_REASONS`]).
    pub fn verdict(&self, findings: &[Finding], test_failure: Option<Reason>) -> Verdict {
        let mut reasons: Vec<Reason> = test_failure.into_iter().collect();
        let blocking = self.blocking(findings);
        let total = blocking.len();
        for f in blocking.into_iter().take(MAX_REASONS) {
            let at = match f.line {
                Some(l) if !f.path.is_empty() => format!("{}:{l}: ", f.path),
                _ if !f.path.is_empty() => format!("{}: ", f.path),
                _ => String::new(),
            };
            reasons.push(Reason {
                code: f.code.clone(),
                message: format!("{at}{}", f.message),
            });
        }
        if total > MAX_REASONS {
            reasons.push(Reason {
                code: "more_blocking_findings".into(),
                message: format!("{} more blocking findings", total - MAX_REASONS),
            });
        }
        Verdict {
            status: if reasons.is_empty() {
                VerdictStatus::Passed
            } else {
                VerdictStatus::Failed
            },
            reasons,
        }
    }
}

/// Matches `path` against a pattern: `**` any run of characters, `*` any run without `/`,
/// `?` one character other than `/`. Linear-space dynamic programming, no backtracking blow-up.
pub fn glob(pattern: &str, path: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Any,
        AnyDirs,
        Star,
        One,
        Lit(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` also matches zero directories.
                if chars.peek() == Some(&'/') {
                    chars.next();
                    toks.push(Tok::AnyDirs);
                    continue;
                }
                toks.push(Tok::Any)
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            c => toks.push(Tok::Lit(c)),
        }
    }
    let path: Vec<char> = path.chars().collect();
    let n = path.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    for tok in toks {
        let mut next = vec![false; n + 1];
        match tok {
            Tok::AnyDirs => {
                // Zero or more whole directories: from a reachable position, every later
                // position just after a `/`.
                let mut reach = false;
                for j in 0..=n {
                    if cur[j] {
                        reach = true;
                        next[j] = true;
                    }
                    if reach && j > 0 && path[j - 1] == '/' {
                        next[j] = true;
                    }
                }
            }
            Tok::Any => {
                let mut reach = false;
                for j in 0..=n {
                    reach |= cur[j];
                    next[j] = reach;
                }
            }
            Tok::Star => {
                let mut reach = false;
                for j in 0..=n {
                    if cur[j] {
                        reach = true;
                    }
                    next[j] = reach;
                    if j < n && path[j] == '/' {
                        reach = false;
                    }
                }
            }
            Tok::One => {
                for j in 0..n {
                    if cur[j] && path[j] != '/' {
                        next[j + 1] = true;
                    }
                }
            }
            Tok::Lit(c) => {
                for j in 0..n {
                    if cur[j] && path[j] == c {
                        next[j + 1] = true;
                    }
                }
            }
        }
        cur = next;
    }
    cur[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack() -> RulePack {
        RulePack::load(&[]).unwrap()
    }

    fn f(code: &str, category: Category, severity: Severity, path: &str) -> Finding {
        Finding {
            code: code.into(),
            category,
            severity,
            message: "m".into(),
            path: path.into(),
            line: Some(3),
            excerpt: String::new(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("assets/*", "assets/a.bin"));
        assert!(!glob("assets/*", "assets/x/a.bin"));
        assert!(glob("assets/**", "assets/x/a.bin"));
        assert!(glob("**/*.bin", "a.bin"));
        assert!(glob("**/*.bin", "x/y/a.bin"));
        assert!(glob("scripts/?.sh", "scripts/a.sh"));
        assert!(!glob("scripts/?.sh", "scripts/ab.sh"));
        assert!(!glob("*.sh", "x/a.sh"));
        // No exponential backtracking.
        let p = "*a".repeat(30) + "b";
        assert!(!glob(&p, &"a".repeat(5000)));
    }

    #[test]
    fn default_policy_loads_and_blocks_high_and_critical() {
        let p = Policy::builtin(&pack()).unwrap();
        assert_eq!(p.sha256(), Sha256Digest::of(DEFAULT_POLICY.as_bytes()));
        let high = f(
            "embedded_elf",
            Category::Executable,
            Severity::High,
            "bin/x",
        );
        let med = f(
            "nested_archive",
            Category::Archive,
            Severity::Medium,
            "a.zip",
        );
        assert_eq!(p.action(&high), Action::Block);
        assert_eq!(p.action(&med), Action::Record);
        let v = p.verdict(&[high.clone(), med], None);
        assert_eq!(v.status, VerdictStatus::Failed);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].code, "embedded_elf");
        assert_eq!(v.reasons[0].message, "bin/x:3: m");
        let v = p.verdict(&[], None);
        assert_eq!(v.status, VerdictStatus::Passed);
        let v = p.verdict(
            &[],
            Some(Reason {
                code: "tests_failed".into(),
                message: "exit 1".into(),
            }),
        );
        assert_eq!(v.status, VerdictStatus::Failed);
    }

    #[test]
    fn precedence_allow_rule_category_severity() {
        let text = r#"
name = "t"
version = "1"
[severity]
critical = "block"
high = "block"
medium = "record"
low = "record"
info = "record"
[category]
archive = "block"
[rule]
embedded_elf = "record"
[[allow]]
rule = "nested_archive"
paths = ["vendor/**"]
"#;
        let p = Policy::parse("t.toml", text, &pack()).unwrap();
        assert_eq!(
            p.action(&f(
                "embedded_elf",
                Category::Executable,
                Severity::High,
                "x"
            )),
            Action::Record
        );
        assert_eq!(
            p.action(&f(
                "nested_archive",
                Category::Archive,
                Severity::Medium,
                "a.zip"
            )),
            Action::Block
        );
        assert_eq!(
            p.action(&f(
                "nested_archive",
                Category::Archive,
                Severity::Medium,
                "vendor/a/b.zip"
            )),
            Action::Record
        );
    }

    #[test]
    fn bad_policies_name_the_line_and_reason() {
        let base = "name = \"t\"\nversion = \"1\"\n[severity]\ncritical = \"block\"\nhigh = \"block\"\nmedium = \"record\"\nlow = \"record\"\ninfo = \"record\"\n";
        let cases = [
            (
                format!("{base}[rule]\nno_such_rule = \"block\"\n"),
                10,
                "unknown finding code",
            ),
            (
                format!("{base}[category]\nnope = \"block\"\n"),
                10,
                "unknown category",
            ),
            (
                base.replace("high = \"block\"", "high = \"maybe\""),
                5,
                "unknown action `maybe`",
            ),
            (base.replace("info = \"record\"\n", ""), 3, "`info`"),
            (format!("colour = \"red\"\n{base}"), 1, "unknown field"),
            ("name = \n".to_string(), 1, ""),
        ];
        for (text, line, reason) in cases {
            match Policy::parse("p.toml", &text, &pack()) {
                Err(ScanError::BadPolicy {
                    path,
                    line: l,
                    reason: r,
                }) => {
                    assert_eq!(path, "p.toml");
                    assert_eq!(l, line, "{r}\n{text}");
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
