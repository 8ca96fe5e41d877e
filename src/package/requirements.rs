//! A strict parser for the `requirements.txt` of an uploaded (untrusted) skill package.
//!
//! A skill names *what* it needs; *where* it comes from is not its business: the index is
//! the operator's choice, not the skill's, and the verifier installs exactly what the file
//! names, from the operator's index only. So this parser accepts a small, explicit subset of
//! pip's format and refuses everything else with a message that names the file and the line
//! and quotes the offending text:
//!
//! - blank lines, `#` comment lines, trailing comments (a `#` after a space or tab, as in pip,
//!   even inside a quoted marker value), CRLF line ends and a leading UTF-8 BOM;
//! - `\` line continuations (a requirement's line is the one it starts on). A comment line
//!   ends a continuation, as in pip; continuing a line that has a trailing comment is refused,
//!   because pip would silently swallow the next line into the comment;
//! - the option line `--require-hashes`. Editable installs, index and find-links options,
//!   nested requirement or constraint files and every other option are refused;
//! - requirements `name[extra,...] specifier ; marker --hash=sha256:HEX --hash sha256:HEX`.
//!   The specifier is comma-separated `op version` clauses; the PEP 508 parenthesised form
//!   `name (>=1, <2)` is accepted and canonicalised without parentheses. A marker is a
//!   sequence of PEP 508 marker variables, `and`/`or`/`in`/`not`, comparison operators,
//!   parentheses and quoted strings; only sha256 hashes are accepted.
//!
//! URLs, direct references (`name @ url`), local paths and archive files are refused. A file
//! has at most 64 KiB, 500 requirements and 4096 bytes per logical line (whole-line comments
//! excepted); control characters other than tab are refused. A project listed twice with no
//! marker on either line is an error.
//!
//! [`Requirements::canonical`] renders the file normalised (no comments, single spaces, sorted
//! hashes and extras; specifier clauses keep their order, names their spelling); its
//! [`Requirements::digest`] keys what is to be installed. Policy is left to the caller: this
//! parser does not demand pins ([`Requirements::all_pinned`]) nor, under `--require-hashes`,
//! a hash on every line. Values built by deserialisation are not re-validated: parse the text
//! when it is untrusted.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use RequirementsError as E;

const MAX_FILE_BYTES: usize = 64 * 1024;
const MAX_REQUIREMENTS: usize = 500;
const MAX_LINE_BYTES: usize = 4096;
const MAX_NAME_LEN: usize = 100;
const MAX_VERSION_LEN: usize = 100;
const MAX_MARKER_LEN: usize = 200;
const MAX_QUOTED_CHARS: usize = 80;
/// Longest first, so that `===` wins over `==` and `<=` over `<`.
const OPERATORS: [&str; 8] = ["===", "==", "!=", "~=", "<=", ">=", "<", ">"];
const ARCHIVES: [&str; 6] = [".whl", ".tar.gz", ".zip", ".tgz", ".tar.bz2", ".tar.xz"];
/// PEP 508 marker variables (plus PEP 751's `extras` and `dependency_groups`) and keywords.
const MARKER_WORDS: &str = "python_version python_full_version os_name sys_platform \
    platform_release platform_system platform_version platform_machine \
    platform_python_implementation implementation_name implementation_version extra extras \
    dependency_groups and or in not";

/// One requirement line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// The project name as written (validated).
    pub name: String,
    /// PEP 503 normalised name: lowercase, runs of `-_.` replaced by `-`.
    pub normalized: String,
    /// Extras, normalised, sorted and deduplicated.
    pub extras: Vec<String>,
    /// Canonical specifier: clauses in file order joined by `,` without spaces; `""` if none.
    pub specifier: String,
    /// The environment marker after `;`, trimmed, whitespace runs collapsed to one space.
    pub marker: Option<String>,
    /// `sha256:<64 lowercase hex>` values from `--hash` options, sorted and deduplicated.
    pub hashes: Vec<String>,
    /// 1-based line number where the requirement starts.
    pub line: usize,
}

impl Requirement {
    /// An exact pin: exactly one clause, `==V` with no `*` wildcard, or `===V`.
    /// Returns the pinned version.
    pub fn pinned(&self) -> Option<&str> {
        let spec = self.specifier.as_str();
        if spec.contains(',') {
            None
        } else if let Some(version) = spec.strip_prefix("===") {
            Some(version)
        } else {
            spec.strip_prefix("==").filter(|v| !v.contains('*'))
        }
    }

    /// The canonical one-line form: `name[extras]specifier ; marker --hash=...`.
    pub fn to_line(&self) -> String {
        let mut out = self.name.clone();
        if !self.extras.is_empty() {
            let _ = write!(out, "[{}]", self.extras.join(","));
        }
        out.push_str(&self.specifier);
        if let Some(marker) = &self.marker {
            let _ = write!(out, " ; {marker}");
        }
        for hash in &self.hashes {
            let _ = write!(out, " --hash={hash}");
        }
        out
    }
}

