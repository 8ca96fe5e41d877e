//! `SKILL.md` under the Agent Skills specification.
//!
//! The frontmatter is the text between a first line `---` and the next line `---` (a `\r`
//! before the newline is allowed on both). It is parsed with `serde-saphyr` with a tight
//! budget: duplicate keys are an error, and alias replay is bounded (10,000 replayed events,
//! depth 16, 1,000 aliases and anchors), so a "billion laughs" document fails quickly
//! instead of expanding.
//!
//! The checks are the union of the two reference validators, agentskills' `skills-ref`
//! (`validator.py`) and Anthropic's `quick_validate.py`: where either refuses, we refuse.
//! Deliberate differences are listed in `docs/packages.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Manifest, PackageError};

/// The top-level keys the specification allows.
pub const ALLOWED_FIELDS: [&str; 6] = [
    "allowed-tools",
    "compatibility",
    "description",
    "license",
    "metadata",
    "name",
];

const MAX_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 1024;
const MAX_COMPATIBILITY_CHARS: usize = 500;

/// A YAML node with its type, for type checks (values of scalars are re-read as text).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool,
    Number,
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool => "a boolean",
            Node::Number => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Node::Bool | Node::Number | Node::Str(_))
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Bool)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Number)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        Ok(Node::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry()? {
            out.push((k, v));
        }
        Ok(Node::Map(out))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// The second pass: scalar values as the text the author wrote (`30` stays `"30"`, `1.0`
/// stays `"1.0"`), as `skills-ref`'s strictyaml reads them.
#[derive(serde::Deserialize)]
struct TextFields {
    license: Option<String>,
    metadata: Option<BTreeMap<String, Option<String>>>,
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
            max_replay_stack_depth: 16,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    }
}

fn yaml_error(e: serde_saphyr::Error) -> PackageError {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim();
    PackageError::InvalidYaml {
        detail: first.chars().take(300).collect(),
    }
}

/// Splits `SKILL.md` into its frontmatter text.
pub fn frontmatter(text: &str) -> Result<&str, PackageError> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().ok_or(PackageError::MissingFrontmatter)?;
    if strip_eol(first) != "---" {
        return Err(PackageError::MissingFrontmatter);
    }
    let start = first.len();
    let mut offset = start;
    for line in lines {
        if strip_eol(line) == "---" {
            return Ok(&text[start..offset]);
        }
        offset += line.len();
    }
    Err(PackageError::UnclosedFrontmatter)
}

fn strip_eol(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

fn shorten(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Parses and validates `SKILL.md`. `folder` is the archive's top-level folder, which the
/// name must equal when there is one.
pub fn parse_skill_md(bytes: &[u8], folder: Option<&str>) -> Result<Manifest, PackageError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PackageError::SkillMdNotUtf8)?;
    parse_frontmatter(frontmatter(text)?, folder)
}