/// A parsed `requirements.txt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// The file's path in the package, as given by the caller.
    pub path: String,
    /// The requirements in file order.
    pub items: Vec<Requirement>,
    /// `--require-hashes` is present, or some requirement has a hash.
    pub require_hashes: bool,
}

/// Where a [`RequirementsError`] is. Displays as `path line N: "text"`, the text being the
/// offending (logical) line truncated to 80 characters, with `"`, `\` and anything but
/// printable ASCII escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub line: usize,
    pub text: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}: \"{}\"", self.path, self.line, self.text)
    }
}

/// Why a `requirements.txt` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementsError {
    #[error("{path}: the file is {size} bytes; at most {MAX_FILE_BYTES} are accepted")]
    FileTooLarge { path: String, size: usize },
    #[error("{at}: control characters are not accepted")]
    ControlCharacter { at: Location },
    #[error("{at}: the logical line exceeds {MAX_LINE_BYTES} bytes")]
    LineTooLong { at: Location },
    #[error("{at}: more than {MAX_REQUIREMENTS} requirements")]
    TooManyRequirements { at: Location },
    #[error("{at}: editable installs (-e) are not accepted: {INDEX_ONLY}")]
    Editable { at: Location },
    #[error(
        "{at}: option {option} is not accepted: the index is the operator's choice, not the skill's"
    )]
    IndexOption { at: Location, option: String },
    #[error("{at}: option {option} is not accepted: nested requirement files are not supported")]
    NestedFile { at: Location, option: String },
    #[error("{at}: option {option} is not accepted")]
    UnsupportedOption { at: Location, option: String },
    #[error("{at}: --hash is only accepted after a requirement on the same line")]
    HashWithoutRequirement { at: Location },
    #[error("{at}: only sha256 hashes are accepted, not {algorithm}")]
    UnsupportedHash { at: Location, algorithm: String },
    #[error("{at}: URLs and local paths are not accepted: {INDEX_ONLY}")]
    UrlOrPath { at: Location },
    /// A syntax error; `what` is the part at fault ("project name", "extras", "version
    /// specifier", "marker", "hash", "option" or "line continuation").
    #[error("{at}: invalid {what}: {reason}")]
    Invalid {
        at: Location,
        what: &'static str,
        reason: String,
    },
    #[error("{at}: {name} is listed twice (lines {first} and {})", .at.line)]
    Duplicate {
        at: Location,
        name: String,
        first: usize,
    },
}

const INDEX_ONLY: &str = "the verifier installs from the operator's index only";

impl RequirementsError {
    /// The offending line, except for [`RequirementsError::FileTooLarge`].
    pub fn location(&self) -> Option<&Location> {
        match self {
            E::FileTooLarge { .. } => None,
            E::ControlCharacter { at }
            | E::LineTooLong { at }
            | E::TooManyRequirements { at }
            | E::Editable { at }
            | E::IndexOption { at, .. }
            | E::NestedFile { at, .. }
            | E::UnsupportedOption { at, .. }
            | E::HashWithoutRequirement { at }
            | E::UnsupportedHash { at, .. }
            | E::UrlOrPath { at }
            | E::Invalid { at, .. }
            | E::Duplicate { at, .. } => Some(at),
        }
    }
}

/// The file, line and text an error is reported at.
struct Cx<'a> {
    path: &'a str,
    line: usize,
    text: &'a str,
}

impl<'a> Cx<'a> {
    fn new(path: &'a str, line: usize, text: &'a str) -> Self {
        Cx { path, line, text }
    }

    fn at(&self) -> Location {
        let (path, line, text) = (self.path.to_owned(), self.line, quote(self.text));
        Location { path, line, text }
    }

    /// Makes an [`RequirementsError::Invalid`] about `what` from a reason.
    fn invalid(&self, what: &'static str) -> impl Fn(String) -> RequirementsError + '_ {
        move |reason| E::Invalid {
            at: self.at(),
            what,
            reason,
        }
    }
}

impl Requirements {
    /// Parses `text`, the content of the file at `path` in the package.
    pub fn parse(path: &str, text: &str) -> Result<Requirements, RequirementsError> {
        if text.len() > MAX_FILE_BYTES {
            let (path, size) = (path.to_owned(), text.len());
            return Err(E::FileTooLarge { path, size });
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut items: Vec<Requirement> = Vec::new();
        let mut require_hashes = false;
        let mut unmarked: HashMap<String, usize> = HashMap::new();
        for (line, content) in logical_lines(path, text)? {
            let cx = Cx::new(path, line, &content);
            if content.starts_with('-') {
                parse_option_line(&cx)?;
                require_hashes = true;
                continue;
            }
            if items.len() == MAX_REQUIREMENTS {
                return Err(E::TooManyRequirements { at: cx.at() });
            }
            let req = parse_requirement(&cx)?;
            if req.marker.is_none() {
                if let Some(&first) = unmarked.get(&req.normalized) {
                    let name = req.normalized;
                    return Err(E::Duplicate {
                        at: cx.at(),
                        name,
                        first,
                    });
                }
                unmarked.insert(req.normalized.clone(), line);
            }
            items.push(req);
        }
        require_hashes |= items.iter().any(|r| !r.hashes.is_empty());
        let path = path.to_owned();
        Ok(Requirements {
            path,
            items,
            require_hashes,
        })
    }

    /// Every requirement is an exact pin (true for an empty file too).
    pub fn all_pinned(&self) -> bool {
        self.items.iter().all(|r| r.pinned().is_some())
    }

    /// The canonical text: `--require-hashes` first if set, then one line per requirement.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        if self.require_hashes {
            out.push_str("--require-hashes\n");
        }
        for item in &self.items {
            out.push_str(&item.to_line());
            out.push('\n');
        }
        out
    }

    /// SHA-256 (lowercase hex) of [`Requirements::canonical`]: the key of what is to be installed.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The content before a comment: a `#` at the start or after a space or tab.
fn strip_comment(s: &str) -> &str {
    let b = s.as_bytes();
    let cut = (0..b.len()).find(|&i| b[i] == b'#' && (i == 0 || matches!(b[i - 1], b' ' | b'\t')));
    &s[..cut.unwrap_or(s.len())]
}

/// Joins continuations and drops comments: `(first line, content)` of each non-empty logical line.
fn logical_lines(path: &str, text: &str) -> Result<Vec<(usize, String)>, RequirementsError> {
    let mut joined_lines: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.split('\n').enumerate() {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        let cx = Cx::new(path, index + 1, physical);
        if physical.chars().any(|c| c.is_control() && c != '\t') {
            return Err(E::ControlCharacter { at: cx.at() });
        }
        if physical.trim_start_matches(is_blank).starts_with('#') {
            joined_lines.extend(pending.take());
            continue;
        }
        let (body, continues) = match physical.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (physical, false),
        };
        if continues && strip_comment(body).len() != body.len() {
            let reason = "it follows a comment, which pip would extend over the next line";
            return Err(cx.invalid("line continuation")(reason.into()));
        }
        let (start, mut joined) = pending.take().unwrap_or((cx.line, String::new()));
        joined.push_str(body);
        if joined.len() > MAX_LINE_BYTES {
            let at = Cx::new(path, start, &joined).at();
            return Err(E::LineTooLong { at });
        }
        if continues {
            pending = Some((start, joined));
        } else {
            joined_lines.push((start, joined));
        }
    }
    joined_lines.extend(pending);
    Ok(joined_lines
        .into_iter()
        .map(|(line, joined)| {
            (
                line,
                strip_comment(&joined).trim_matches(is_blank).to_owned(),
            )
        })
        .filter(|(_, content)| !content.is_empty())
        .collect())
}

/// Accepts `--require-hashes` alone and refuses every other option line.
fn parse_option_line(cx: &Cx) -> Result<(), RequirementsError> {
    let token = cx.text.split(is_blank).next().unwrap_or_default();
    let option = if token.starts_with("--") {
        token.split('=').next().unwrap_or_default()
    } else {
        // A short option's value may be attached: `-rfile`, `-egit+https://...`.
        &token[..token.char_indices().nth(2).map_or(token.len(), |(i, _)| i)]
    };
    if option == "--require-hashes" && cx.text != option {
        return Err(cx.invalid("option")(
            "--require-hashes takes no value".into(),
        ));
    }
    let (at, quoted) = (cx.at(), quote(option));
    Err(match option {
        "--require-hashes" => return Ok(()),
        "-e" | "--editable" => E::Editable { at },
        "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links" | "--trusted-host"
        | "--no-index" => E::IndexOption { at, option: quoted },
        "-r" | "--requirement" | "-c" | "--constraint" => E::NestedFile { at, option: quoted },
        "--hash" => E::HashWithoutRequirement { at },
        _ => E::UnsupportedOption { at, option: quoted },
    })
}