/// Validates frontmatter text (without the `---` lines).
pub fn parse_frontmatter(yaml: &str, folder: Option<&str>) -> Result<Manifest, PackageError> {
    let root: Option<Node> =
        serde_saphyr::from_str_with_options(yaml, yaml_options()).map_err(yaml_error)?;
    let entries = match root {
        Some(Node::Map(entries)) => entries,
        // An empty frontmatter has no fields at all.
        None | Some(Node::Null) => Vec::new(),
        Some(_) => return Err(PackageError::FrontmatterNotMapping),
    };
    let mut fields: BTreeMap<String, Node> = BTreeMap::new();
    for (key, value) in entries {
        let key = match key {
            Node::Str(k) => k,
            other => {
                return Err(PackageError::UnknownField {
                    field: format!("({})", other.type_name()),
                })
            }
        };
        if !ALLOWED_FIELDS.contains(&key.as_str()) {
            return Err(PackageError::UnknownField {
                field: shorten(&key),
            });
        }
        fields.insert(key, value);
    }
    let name = match fields.get("name") {
        None => return Err(PackageError::MissingField { field: "name" }),
        Some(Node::Str(s)) => s.trim().to_string(),
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "name".into(),
                expected: "a string",
            })
        }
    };
    let description = match fields.get("description") {
        None => {
            return Err(PackageError::MissingField {
                field: "description",
            })
        }
        Some(Node::Str(s)) => s.trim().to_string(),
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "description".into(),
                expected: "a string",
            })
        }
    };
    validate_name(&name)?;
    if let Some(folder) = folder {
        if folder != name {
            return Err(PackageError::NameMismatch {
                name,
                folder: shorten(folder),
            });
        }
    }
    validate_description(&description)?;
    let compatibility = match fields.get("compatibility") {
        None => None,
        Some(Node::Str(s)) => {
            if s.is_empty() {
                return Err(PackageError::InvalidCompatibility {
                    reason: "must not be empty",
                });
            }
            if s.chars().count() > MAX_COMPATIBILITY_CHARS {
                return Err(PackageError::InvalidCompatibility {
                    reason: "longer than 500 characters",
                });
            }
            Some(s.clone())
        }
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "compatibility".into(),
                expected: "a string",
            })
        }
    };
    let allowed_tools = match fields.get("allowed-tools") {
        None | Some(Node::Null) => None,
        Some(Node::Str(s)) => Some(s.clone()),
        Some(Node::Seq(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Node::Str(s) => out.push(s.clone()),
                    _ => {
                        return Err(PackageError::FieldType {
                            field: "allowed-tools".into(),
                            expected: "a string or a list of strings",
                        })
                    }
                }
            }
            Some(out.join(" "))
        }
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "allowed-tools".into(),
                expected: "a string or a list of strings",
            })
        }
    };
    match fields.get("license") {
        None | Some(Node::Null) => {}
        Some(n) if n.is_scalar() => {}
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "license".into(),
                expected: "a string",
            })
        }
    }
    match fields.get("metadata") {
        None | Some(Node::Null) => {}
        Some(Node::Map(entries)) => {
            for (k, v) in entries {
                let key = match k {
                    Node::Str(k) => k.clone(),
                    other => format!("({})", other.type_name()),
                };
                if !(v.is_scalar() || *v == Node::Null) {
                    return Err(PackageError::InvalidMetadata {
                        key: shorten(&key),
                        reason: "values must be strings",
                    });
                }
            }
        }
        Some(_) => {
            return Err(PackageError::FieldType {
                field: "metadata".into(),
                expected: "a mapping of strings to strings",
            })
        }
    }
    // Types are right; now read scalars back as the text that was written.
    let text: TextFields =
        serde_saphyr::from_str_with_options(yaml, yaml_options()).map_err(yaml_error)?;
    let metadata = text
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    Ok(Manifest {
        name,
        description,
        license: text.license,
        compatibility,
        metadata,
        allowed_tools,
    })
}