fn parse_requirement(cx: &Cx) -> Result<Requirement, RequirementsError> {
    let text = cx.text;
    if text.contains("://") || text.starts_with(['.', '/', '~']) {
        return Err(E::UrlOrPath { at: cx.at() });
    }
    // As in pip, the first token starting with `-` begins the per-requirement options.
    let tokens: Vec<&str> = text.split(is_blank).filter(|t| !t.is_empty()).collect();
    let split = tokens
        .iter()
        .position(|t| t.starts_with('-'))
        .unwrap_or(tokens.len());
    let requirement = tokens[..split].join(" ");
    let hashes = parse_hashes(cx, &tokens[split..])?;
    if requirement.contains(['@', '\\']) || requirement.contains(":/") {
        return Err(E::UrlOrPath { at: cx.at() });
    }
    let (head, marker) = match requirement.split_once(';') {
        Some((head, marker)) => {
            let marker = parse_marker(marker).map_err(cx.invalid("marker"))?;
            (head.trim_end(), Some(marker))
        }
        None => (requirement.as_str(), None),
    };
    let lower = head.to_ascii_lowercase();
    if ARCHIVES.iter().any(|suffix| lower.ends_with(suffix)) {
        return Err(E::UrlOrPath { at: cx.at() });
    }
    let name_len = head.find(|c: char| !is_name_char(c)).unwrap_or(head.len());
    let name = &head[..name_len];
    check_name(name).map_err(cx.invalid("project name"))?;
    let mut rest = head[name_len..].trim_start();
    let mut extras = Vec::new();
    if let Some(open) = rest.strip_prefix('[') {
        let invalid = cx.invalid("extras");
        let (inner, after) = open
            .split_once(']')
            .ok_or_else(|| invalid("missing ']'".into()))?;
        for extra in inner.split(',').map(str::trim) {
            check_name(extra).map_err(&invalid)?;
            extras.push(normalize(extra));
        }
        extras.sort();
        extras.dedup();
        rest = after.trim_start();
    }
    let specifier = parse_specifier(rest).map_err(cx.invalid("version specifier"))?;
    let (name, normalized, line) = (name.to_owned(), normalize(name), cx.line);
    Ok(Requirement {
        name,
        normalized,
        extras,
        specifier,
        marker,
        hashes,
        line,
    })
}

/// `--hash=sha256:HEX` and `--hash sha256:HEX`; any other option is refused.
fn parse_hashes(cx: &Cx, tokens: &[&str]) -> Result<Vec<String>, RequirementsError> {
    let malformed = cx.invalid("hash");
    let mut hashes = Vec::new();
    let mut tokens = tokens.iter();
    while let Some(&token) = tokens.next() {
        let value = match token.strip_prefix("--hash=") {
            Some(value) => value,
            None if token == "--hash" => tokens
                .next()
                .ok_or_else(|| malformed("--hash needs a value".into()))?,
            None => {
                let option = quote(token.split('=').next().unwrap_or_default());
                return Err(E::UnsupportedOption {
                    at: cx.at(),
                    option,
                });
            }
        };
        let (algorithm, hex) = value
            .split_once(':')
            .ok_or_else(|| malformed("expected sha256:<64 hex digits>".into()))?;
        if !algorithm.eq_ignore_ascii_case("sha256") {
            return Err(E::UnsupportedHash {
                at: cx.at(),
                algorithm: quote(algorithm),
            });
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("a sha256 digest is 64 hex digits".into()));
        }
        hashes.push(format!("sha256:{}", hex.to_ascii_lowercase()));
    }
    hashes.sort();
    hashes.dedup();
    Ok(hashes)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// PEP 508 names (and extras): `^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`, case-insensitive.
fn check_name(name: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        Err("a name is required".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Err(format!("longer than {MAX_NAME_LEN} characters"))
    } else if !name.chars().all(is_name_char)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
    {
        Err(format!(
            "\"{}\" is not letters, digits, '.', '_' and '-' starting and ending with a letter or digit",
            quote(name)
        ))
    } else {
        Ok(())
    }
}

/// PEP 503: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if !matches!(c, '-' | '_' | '.') {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

/// Comma-separated `op version` clauses, optionally in parentheses; canonical text out.
fn parse_specifier(text: &str) -> Result<String, String> {
    let text = match text.strip_prefix('(') {
        Some(inner) => inner.strip_suffix(')').ok_or("missing ')'")?.trim(),
        None => text,
    };
    if text.is_empty() {
        return Ok(String::new());
    }
    let mut clauses = Vec::new();
    for clause in text.split(',').map(str::trim) {
        if clause.is_empty() {
            return Err("empty clause between commas".to_owned());
        }
        let Some(op) = OPERATORS.into_iter().find(|op| clause.starts_with(op)) else {
            return Err(format!(
                "\"{}\" does not start with one of === == != ~= <= >= < >",
                quote(clause)
            ));
        };
        let version = clause[op.len()..].trim_start();
        if version.is_empty() {
            return Err(format!("missing version after {op}"));
        }
        if version.len() > MAX_VERSION_LEN {
            return Err(format!("version longer than {MAX_VERSION_LEN} characters"));
        }
        let valid = if op == "===" {
            version.bytes().all(|b| b.is_ascii_graphic() && b != b';')
        } else {
            let stars = version.matches('*').count();
            version.starts_with(|c: char| c.is_ascii_alphanumeric())
                && version
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".+!*_-".contains(c))
                && (stars == 0
                    || (stars == 1 && version.ends_with(".*") && matches!(op, "==" | "!=")))
                && (op != "~=" || version.contains('.'))
        };
        if !valid {
            return Err(format!(
                "bad version \"{}\" (PEP 440; '*' only as a trailing '.*' after == or !=; \
                 ~= needs two release segments)",
                quote(version)
            ));
        }
        clauses.push(format!("{op}{version}"));
    }
    Ok(clauses.join(","))
}

/// A lexical check of a PEP 508 marker: known words, operators, parentheses, quoted strings.
fn parse_marker(text: &str) -> Result<String, String> {
    let marker = text.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
    if marker.is_empty() {
        return Err("empty marker after ';'".to_owned());
    }
    if marker.len() > MAX_MARKER_LEN {
        return Err(format!("longer than {MAX_MARKER_LEN} characters"));
    }
    let (bytes, mut i, mut depth) = (marker.as_bytes(), 0, 0usize);
    let run = |from: usize, keep: fn(u8) -> bool| {
        (from..bytes.len())
            .find(|&j| !keep(bytes[j]))
            .unwrap_or(bytes.len())
    };
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'(' => (depth, i) = (depth + 1, i + 1),
            b')' => (depth, i) = (depth.checked_sub(1).ok_or("unbalanced parentheses")?, i + 1),
            q @ (b'\'' | b'"') => {
                let close = marker[i + 1..].find(q as char).ok_or("unbalanced quotes")?;
                let value = &marker[i + 1..i + 1 + close];
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || " ._-<>=!~()".contains(c))
                {
                    return Err(format!(
                        "string '{}' has a character that is not accepted",
                        quote(value)
                    ));
                }
                i += close + 2;
            }
            b'<' | b'>' | b'=' | b'!' | b'~' => {
                let end = run(i, |b| b"<>=!~".contains(&b));
                if !OPERATORS.contains(&&marker[i..end]) {
                    return Err(format!("unknown operator \"{}\"", &marker[i..end]));
                }
                i = end;
            }
            _ => {
                let end = run(i, |b| b.is_ascii_alphanumeric() || b == b'_');
                let word =
                    &marker[i..end.max(i + marker[i..].chars().next().map_or(1, char::len_utf8))];
                if !MARKER_WORDS.split_ascii_whitespace().any(|w| w == word) {
                    return Err(format!(
                        "\"{}\" is not a marker variable, keyword or quoted string",
                        quote(word)
                    ));
                }
                i = end;
            }
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_owned());
    }
    Ok(marker)
}