fn validate_name(name: &str) -> Result<(), PackageError> {
    let bad = |reason| PackageError::InvalidSkillName {
        name: shorten(name),
        reason,
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(bad("longer than 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            "only lowercase letters a-z, digits and hyphens are allowed",
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("must not start or end with a hyphen"));
    }
    if name.contains("--") {
        return Err(bad("must not contain consecutive hyphens"));
    }
    Ok(())
}

fn validate_description(description: &str) -> Result<(), PackageError> {
    if description.is_empty() {
        return Err(PackageError::InvalidDescription {
            reason: "must not be empty",
        });
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(PackageError::InvalidDescription {
            reason: "longer than 1024 characters",
        });
    }
    if description.contains('<') || description.contains('>') {
        return Err(PackageError::InvalidDescription {
            reason: "must not contain angle brackets (< or >)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Manifest, PackageError> {
        parse_frontmatter(yaml, None)
    }

    #[test]
    fn parses_a_full_manifest_keeping_scalar_text() {
        let m = parse(
            "name: my-skill\ndescription: Does things.\nlicense: MIT\ncompatibility: linux\n\
             allowed-tools: [Read, Bash]\nmetadata:\n  verify-timeout: 30\n  ratio: 1.0\n  flag: true\n",
        )
        .unwrap();
        assert_eq!(m.name, "my-skill");
        assert_eq!(m.allowed_tools.as_deref(), Some("Read Bash"));
        assert_eq!(m.metadata["verify-timeout"], "30");
        assert_eq!(m.metadata["ratio"], "1.0");
        assert_eq!(m.metadata["flag"], "true");
    }

    #[test]
    fn frontmatter_needs_opening_and_closing_lines() {
        assert!(matches!(
            frontmatter("name: x\n"),
            Err(PackageError::MissingFrontmatter)
        ));
        assert!(matches!(
            frontmatter("---\nname: x\n"),
            Err(PackageError::UnclosedFrontmatter)
        ));
        assert_eq!(
            frontmatter("---\r\nname: x\r\n---\r\nbody").unwrap(),
            "name: x\r\n"
        );
        // `---` inside a value is not a delimiter (skills-ref's split("---") differs here).
        assert_eq!(frontmatter("---\na: b---c\n---\n").unwrap(), "a: b---c\n");
    }

    #[test]
    fn refuses_unknown_and_missing_fields_and_bad_names() {
        assert!(matches!(
            parse("name: a\ndescription: d\nversion: 1\n"),
            Err(PackageError::UnknownField { .. })
        ));
        assert!(matches!(
            parse("description: d\n"),
            Err(PackageError::MissingField { field: "name" })
        ));
        assert!(matches!(
            parse("name: a\n"),
            Err(PackageError::MissingField {
                field: "description"
            })
        ));
        for bad in ["My-Skill", "-a", "a-", "a--b", "a_b", "ünï"] {
            assert!(
                matches!(
                    parse(&format!("name: {bad}\ndescription: d\n")),
                    Err(PackageError::InvalidSkillName { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&format!("name: {}\ndescription: d\n", "a".repeat(65))),
            Err(PackageError::InvalidSkillName { .. })
        ));
        assert!(parse(&format!("name: {}\ndescription: d\n", "a".repeat(64))).is_ok());
        assert!(matches!(
            parse("name: 30\ndescription: d\n"),
            Err(PackageError::FieldType { .. })
        ));
    }

    #[test]
    fn refuses_bad_descriptions_and_compatibility() {
        assert!(matches!(
            parse("name: a\ndescription: '  '\n"),
            Err(PackageError::InvalidDescription { .. })
        ));
        assert!(matches!(
            parse("name: a\ndescription: use <b>\n"),
            Err(PackageError::InvalidDescription { .. })
        ));
        assert!(matches!(
            parse(&format!("name: a\ndescription: {}\n", "d".repeat(1025))),
            Err(PackageError::InvalidDescription { .. })
        ));
        assert!(matches!(
            parse("name: a\ndescription: d\ncompatibility: ''\n"),
            Err(PackageError::InvalidCompatibility { .. })
        ));
        assert!(matches!(
            parse(&format!(
                "name: a\ndescription: d\ncompatibility: {}\n",
                "c".repeat(501)
            )),
            Err(PackageError::InvalidCompatibility { .. })
        ));
        assert!(matches!(
            parse("name: a\ndescription: d\nmetadata:\n  k: [1]\n"),
            Err(PackageError::InvalidMetadata { .. })
        ));
    }

    #[test]
    fn bounds_alias_expansion_and_refuses_duplicate_keys() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 10].join(", ")
            ));
        }
        bomb.push_str("name: a\ndescription: d\n");
        let started = std::time::Instant::now();
        assert!(matches!(
            parse(&bomb),
            Err(PackageError::InvalidYaml { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(matches!(
            parse("name: a\nname: b\ndescription: d\n"),
            Err(PackageError::InvalidYaml { .. })
        ));
        assert!(matches!(
            parse("- a\n"),
            Err(PackageError::FrontmatterNotMapping)
        ));
    }
}