/// At most 80 characters of `text`, with `"`, `\` and anything but printable ASCII escaped.
fn quote(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        match c {
            _ if i == MAX_QUOTED_CHARS => {
                out.push_str("...");
                break;
            }
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn parse(text: &str) -> Requirements {
        Requirements::parse("requirements.txt", text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn refused(text: &str) -> RequirementsError {
        Requirements::parse("requirements.txt", text).expect_err(text)
    }

    /// Refused at `line`, with `keyword` in the message.
    fn assert_refused(text: &str, line: usize, keyword: &str) {
        let message = refused(text).to_string();
        let ok = message.starts_with(&format!("requirements.txt line {line}: \""));
        assert!(ok && message.contains(keyword), "{text:?}: {message}");
    }

    /// Each `"text => keyword"` case refused on line 3 (after a comment and a blank line).
    fn assert_all_refused(cases: &[&str]) {
        for case in cases {
            let (text, keyword) = case.rsplit_once(" => ").expect("a case");
            assert_refused(&format!("# c\n\n{}\n", text.replace("{A}", A)), 3, keyword);
        }
    }

    fn lines(r: &Requirements) -> Vec<(usize, String)> {
        r.items.iter().map(|i| (i.line, i.to_line())).collect()
    }

    #[test]
    fn full_form() {
        let r = parse(&format!(
            "Requests[Socks, security,socks] >= 2.0 , < 3 ;  python_version >=  \"3.8\" \
             --hash=sha256:{B} --hash sha256:{A}\n"
        ));
        let (req, b) = (&r.items[0], B.to_lowercase());
        assert!(r.require_hashes);
        assert_eq!(
            (&*req.name, &*req.normalized, req.line),
            ("Requests", "requests", 1)
        );
        assert_eq!(req.extras, ["security", "socks"]);
        assert_eq!(req.specifier, ">=2.0,<3");
        assert_eq!(req.marker.as_deref(), Some("python_version >= \"3.8\""));
        assert_eq!(req.hashes, [format!("sha256:{A}"), format!("sha256:{b}")]);
        let want = format!(
            "Requests[security,socks]>=2.0,<3 ; python_version >= \"3.8\" \
             --hash=sha256:{A} --hash=sha256:{b}"
        );
        assert_eq!(req.to_line(), want);
    }

    #[test]
    fn names_operators_and_versions() {
        let text = "Foo_Bar..baz\nx\nA.b-C_d==1.0.post1+local.7\nz===weird!v\nw~=1.4.5\n\
                    v!=1.2.*\nu==2.*\nt<1,>0,<=3,>=2\nfoo (>=1.0, <2)\n";
        let r = parse(text);
        let names: Vec<_> = r.items.iter().map(|i| i.normalized.as_str()).collect();
        assert_eq!(names[..4], ["foo-bar-baz", "x", "a-b-c-d", "z"]);
        let specs: Vec<_> = r.items.iter().map(|i| i.specifier.as_str()).collect();
        assert_eq!(specs[..4], ["", "", "==1.0.post1+local.7", "===weird!v"]);
        assert_eq!(
            specs[4..],
            ["~=1.4.5", "!=1.2.*", "==2.*", "<1,>0,<=3,>=2", ">=1.0,<2"]
        );
        assert!(!r.require_hashes);
        let r = parse("bar[x] (==1) ; os_name == 'nt'\n");
        assert_eq!(r.items[0].to_line(), "bar[x]==1 ; os_name == 'nt'");
        assert_eq!(parse(&format!("{}==1", "n".repeat(100))).items.len(), 1);
    }

    #[test]
    fn comments_blank_lines_crlf_and_bom() {
        let text = "\u{feff}# header\r\n\r\n   # indented\r\nfoo==1 # trailing\r\n\
                    \tbar>=2\t#x\r\nbaz#no==1\n";
        assert_refused(text, 6, "does not start with");
        // As in pip, " #" starts a comment even inside a quoted marker value.
        let cut = text.replace("baz#no==1", "baz ; os_name == \"a #b\"");
        assert_refused(&cut, 6, "unbalanced quotes");
        let r = parse(&text.replace("baz#no==1", "baz ; os_name == \"a\""));
        let want = [(4, "foo==1"), (5, "bar>=2"), (6, "baz ; os_name == \"a\"")];
        assert_eq!(lines(&r), want.map(|(l, s)| (l, s.to_owned())));
    }

    #[test]
    fn continuation_lines() {
        let r = parse(&format!(
            "# c\nfoo \\\n  >=1.0 \\\n  --hash=sha256:{A}\nbar\\\n==2\nqux \\\n# ends it\nlast==1 \\"
        ));
        let first = format!("foo>=1.0 --hash=sha256:{A}");
        let want = [
            (2, first),
            (5, "bar==2".into()),
            (7, "qux".into()),
            (9, "last==1".into()),
        ];
        assert_eq!(lines(&r), want);
        assert!(r.require_hashes);
        let ambiguous = "invalid line continuation: it follows a comment";
        assert_refused("foo # comment \\\nbar", 1, ambiguous);
    }

    #[test]
    fn require_hashes_option() {
        let r = parse(&format!("--require-hashes\nfoo==1 --hash=sha256:{A}\n"));
        assert_eq!(
            r.canonical(),
            format!("--require-hashes\nfoo==1 --hash=sha256:{A}\n")
        );
        let r = parse("  --require-hashes  # pip's hash-checking mode\n");
        assert!(r.require_hashes && r.items.is_empty());
        assert_refused("--require-hashes=yes", 1, "takes no value");
        assert_refused("--require-hashes foo", 1, "takes no value");
    }

    #[test]
    fn markers() {
        let r = parse(
            "foo==1 ; sys_platform == 'win32'\nfoo==2 ; sys_platform != 'win32'\nfoo>=1\n\
             bar ; (python_version<'3.9' and extra=='x') or 'linux' in  sys_platform\n\
             baz ; platform_machine not in \"x86_64 arm64\" and implementation_name == 'cpython'\n",
        );
        assert_eq!(r.items.len(), 5);
        let want = "(python_version<'3.9' and extra=='x') or 'linux' in sys_platform";
        assert_eq!(r.items[3].marker.as_deref(), Some(want));
        assert_all_refused(&[
            "foo ; => invalid marker: empty marker",
            "foo==1;2 => \"2\" is not a marker variable",
            "foo ; os.name == 'nt' => \"os\" is not a marker variable",
            "foo ; os_name == 'nt' | x => \"|\" is not a marker variable",
            "foo ; os_name => 'nt' => unknown operator \"=>\"",
            "foo ; os_name == 'n;t' => string 'n;t' has a character",
            "foo ; python_version < '3 => unbalanced quotes",
            "foo ; (os_name == 'nt' => unbalanced parentheses",
            "foo ; os_name == 'nt') => unbalanced parentheses",
        ]);
    }

    #[test]
    fn long_names_versions_and_markers() {
        let long_marker = format!("\nfoo ; python_version == '{}'", "3".repeat(200));
        assert_refused(&long_marker, 2, "invalid marker: longer than 200");
        assert_refused(&"n".repeat(101), 1, "invalid project name: longer than 100");
        let long_version = format!("foo=={}", "1".repeat(101));
        assert_refused(&long_version, 1, "version longer than 100");
        assert_refused(
            &format!("foo[{}]", "n".repeat(101)),
            1,
            "extras: longer than 100",
        );
    }

    #[test]
    fn pinned_and_all_pinned() {
        let r = parse("a==1.0\nb===1.0-weird\nc==1.*\nd>=1\ne==1,!=2\nf\ng~=1.0\n");
        let pins: Vec<_> = r.items.iter().map(Requirement::pinned).collect();
        assert_eq!(
            pins,
            [Some("1.0"), Some("1.0-weird"), None, None, None, None, None]
        );
        assert!(!r.all_pinned());
        assert!(parse("a==1\nb[x]===2 ; os_name=='nt'\n").all_pinned());
        assert!(parse("").all_pinned());
        assert!(parse("# only comments\n\n").all_pinned());
    }

    #[test]
    fn canonical_and_digest_are_stable() {
        let b = B.to_lowercase();
        let one = parse(&format!(
            "# deps\r\nFoo [B,a]>= 1.0 ,<2;python_version>='3.8'   --hash sha256:{B} \
             --hash=sha256:{A}\r\n\r\nbar==2\r\n"
        ));
        let two = parse(&format!(
            "Foo[a,b,a]>=1.0,<2 ; python_version>='3.8' \\\n  --hash=sha256:{A} \\\n  \
             --hash=sha256:{b}  # pin\nbar == 2\n"
        ));
        let want = format!(
            "--require-hashes\nFoo[a,b]>=1.0,<2 ; python_version>='3.8' --hash=sha256:{A} \
             --hash=sha256:{b}\nbar==2\n"
        );
        assert_eq!((one.canonical(), two.canonical()), (want.clone(), want));
        assert_eq!(one.digest(), two.digest());
        assert_eq!(one.digest(), hex::encode(Sha256::digest(one.canonical())));
        assert_eq!(parse(&one.canonical()).canonical(), one.canonical());
        assert_ne!(parse("bar==2\n").digest(), parse("bar==3\n").digest());
        assert_ne!(parse("a\nb\n").digest(), parse("b\na\n").digest());
        let hashed = parse("--require-hashes\na==1\n");
        assert_ne!(parse("a==1\n").digest(), hashed.digest());
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(parse("").digest(), empty);
    }

    #[test]
    fn refused_options() {
        assert_all_refused(&[
            "-i https://evil.example/simple => option -i is not accepted: the index is the operator's choice, not the skill's",
            "-r other.txt => option -r is not accepted: nested requirement files are not supported",
            "-e git+https://x.org/x.git#egg=x => editable installs (-e) are not accepted",
            "--editable . => editable installs",
            "-egit+https://x/y => the verifier installs from the operator's index only",
            "--index-url=https://x => option --index-url is not accepted: the index",
            "--extra-index-url https://x => option --extra-index-url is not accepted",
            "-f ./wheels => option -f is not accepted: the index",
            "--find-links x => option --find-links is not accepted: the index",
            "--trusted-host x => option --trusted-host is not accepted: the index",
            "--no-index => option --no-index is not accepted: the index",
            "-rother.txt => option -r is not accepted: nested",
            "--requirement x => option --requirement is not accepted: nested",
            "-c c.txt => option -c is not accepted: nested",
            "--constraint=c.txt => option --constraint is not accepted: nested",
            "--no-binary :all: => option --no-binary is not accepted",
            "--only-binary=:all: => option --only-binary is not accepted",
            "--prefer-binary => option --prefer-binary is not accepted",
            "--pre => option --pre is not accepted",
            "-Z => option -Z is not accepted",
            "--hash=sha256:{A} => --hash is only accepted after a requirement",
            "foo==1 --hash=md5:abc => only sha256 hashes are accepted, not md5",
            "foo==1 --hash sha512:abc => only sha256 hashes are accepted",
            "foo==1 --hash=sha256:abc => invalid hash: a sha256 digest is 64 hex",
            "foo==1 --hash=sha256:{A}0 => 64 hex digits",
            "foo==1 --hash => --hash needs a value",
            "foo==1 --hash={A} => expected sha256:",
            "foo==1 --install-option=-x => option --install-option is not accepted",
            "foo==1 --config-settings x=y => option --config-settings is not accepted",
        ]);
    }

    #[test]
    fn refused_urls_and_paths() {
        let paths = [
            "foo @ https://example.com/foo-1.0.whl",
            "foo@file:///tmp/foo",
            "foo @ git+ssh",
            "git+https://github.com/x/y",
            "https://example.com/pkg.tar.gz",
            "./local/pkg",
            "../pkg",
            ".",
            "/abs/pkg",
            "~/pkg",
            "foo-1.0-py3-none-any.whl",
            "pkg-1.0.tar.gz",
            "pkg.ZIP",
            "pkg.zip ; os_name == 'nt'",
            "C:\\pkgs\\foo",
            "c:/pkgs/foo",
        ];
        let keyword = "URLs and local paths are not accepted: the verifier installs from the \
                       operator's index only";
        for text in paths {
            assert_refused(&format!("ok==1\n{text}\n"), 2, keyword);
        }
    }

    #[test]
    fn refused_names_extras_specifiers() {
        assert_all_refused(&[
            "==1.0 => invalid project name: a name is required",
            "[x] => invalid project name",
            "_foo => invalid project name",
            "foo- => \"foo-\" is not letters, digits",
            "foo. => invalid project name",
            "f\u{f6}o => \"\\u{f6}o\" does not start with",
            "foo[bar => missing ']'",
            "foo[] => invalid extras: a name is required",
            "foo[a,,b] => invalid extras",
            "foo[-x] => invalid extras",
            "foo 1.0 => invalid version specifier",
            "foo bar => \"bar\" does not start with one of",
            "foo>=1.0, => empty clause",
            "foo== => missing version after ==",
            "foo=1 => does not start with one of",
            "foo>=1.* => '*' only as a trailing '.*'",
            "foo==1.*.2 => bad version",
            "foo==.1 => bad version",
            "foo~=1 .0 => bad version",
            "foo~=1 => ~= needs two release segments",
            "foo (>=1 => missing ')'",
        ]);
    }

    #[test]
    fn refused_duplicates() {
        assert_refused(
            "fo-o==1\nbar\nFo_O>=2\n",
            3,
            "fo-o is listed twice (lines 1 and 3)",
        );
        assert_refused(
            "Foo==1\nbar\n# c\nfoo[x]>=2\n",
            4,
            "foo is listed twice (lines 1 and 4)",
        );
        assert_eq!(parse("foo==1 ; os_name=='nt'\nfoo==2\n").items.len(), 2);
    }

    #[test]
    fn refused_control_characters() {
        assert_refused("ok\nfoo\0==1\n", 2, "control characters are not accepted");
        assert_refused("foo\rbar\n", 1, "control characters");
        assert_refused("# comment \u{1b}[31m\n", 1, "control characters");
        assert_refused("foo\u{7f}\n", 1, "\"foo\\u{7f}\"");
        assert!(parse("foo==1\t;\tos_name == 'nt'\n").items[0]
            .marker
            .is_some());
    }

    #[test]
    fn quoting_truncates_and_escapes() {
        let error = refused(&format!("\nfoo ({}\n", "x".repeat(200)));
        let at = error.location().expect("located");
        assert_eq!(
            (at.line, &*at.text),
            (2, &*format!("foo ({}...", "x".repeat(75)))
        );
        let message = refused("foo\u{202e}bar \"q\"\n").to_string();
        assert!(message.contains(r#""foo\u{202e}bar \"q\"""#), "{message}");
        assert!(!message.contains('\u{202e}'));
    }

    #[test]
    fn limits() {
        let ok: String = (0..500).map(|i| format!("p{i}==1\n")).collect();
        assert_eq!(parse(&ok).items.len(), 500);
        assert_refused(
            &format!("{ok}# c\np500==1\n"),
            502,
            "more than 500 requirements",
        );
        let padded = format!("{ok}{}", "#".repeat(MAX_FILE_BYTES - ok.len()));
        assert_eq!(parse(&padded).items.len(), 500);
        let error = refused(&format!("{padded}#"));
        assert_eq!(error.location(), None);
        let want = "requirements.txt: the file is 65537 bytes; at most 65536 are accepted";
        assert_eq!(error.to_string(), want);
        assert_eq!(
            parse(&format!("foo # {}\n", "x".repeat(4090))).items.len(),
            1
        );
        assert_refused(
            &format!("\nfoo # {}\n", "x".repeat(4091)),
            2,
            "exceeds 4096 bytes",
        );
        let continued = format!("ok\nfoo \\\n{}\\\n==1", " ".repeat(4090));
        assert_refused(&continued, 2, "exceeds 4096");
    }
}
